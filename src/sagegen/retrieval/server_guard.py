"""Two guards of ``sagegen serve`` that FastAPI and uvicorn do not give: read deadlines and a Host check.

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
import ipaddress
import json
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})


def host_name(header: str) -> str:
    """``Host`` header → host name, without port or IPv6 brackets, lowercased."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
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
                body = json.dumps({"error": f"Host {raw!r} is not served: this server has no API key and "
                                   "answers loopback names only (set server.api_key_env to serve others)"}
                                  ).encode()
                await send({"type": "http.response.start", "status": 421,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def guarded_protocol(header_timeout: float, body_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's own HTTP protocol class with read deadlines (pass it as ``uvicorn.Config(http=...)``)."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    base: Any = AutoHTTPProtocol

    class ReadDeadlineProtocol(base):  # type: ignore[misc, valid-type]
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
