"""A keep-alive OpenAI-compatible server on loopback that counts connections, for pool tests.

``FaultServer`` closes every connection after one reply (so each fault is a fresh socket); this one
serves HTTP/1.1 keep-alive like vLLM's uvicorn, holds every reply until ``barrier`` requests are
open at once (or ``hold`` seconds pass), and records how many connections were opened and closed
and the most requests open at once: a client that queues calls behind a pool limit never fills
the barrier, and one that reconnects opens more connections than it had calls in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time


class KeepAliveServer:
    def __init__(self, barrier: int = 1, hold: float = 10.0):
        self.barrier, self.hold = barrier, hold
        self.port = 0
        self.opened = self.closed = self.requests = 0
        self.active = self.peak = 0  # requests being answered now / the most at once
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """True once every connection opened so far has been closed by the client."""
        end = time.monotonic() + timeout
        while self.closed < self.opened and time.monotonic() < end:
            time.sleep(0.02)
        return self.closed == self.opened

    def __enter__(self) -> KeepAliveServer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._full = asyncio.Event()
            server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("keep-alive server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                pairs = (ln.partition(":") for ln in lines[1:] if ln)
                headers = {k.strip().lower(): v.strip() for k, _, v in pairs}
                body = json.loads(await reader.readexactly(int(headers.get("content-length", "0"))))
                self.requests += 1
                self.active += 1
                self.peak = max(self.peak, self.active)
                if self.active >= self.barrier:
                    self._full.set()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.hold)
                self.active -= 1
                if self.active == 0:
                    self._full.clear()  # the next wave waits for its own barrier
                text = "echo: " + str(body["messages"][-1]["content"])
                payload = json.dumps({"id": "c", "object": "chat.completion", "model": body["model"],
                                      "choices": [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant", "content": text}}],
                                      "usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client closed the connection (EOF), or the server is stopping
        finally:
            self.closed += 1
            writer.close()
