"""A keep-alive HTTP/1.1 server on loopback whose replies are written byte by byte by the test.

Each request's JSON body carries an ``id``; ``write(writer, n, head, body_of(id))`` answers it, so a
test writes the exact bytes a misbehaving server or proxy sends (a response twice, gzip, chunked,
HTTP/1.0, a close mid-body, stray bytes) and checks that every reply the client returns names its
own request. ``reply`` replaces that body (the OpenAI backend's tests send a chat completion).
Counts connections and requests and keeps every request head. The one raw server of the tests:
tests/llm/test_transport.py drives the transport with it, tests/llm/test_llm_http_wire.py the OpenAI backend.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from helpers.loop_server import LoopServer

#: ``write(writer, request number, request head, reply body)``; may sleep, write in pieces, close.
Write = Callable[[asyncio.StreamWriter, int, bytes, bytes], Awaitable[None]]
#: ``reply(request number, request JSON)``: the body to answer with.
Reply = Callable[[int, dict[str, Any]], bytes]


def reply_body(request_id: object) -> bytes:
    """The JSON reply to a request: names the request it answers."""
    return json.dumps({"answer_to": request_id, "padding": "x" * 200}).encode()


def plain(body: bytes, *, extra: str = "", version: str = "1.1") -> bytes:
    return (
        f"HTTP/{version} 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{extra}\r\n"
    ).encode() + body


async def write_chunked(
    w: asyncio.StreamWriter,
    body: bytes,
    *,
    piece: int = 17,
    extra: str = "Content-Type: application/json\r\n",
) -> None:
    """``body`` as a chunked reply in ``piece``-byte chunks, each flushed: they arrive in separate reads."""
    w.write(f"HTTP/1.1 200 OK\r\n{extra}Transfer-Encoding: chunked\r\n\r\n".encode())
    for i in range(0, len(body), piece):
        part = body[i : i + piece]
        w.write(b"%x\r\n%s\r\n" % (len(part), part))
        await w.drain()
    w.write(b"0\r\n\r\n")


class RawHTTPServer(LoopServer):
    kind = "raw HTTP server"

    def __init__(
        self, write: Write, *, reply: Reply | None = None, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        super().__init__()
        self.write = write
        self.reply: Reply = reply or (lambda n, request: reply_body(request.get("id")))
        self.ssl_context = ssl_context
        self.opened = self.requests = self.closed = 0
        self.heads: list[bytes] = []

    @property
    def base_url(self) -> str:
        """What an OpenAI-compatible client is given (``llm.base_url``)."""
        scheme, host = ("https", "localhost") if self.ssl_context else ("http", "127.0.0.1")
        return f"{scheme}://{host}:{self.port}/v1"

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = json.loads(await reader.readexactly(length)) if length else {}
                self.requests += 1
                self.heads.append(head)
                await self.write(writer, self.requests, head, self.reply(self.requests, body))
                await writer.drain()
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed += 1
            writer.close()
