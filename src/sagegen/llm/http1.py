"""One HTTP/1.1 client connection on asyncio's own transport, with ``h11`` for the protocol.

Why not httpcore (httpx's connection layer, which we drove before): under it every socket read
and write goes through anyio's stream layer with its own cancel scope and checkpoint, which was
half of the client's CPU per LLM call at 256 in flight (py-spy, bench/bench_generate.py). Here the
event loop calls ``data_received`` with whatever bytes arrived, ``h11`` (the protocol state
machine httpcore itself uses: framing, ``Content-Length``, chunked bodies, keep-alive rules) turns
them into events, and the one waiting request is woken once, when its response is complete.

Scope: what an OpenAI-compatible client needs. One request at a time per connection (no
pipelining); the request body is sent whole (a chat request is kilobytes; the transport buffers
it); the response body is read whole. TLS is asyncio's (``ssl=`` on the connection). Timeouts are
the caller's (one ``asyncio.timeout`` around the whole call): a cancelled request leaves the
connection half-used, so the caller closes it.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

import h11

Headers = list[tuple[bytes, bytes]]
_CLOSED_EARLY = "server closed the connection without a complete response"


class HTTPConnectionError(Exception):
    """The connection failed: refused, reset, closed by the server before its response was complete,
    or the server broke HTTP/1.1. Worth a retry, elsewhere if there is an elsewhere."""


class _Wire(asyncio.Protocol):
    """The asyncio side: hands bytes and the end of the connection to its ``H1Connection``."""

    def __init__(self, owner: H1Connection) -> None:
        self.owner = owner

    def data_received(self, data: bytes) -> None:
        self.owner._received(data)

    def eof_received(self) -> bool:
        self.owner._received(b"")
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost(exc)


class H1Connection:
    """A keep-alive HTTP/1.1 connection to one origin, opened on its first request."""

    def __init__(self, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
                 keepalive_expiry: float = 4.0) -> None:
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self.keepalive_expiry = keepalive_expiry
        default_port = 443 if ssl_context is not None else 80
        host_header = f"[{host}]" if ":" in host else host
        self._host_header = (host_header if port == default_port else f"{host_header}:{port}").encode()
        self._transport: asyncio.Transport | None = None
        self._h11: h11.Connection | None = None
        self._waiter: asyncio.Future[None] | None = None  # the request waiting for its response
        self._status = 0
        self._headers: Headers = []
        self._body: list[bytes] = []
        self._broken: BaseException | None = None  # why the connection cannot be used again
        self._gone: asyncio.Future[None] | None = None  # done once the transport has closed
        self._idle_since = time.monotonic()

    # -- what the owner of a pool of these asks ----------------------------------------------------

    def is_closed(self) -> bool:
        return self._broken is not None or (self._transport is not None and self._transport.is_closing())

    def has_expired(self) -> bool:
        """Idle past the keep-alive window: the server may be closing it, so it is not reused."""
        return self._transport is not None and time.monotonic() - self._idle_since > self.keepalive_expiry

    async def aclose(self) -> None:
        """Close, and return once the socket is closed (asyncio closes a transport a loop turn later)."""
        self._fail(HTTPConnectionError("connection closed by the client"))
        transport, gone = self._transport, self._gone
        if transport is None or gone is None:
            return
        transport.close()
        if not gone.done():
            try:  # a TLS close waits for the peer's reply to its close_notify: not forever
                await asyncio.wait_for(asyncio.shield(gone), 1.0)
            except asyncio.TimeoutError:
                transport.abort()

    # -- one request ---------------------------------------------------------------------------------

    async def request(self, method: bytes, target: bytes, headers: Headers,
                      body: bytes) -> tuple[int, Headers, bytes]:
        """Send one request and return (status, headers, body) once the response is complete."""
        if self._broken is not None:
            raise HTTPConnectionError(f"connection not usable: {self._broken}")
        loop = asyncio.get_running_loop()
        if self._transport is None:
            transport, _ = await loop.create_connection(
                lambda: _Wire(self), self.host, self.port, ssl=self.ssl_context,
                server_hostname=self.host if self.ssl_context is not None else None)
            self._transport = transport  # type: ignore[assignment]
            self._h11 = h11.Connection(h11.CLIENT)
            self._gone = loop.create_future()
        assert self._transport is not None and self._h11 is not None
        conn = self._h11
        self._status, self._headers, self._body = 0, [], []
        waiter = self._waiter = loop.create_future()
        try:
            head = [(b"host", self._host_header), *headers, (b"content-length", str(len(body)).encode())]
            events = (h11.Request(method=method, target=target, headers=head), h11.Data(data=body),
                      h11.EndOfMessage())
            out = b"".join(conn.send(e) or b"" for e in events)
        except h11.LocalProtocolError as e:  # a header we were given is not valid HTTP
            self._waiter = None
            raise ValueError(f"invalid HTTP request: {e}") from None
        self._transport.write(out)
        try:
            await waiter
        except asyncio.CancelledError:  # a timeout mid-response: what is left of it must not be read as
            self._fail(HTTPConnectionError("request cancelled"))  # the next request's answer
            self._transport.close()
            raise
        finally:
            self._waiter = None
        self._idle_since = time.monotonic()
        return self._status, self._headers, b"".join(self._body)

    # -- the event loop's side -----------------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        conn = self._h11
        if conn is None or self._broken is not None:
            return
        try:
            conn.receive_data(data)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return
                if isinstance(event, h11.Response):
                    self._status, self._headers = event.status_code, list(event.headers)
                elif isinstance(event, h11.Data):
                    self._body.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    self._finished(conn)
                    return
                elif isinstance(event, h11.ConnectionClosed):
                    self._fail(HTTPConnectionError(_CLOSED_EARLY))
                    return
                # h11.InformationalResponse (100 Continue, ...) carries nothing we need
        except (h11.RemoteProtocolError, RuntimeError) as e:  # RuntimeError: bytes after the close
            self._fail(HTTPConnectionError(f"the server broke HTTP/1.1: {e}"))
            if self._transport is not None:
                self._transport.close()

    def _finished(self, conn: h11.Connection) -> None:
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()  # keep-alive: ready for the next request
        else:  # "Connection: close" or an HTTP/1.0 reply: this one was the last
            self._broken = HTTPConnectionError("closed after its last response")
            if self._transport is not None:
                self._transport.close()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _lost(self, exc: Exception | None) -> None:
        if self._broken is None and self._waiter is not None and self._h11 is not None:
            self._received(b"")  # a body that ends with the connection (no length) completes here
        why = f"connection lost ({type(exc).__name__}: {exc})" if exc else _CLOSED_EARLY
        self._fail(HTTPConnectionError(why))
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)

    def _fail(self, err: HTTPConnectionError) -> None:
        if self._broken is None:
            self._broken = err
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(err)


def header(headers: Any, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case) in h11's header list (names come lower-cased)."""
    for k, v in headers:
        if k == name:
            return bytes(v).decode("latin-1")
    return None
