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
import threading

from helpers.loop_server import LoopServer, chat_completion, read_chat_request, reply


class Replica(LoopServer):
    kind = "replica"

    def __init__(self, name: str, delay: float = 0.0, barrier: int = 0, fail_with: int | None = None):
        super().__init__()
        self.name, self.delay, self.barrier, self.fail_with = name, delay, barrier, fail_with
        self.requests = self.active = self.peak = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._full = asyncio.Event()  # bound to the server's loop at its first wait

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
        super().__exit__(*exc)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                body = await read_chat_request(reader, writer)
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
                    await reply(writer, {"error": {"message": f"{self.name} down"}}, self.fail_with)
                else:
                    text = f"{self.name}: {body['messages'][-1]['content']}"
                    await reply(
                        writer,
                        chat_completion(
                            text,
                            body.get("model"),
                            {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
                            id_="x",
                        ),
                    )
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
