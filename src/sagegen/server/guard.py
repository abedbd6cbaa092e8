"""The guards of ``sagegen serve``: who may bind where, API key / content type / body size, read
deadlines and a Host check.

**Bind check and request guard.** A server reachable beyond loopback must have an API key
(:func:`check_bind`); :class:`RequestGuard` checks the key, the content type and the body size
before anything parses the body.

Two of them FastAPI and uvicorn do not give: read deadlines and a Host check.

**Read deadlines (slow loris).** uvicorn closes a keep-alive connection that stays idle after a
response, but it has no deadline for *reading* a request: a client that opens a connection and sends
its headers (or its body) a byte at a time keeps a slot forever, and a few hundred such clients
exhaust the server. :func:`guarded_protocol` wraps uvicorn's HTTP protocol class (whichever one it
picked: httptools or h11) with a deadline per connection: a request's headers must be complete
``header_timeout`` seconds after the connection opened or the previous response went out, and its
body at most ``body_timeout`` seconds after that. A connection past either is closed. Only the
public asyncio protocol callbacks and the ``cycle`` / ``on_response_complete`` members that both of
uvicorn's HTTP implementations share are used.

**Host allow-list (DNS rebinding).** A server without an API key listens on loopback only, but a web
page can still reach it by pointing a domain it controls at 127.0.0.1; the browser then sends that
domain as the ``Host`` header. :class:`LoopbackHostOnly` answers 421 to any request whose ``Host``
is not a loopback name, which no rebinding page can forge.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import os
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sagegen.config import ServerConfig
from sagegen.errors import ConfigError

LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})
# Paths anyone may read even when a key is set: liveness probes and the API description.
PUBLIC_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def is_loopback_host(host: str) -> bool:
    """True for names and addresses that only this machine can reach."""
    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        # Any other hostname may resolve to a public interface: treat it as exposed.
        return False


def resolve_api_key(cfg: ServerConfig) -> str | None:
    """The key from the environment variable ``cfg.api_key_env``; unset or blank means none."""
    key = os.environ.get(cfg.api_key_env, "").strip() if cfg.api_key_env else ""
    return key or None


def check_bind(cfg: ServerConfig, api_key: str | None) -> None:
    """Refuse to expose an unauthenticated server beyond loopback."""
    if not is_loopback_host(cfg.host) and not api_key:
        raise ConfigError(
            f"server.host={cfg.host!r} is reachable from other machines; set the environment variable "
            f"{cfg.api_key_env} to an API key (clients send it as 'Authorization: Bearer <key>') "
            "or bind to 127.0.0.1"
        )


class RequestGuard:
    """Checks that must come before FastAPI reads the body: API key, content type, body size.

    Order matters: an unauthenticated client learns nothing about validation (401 first), and
    an oversized body is refused before it is parsed (413).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: str | None,
        max_body_bytes: int,
        body_paths: frozenset[str] | None = None,
    ) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes
        #: The routes that take a body; a body method elsewhere (``PUT /health``) goes to the app, which
        #: answers 405 or 404 (not a 415 about a body no route would read). None: every path.
        self.body_paths = body_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        if self.api_key is not None and path not in PUBLIC_PATHS and not self._authorised(headers):
            await send_error(
                send,
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                extra_headers=[(b"www-authenticate", b"Bearer")],
            )
            return
        if scope.get("method") not in ("POST", "PUT", "PATCH") or (
            self.body_paths is not None and path not in self.body_paths
        ):
            await self.app(scope, receive, send)
            return

        ctype = headers.get("content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if ctype != "application/json" and not ctype.endswith("+json"):
            shown = ctype or "none"
            await send_error(send, 415, f"Content-Type must be application/json (got {shown})")
            return
        length = headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await send_error(send, 400, "Content-Length is not a number")
                return
            if declared > self.max_body_bytes:
                await send_error(send, 413, _too_large(self.max_body_bytes))
                return

        # Read the body here, bounded, so a chunked upload cannot grow past the limit either;
        # then hand it to the app unchanged.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await send_error(send, 413, _too_large(self.max_body_bytes))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            body.decode("utf-8")  # RFC 8259: JSON between systems is UTF-8
        except UnicodeDecodeError as e:
            await send_error(send, 400, f"request body is not valid JSON: not UTF-8 text (byte {e.start})")
            return
        await self.app(scope, replay_body(body, receive), send)

    def _authorised(self, headers: dict[str, bytes]) -> bool:
        assert self.api_key is not None
        offered: list[bytes] = []
        auth = headers.get("authorization", b"")
        scheme, _, token = auth.partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            offered.append(token.strip())
        if "x-api-key" in headers:
            offered.append(headers["x-api-key"].strip())
        # Constant-time comparison: the reply time must not reveal how much of a guess was right.
        return any(hmac.compare_digest(tok, self.api_key) for tok in offered)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app ``body`` (already read) in one message, then the real ones."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _too_large(limit: int) -> str:
    return f"request body too large (limit {limit} bytes; send fewer or shorter queries per request)"


async def send_error(
    send: Send, status: int, message: str, *, extra_headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += extra_headers or []
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def host_name(header: str) -> str:
    """``Host`` header → host name, without port or IPv6 brackets, lowercased."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1 : h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def is_loopback_name(name: str) -> bool:
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class LoopbackHostOnly:
    """ASGI middleware: 421 unless the ``Host`` header names loopback (used when no API key is set)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1")
            if not is_loopback_name(host_name(raw)):
                body = json.dumps(
                    {
                        "error": f"Host {raw!r} is not served: this server has no API key and "
                        "answers loopback names only (set server.api_key_env to serve others)"
                    }
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 421,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def guarded_protocol(header_timeout: float, body_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's own HTTP protocol class with read deadlines (pass it as ``uvicorn.Config(http=...)``)."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    base: Any = AutoHTTPProtocol

    class ReadDeadlineProtocol(base):
        _deadline: asyncio.TimerHandle | None = None
        _before: Any = None  # the request cycle current when we began waiting for the next one

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._await_request()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._await_request()

        def _await_request(self) -> None:
            self._before = self.cycle
            self._arm(header_timeout, self._headers_due)

        def _arm(self, seconds: float, callback: Any) -> None:
            self._cancel()
            self._deadline = asyncio.get_running_loop().call_later(seconds, callback)

        def _cancel(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _headers_due(self) -> None:
            if self.cycle is self._before:  # no new request's headers yet
                if self.cycle is None or self.cycle.response_complete:
                    self._cut_off()
                return  # still answering a pipelined request: on_response_complete re-arms
            if self.cycle.more_body:
                self._arm(body_timeout, self._body_due)

        def _body_due(self) -> None:
            if self.cycle is not None and self.cycle.more_body and not self.cycle.response_complete:
                self._cut_off()

        def _cut_off(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

    return ReadDeadlineProtocol
