"""The scaffold the keep-alive and replica test servers share: an asyncio TCP server on loopback in
its own thread (started by ``with``, stopped on exit), and the HTTP/1.1 request/reply framing of an
OpenAI-compatible chat completion. Subclasses write only ``_handle``."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from typing import Any


class LoopServer:
    #: Named in the error when the thread does not come up.
    kind = "loopback server"
    #: Set (before ``with``) to serve TLS.
    ssl_context: ssl.SSLContext | None = None

    def __init__(self) -> None:
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ssl_context)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            self._server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{self.kind} did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)


async def read_request(reader: asyncio.StreamReader) -> dict[str, Any]:
    """One request's JSON body (``{}`` when it has none); IncompleteReadError at EOF."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.decode("latin-1").split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-length":
            length = int(v)
    return json.loads(await reader.readexactly(length)) if length else {}


async def read_chat_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> dict[str, Any]:
    """The next chat request's body; a bodyless request in between (sagegen's pre-flight ``GET /models``)
    is answered with an empty model list and not returned, so servers count chat calls only."""
    while True:
        body = await read_request(reader)
        if "messages" in body:
            return body
        await reply(writer, {"object": "list", "data": []})


def chat_completion(text: str, model: Any, usage: dict[str, int], id_: str = "c") -> dict[str, Any]:
    return {
        "id": id_,
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": usage,
    }


async def reply(writer: asyncio.StreamWriter, payload: dict[str, Any], code: int = 200) -> None:
    data = json.dumps(payload).encode()
    writer.write(
        b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (code, len(data), data)
    )
    await writer.drain()
