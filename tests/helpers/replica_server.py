"""Replicas of one OpenAI-compatible model on loopback, for the many-endpoints tests.

Each ``Replica`` is a keep-alive HTTP/1.1 server in its own thread (like one vLLM/SGLang server
behind uvicorn): it answers every chat completion after ``delay`` seconds, or once ``barrier``
requests are open at once, with ``"<name>: <last user message>"``; counts requests and the most
open at once; ``fail_with`` makes it answer that HTTP status instead; ``kill()`` makes it die as a
crashed server does: the listening socket closes (new connections are refused) and every open
connection is reset, requests in flight included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading


class Replica:
    def __init__(self, name: str, delay: float = 0.0, barrier: int = 0, fail_with: int | None = None):
        self.name, self.delay, self.barrier, self.fail_with = name, delay, barrier, fail_with
        self.port = 0
        self.requests = self.active = self.peak = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> Replica:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._full = asyncio.Event()
            self._server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("replica did not start")
        return self

    def kill(self) -> None:
        """Die like a crashed server: refuse new connections, reset the open ones."""
        assert self._loop is not None

        def die() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.transport.abort()

        self._loop.call_soon_threadsafe(die)
        # Wait until the listening socket is closed: later connections are refused, not accepted.
        done = threading.Event()
        self._loop.call_soon_threadsafe(done.set)
        done.wait(5)

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self.kill()
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    k, _, v = line.partition(":")
                    if k.strip().lower() == "content-length":
                        length = int(v)
                body = json.loads(await reader.readexactly(length)) if length else {}
                self.requests += 1
                self.active += 1
                self.peak = max(self.peak, self.active)
                try:
                    if self.barrier:
                        if self.active >= self.barrier:
                            self._full.set()
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(self._full.wait(), 10)
                    if self.delay:
                        await asyncio.sleep(self.delay)
                finally:
                    self.active -= 1
                if self.fail_with is not None:
                    code, payload = self.fail_with, json.dumps({"error": {"message": f"{self.name} down"}})
                else:
                    text = f"{self.name}: {body['messages'][-1]['content']}"
                    code, payload = 200, json.dumps({
                        "id": "x", "object": "chat.completion", "model": body.get("model"),
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": text}}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
                data = payload.encode()
                writer.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (code, len(data), data))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
