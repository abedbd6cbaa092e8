"""A keep-alive HTTP/1.1 server on loopback whose replies are written byte by byte by the test.

Each request's JSON body carries an ``id``; ``write(writer, n, head, body_of(id))`` answers it, so a
test writes the exact bytes a misbehaving server or proxy sends (a response twice, gzip, chunked,
HTTP/1.0, a close mid-body, stray bytes) and checks that every reply the client returns names its
own request. Counts connections and requests and keeps every request head.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable

from helpers.loop_server import LoopServer

#: ``write(writer, request number, request head, reply body)``; may sleep, write in pieces, close.
Write = Callable[[asyncio.StreamWriter, int, bytes, bytes], Awaitable[None]]


def reply_body(request_id: object) -> bytes:
    """The JSON reply to a request: names the request it answers."""
    return json.dumps({"answer_to": request_id, "padding": "x" * 200}).encode()


def plain(body: bytes, *, extra: str = "", version: str = "1.1") -> bytes:
    return (
        f"HTTP/{version} 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{extra}\r\n"
    ).encode() + body


class RawHTTPServer(LoopServer):
    kind = "raw HTTP server"

    def __init__(self, write: Write, *, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__()
        self.write = write
        self.ssl_context = ssl_context
        self.opened = self.requests = self.closed = 0
        self.heads: list[bytes] = []

    @property
    def url(self) -> str:
        scheme, host = ("https", "localhost") if self.ssl_context else ("http", "127.0.0.1")
        return f"{scheme}://{host}:{self.port}/v1/chat/completions"

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
                await self.write(writer, self.requests, head, reply_body(body.get("id")))
                await writer.drain()
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed += 1
            writer.close()
