"""An OpenAI-compatible server on loopback that plays a named scripted fixture (``sage`` by default):
a real ``sagegen generate`` with ``llm.backend=openai`` runs the whole SAGE loop against it over HTTP.

Keep-alive HTTP/1.1 like vLLM's uvicorn. Each reply is the fixture's answer to the request's messages,
cut at the request's ``stop`` sequences as a model server does; ``requests`` counts every request, so
a test sees exactly how many LLM calls reached this server.
"""

from __future__ import annotations

import asyncio

from helpers.loop_server import LoopServer, chat_completion, read_chat_request, reply
from sagegen.llm.base import apply_stop
from sagegen.llm.scripted import FIXTURES


class FixtureServer(LoopServer):
    kind = "fixture server"

    def __init__(self, fixture: str = "sage"):
        super().__init__()
        self.play = FIXTURES[fixture]
        self.requests = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                body = await read_chat_request(reader, writer)
                self.requests += 1
                text = apply_stop(self.play(body["messages"]), body.get("stop"))
                await reply(
                    writer,
                    chat_completion(
                        text, body.get("model"), {"prompt_tokens": 1, "completion_tokens": len(text.split())}
                    ),
                )
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client closed the connection (EOF), or the server is stopping
        finally:
            writer.close()
