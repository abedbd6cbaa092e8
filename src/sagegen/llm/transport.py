"""The LLM client's HTTP transport: aiohttp's keep-alive pool, plus the one guard it lacks.

Why aiohttp, and not the hand-written ``http1`` it replaces: measured side by side against the same
simulated server and bodies (bench/bench_transport.py), it costs the same client CPU per call at
256 in flight or less, is maintained by others, and ``http1`` had a data-corruption bug: the bytes
left in h11's buffer after a complete response (a server or proxy that sends one response twice)
stayed with the connection when it went back to the pool, and were read as the next request's
reply. (httpx's pool cost ~20 ms per call at 256 in flight; see ``openai_backend``.)

What a caller gets (``Transport.request`` → ``Response``; the caller owns retries, backoff,
replicas and the error texts):

- **Pool**: one ``aiohttp.ClientSession`` per event loop, opened by the first request in that loop
  and closed when the loop ends (``asyncio.run`` closes async generators; so does pytest's runner)
  or on ``aclose()``. No limit on connections: the caller bounds the calls in flight. An idle
  connection is dropped after ``keepalive_expiry`` seconds, below uvicorn's 5 s (vLLM, SGLang), so
  we never send on one the server is closing.
- **Never a stale reply**: a connection that holds anything beyond its response, whether it came
  in the same read (aiohttp closes it on release) or arrived while it sat idle in the pool (a
  second copy of a response: aiohttp 3.14 would hand it out and the next request would read that
  copy as its own), is closed, never reused. Bytes too few to make a response head are not
  seen while idle; the next response then fails to parse and the caller retries: a wrong reply
  is never returned.
- **Compression**: ``Accept-Encoding: gzip, deflate`` (plus ``br``/``zstd`` where their decoder is
  installed) is sent, and a coded body is decoded; a body that fails to decode is a connection error.
- **TLS**: verified against ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set (a private CA), else
  certifi's roots where certifi is installed, else the system's; the context is built once.
- **Proxies**: ``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``ALL_PROXY`` and ``NO_PROXY`` from the
  environment, read once per origin (aiohttp's own ``trust_env`` reads them, and ``~/.netrc``, on
  two worker threads per request); credentials in the proxy URL go out as ``Proxy-Authorization``.
- **Errors**: refused, reset, closed early, a body cut short, broken HTTP or a body that does not
  decode: ``HTTPConnectionError`` (worth a retry, elsewhere if there is an elsewhere). An untrusted
  certificate: the ``ssl.SSLCertVerificationError`` itself (the same certificate fails every retry).
  A request that is not valid HTTP (a header with a newline, ...): ``ValueError``. Timeouts are the
  caller's (one ``asyncio.timeout`` around the call): a call cancelled mid-response closes its
  connection, so the rest of that response is never read as another call's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
import urllib.request
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

#: Idle keep-alive connections are dropped after this long (see the module doc).
KEEPALIVE_EXPIRY = 4.0


class HTTPConnectionError(Exception):
    """The connection failed: refused, reset, closed by the server before its response was complete,
    or the server broke HTTP/1.1. Worth a retry, elsewhere if there is an elsewhere."""


@dataclass(frozen=True)
class Response:
    status: int
    #: Read by name, case-insensitively: ``headers.get("retry-after")``.
    headers: Mapping[str, str]
    #: The body, decoded from its ``Content-Encoding``.
    body: bytes


class _Connector(aiohttp.TCPConnector):
    """aiohttp's connector, except that a pooled connection which received anything while idle is
    closed instead of handed out (see the module doc; tests/llm/test_transport.py drives both cases)."""

    #: Pooled connections closed by that check (for tests and curiosity).
    stale_dropped = 0

    async def _get(self, *args: Any, **kwargs: Any) -> Any:  # aiohttp's pool lookup (private, 3.13+)
        while True:
            conn = await super()._get(*args, **kwargs)
            if conn is None:
                return None
            proto = conn.protocol
            # ``should_close``: a queued response, a parse error, an unfinished body, "close" said.
            if proto is not None and not proto.should_close:
                return conn
            self.stale_dropped += 1
            conn.close()


@dataclass(frozen=True)
class _Target:
    url: URL
    proxy: URL | None
    #: ``Proxy-Authorization`` from the proxy URL's credentials: on the CONNECT for an https target,
    #: on the request itself for an http one (aiohttp sends ``proxy_headers`` only on a CONNECT).
    proxy_auth: dict[str, str] | None
    tls: bool


class Transport:
    """HTTP/1.1 requests over pooled keep-alive connections; one per client object, any event loop."""

    def __init__(self, *, keepalive_expiry: float = KEEPALIVE_EXPIRY) -> None:
        self.keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._connector: _Connector | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closer: AsyncGenerator[None, None] | None = None  # closes the session when its loop ends
        self._ssl: ssl.SSLContext | None = None
        self._targets: dict[str, _Target] = {}  # per URL: parsed once, its proxy looked up once

    @property
    def stale_dropped(self) -> int:
        """Pooled connections of the current loop closed because bytes arrived while they were idle."""
        return self._connector.stale_dropped if self._connector is not None else 0

    async def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Send one request and return the whole response; see the module doc for what it raises."""
        loop = asyncio.get_running_loop()
        session = self._session if self._loop is loop else await self._open(loop)
        assert session is not None
        target = self._targets.get(url) or self._target(url)
        proxy_headers = None
        if target.proxy_auth is not None:
            if target.tls:
                proxy_headers = target.proxy_auth
            else:
                headers = {**headers, **target.proxy_auth}
        try:
            resp = await session.request(
                method,
                target.url,
                headers=headers,
                data=body,
                proxy=target.proxy,
                proxy_headers=proxy_headers,
                ssl=self._tls() if target.tls else True,
            )
            try:
                data = await resp.read()
            finally:
                resp.release()  # a body not read to its end (cancelled) closes the connection
        except aiohttp.ClientConnectorCertificateError as e:
            cert_error = e.certificate_error
            if isinstance(cert_error, ssl.SSLCertVerificationError):
                raise cert_error from None
            raise HTTPConnectionError(f"TLS: {cert_error}") from None
        except aiohttp.InvalidURL as e:
            raise ValueError(f"invalid URL: {e}") from None
        except aiohttp.ClientResponseError as e:  # a status line or head that is not HTTP
            raise HTTPConnectionError(f"the server broke HTTP/1.1: {_one_line(e.message)}") from None
        except aiohttp.ClientError as e:
            raise HTTPConnectionError(_describe(e)) from None
        return Response(resp.status, resp.headers, data)

    async def aclose(self) -> None:
        """Close every connection now (inside the loop that opened them)."""
        closer, self._closer = self._closer, None
        session, self._session, self._loop, self._connector = self._session, None, None, None
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer.aclose()
        elif session is not None:
            await session.close()

    def close(self) -> None:
        """After the loop has ended: its shutdown closed the connections; only the references are left."""
        self._session, self._loop, self._closer, self._connector = None, None, None, None

    async def _open(self, loop: asyncio.AbstractEventLoop) -> aiohttp.ClientSession:
        # A new loop (each asyncio.run): the previous loop's session was closed as that loop ended.
        self._connector = _Connector(limit=0, limit_per_host=0, keepalive_timeout=self.keepalive_expiry)
        self._session = aiohttp.ClientSession(
            connector=self._connector,
            # The caller bounds each call; aiohttp's 300 s default would cut a long generation short.
            timeout=aiohttp.ClientTimeout(total=None),
            trust_env=False,  # proxies are looked up here, once per URL (see _target)
            cookie_jar=aiohttp.DummyCookieJar(),  # an API client keeps no cookies between calls
        )
        self._loop = loop
        # A started async generator is closed by the loop's own shutdown: its ``finally`` closes the
        # session while the loop still runs, instead of a garbage-collected one warning later.
        self._closer = _close_at_loop_end(self._session)
        await self._closer.__anext__()
        return self._session

    def _target(self, url: str) -> _Target:
        parsed = URL(url)
        proxy, auth = _env_proxy(parsed)
        target = _Target(parsed, proxy, auth, parsed.scheme == "https")
        self._targets[url] = target
        return target

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:  # built once: each connection building its own costs ~30 ms of CPU
            self._ssl = default_ssl_context()
        return self._ssl


def default_ssl_context() -> ssl.SSLContext:
    """Verification against ``SSL_CERT_FILE``/``SSL_CERT_DIR`` if set, else certifi's roots (as
    httpx and the openai SDK did), else the system's."""
    cafile = os.environ.get("SSL_CERT_FILE") or None
    capath = os.environ.get("SSL_CERT_DIR") or None
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    try:
        import certifi
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def _env_proxy(url: URL) -> tuple[URL | None, dict[str, str] | None]:
    """The environment's proxy for ``url`` (``NO_PROXY`` honoured), and the credentials in its URL."""
    host = url.host or ""
    proxies = urllib.request.getproxies()
    raw = proxies.get(url.scheme or "") or proxies.get("all")
    if not raw or urllib.request.proxy_bypass(host):
        return None, None
    proxy = URL(raw if "://" in raw else f"http://{raw}")
    if proxy.user is None:
        return proxy, None
    token = base64.b64encode(f"{proxy.user}:{proxy.password or ''}".encode()).decode("ascii")
    return proxy.with_user(None), {"Proxy-Authorization": f"Basic {token}"}


def _describe(e: aiohttp.ClientError) -> str:
    if isinstance(e, aiohttp.ServerDisconnectedError):
        return "server closed the connection without a complete response"
    if isinstance(e, aiohttp.ClientPayloadError):  # cut short of its length, a bad chunk, bad gzip
        return f"the response body is incomplete or undecodable ({_one_line(str(e))})"
    return f"{type(e).__name__}: {_one_line(str(e))}"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


async def _close_at_loop_end(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            await session.close()
