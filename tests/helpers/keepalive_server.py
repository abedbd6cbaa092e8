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
import time

from helpers.loop_server import LoopServer, chat_completion, read_chat_request, reply


class KeepAliveServer(LoopServer):
    kind = "keep-alive server"

    def __init__(self, barrier: int = 1, hold: float = 10.0):
        super().__init__()
        self.barrier, self.hold = barrier, hold
        self.opened = self.closed = self.requests = 0
        self.active = self.peak = 0  # requests being answered now / the most at once
        self._full = asyncio.Event()  # bound to the server's loop at its first wait

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """True once every connection opened so far has been closed by the client."""
        end = time.monotonic() + timeout
        while self.closed < self.opened and time.monotonic() < end:
            time.sleep(0.02)
        return self.closed == self.opened

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened += 1
        try:
            while True:
                body = await read_chat_request(reader, writer)
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
                await reply(
                    writer, chat_completion(text, body["model"], {"prompt_tokens": 1, "completion_tokens": 1})
                )
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client closed the connection (EOF), or the server is stopping
        finally:
            self.closed += 1
            writer.close()
