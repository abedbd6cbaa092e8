"""A fault-injecting OpenAI-compatible HTTP server on loopback, for backend tests.

Raw asyncio HTTP/1.1 (one request per connection, ``Connection: close``) in a background thread,
so the client under test talks to a real socket and meets real failure modes: error statuses with
``Retry-After``, a response that never comes, a body cut short of its ``Content-Length``, HTML in
place of JSON, a JSON body cut mid-object, and a connection reset.

Each request pops the next fault from ``faults``; with none left it answers normally, either from
a built-in fake model (echo of the last user message; fast and deterministic) or by forwarding the
request to ``upstream`` (e.g. llama-cpp-python's real server). ``requests`` records every request
seen, faulted or not, so tests can count retries; a ``GET`` (sagegen's pre-flight ``/models`` probe) is
answered at once, pops no fault and is kept apart in ``probes``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Fault:
    kind: str  # status | sleep | truncate | nonjson | badjson | notcompletion | reset
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    seconds: float = 0.0


def status(code: int, body: str | None = None, **headers: str) -> Fault:
    text = body if body is not None else json.dumps({"error": {"message": f"injected {code}", "code": code}})
    named = {k.replace("_", "-"): v for k, v in headers.items()}
    return Fault("status", status=code, headers=named, body=text)


def sleep(seconds: float) -> Fault:
    return Fault("sleep", seconds=seconds)


TRUNCATE, NONJSON, BADJSON, NOTCOMPLETION, RESET = (
    Fault("truncate"),
    Fault("nonjson"),
    Fault("badjson"),
    Fault("notcompletion"),
    Fault("reset"),
)


class FaultServer:
    def __init__(self, faults: list[Fault] | None = None, *, upstream: str | None = None):
        self.faults: deque[Fault] = deque(faults or [])
        self.probes: list[str] = []  # GET requests (sagegen's pre-flight ``/models``), kept apart
        self.upstream = upstream.rstrip("/") if upstream else None
        self.requests: list[dict[str, Any]] = []
        self.times: list[float] = []  # monotonic arrival time of each request
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FaultServer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop

            async def start() -> None:
                self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
                self.port = self._server.sockets[0].getsockname()[1]
                ready.set()

            loop.run_until_complete(start())
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fault server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._thread is not None

        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            pairs = (ln.partition(":") for ln in lines[1:] if ln)
            headers = {k.strip().lower(): v.strip() for k, _, v in pairs}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if method == "GET" and not self.upstream:  # sagegen's pre-flight probe (GET /models): no fault
                self.probes.append(path)
                _write(writer, 200, "application/json", b'{"object": "list", "data": [{"id": "m"}]}')
                await writer.drain()
                return
            self.times.append(time.monotonic())
            self.requests.append(
                {
                    "method": method,
                    "path": path,
                    "headers": headers,
                    "json": json.loads(body) if body else None,
                }
            )
            fault = self.faults.popleft() if self.faults else None
            await self._respond(fault, method, path, headers, body, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _respond(
        self,
        fault: Fault | None,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        writer: asyncio.StreamWriter,
    ) -> None:
        if fault is None:
            code, ctype, payload = await self._answer(method, path, headers, body)
            _write(writer, code, ctype, payload)
        elif fault.kind == "status":
            _write(writer, fault.status, "application/json", fault.body.encode(), fault.headers)
        elif fault.kind == "sleep":
            await asyncio.sleep(fault.seconds)  # the client should have given up by now
            code, ctype, payload = await self._answer(method, path, headers, body)
            _write(writer, code, ctype, payload)
        elif fault.kind == "truncate":
            _, _, payload = await self._answer(method, path, headers, body)
            writer.write(_head(200, "application/json", len(payload)) + payload[: len(payload) // 3])
        elif fault.kind == "nonjson":
            _write(writer, 200, "text/html", b"<html><body><h1>502 Bad Gateway</h1>nginx</body></html>")
        elif fault.kind == "badjson":
            _write(writer, 200, "application/json", b'{"id": "x", "choices": [{"message": {"role": "assis')
        elif fault.kind == "notcompletion":
            _write(writer, 200, "application/json", b'{"object": "list", "data": []}')
        elif fault.kind == "reset":
            # SO_LINGER 0 makes close() send RST instead of FIN: a hard connection reset.
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        await writer.drain()

    async def _answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        if self.upstream:
            import httpx

            base = self.upstream.removesuffix("/v1")
            async with httpx.AsyncClient(timeout=300) as client:
                r = await client.request(
                    method, base + path, content=body, headers={"content-type": "application/json"}
                )
            return r.status_code, r.headers.get("content-type", "application/json"), r.content
        return 200, "application/json", json.dumps(fake_completion(json.loads(body) if body else {})).encode()


def fake_completion(req: dict[str, Any]) -> dict[str, Any]:
    """What a tiny deterministic model would answer: echo the last user message, or call a tool."""
    msgs = req.get("messages") or [{}]
    last = next((m.get("content") or "" for m in reversed(msgs) if m.get("role") == "user"), "")
    message: dict[str, Any] = {"role": "assistant", "content": f"echo: {last}"}
    finish = "stop"
    if req.get("tools"):
        name = req["tools"][0]["function"]["name"]
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps({"query": last})},
                }
            ],
        }
        finish = "tool_calls"
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.get("model", "fake"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }


def _head(code: int, ctype: str, length: int, extra: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {code} X", f"Content-Type: {ctype}", f"Content-Length: {length}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _write(
    writer: asyncio.StreamWriter, code: int, ctype: str, payload: bytes, extra: dict[str, str] | None = None
) -> None:
    writer.write(_head(code, ctype, len(payload), extra) + payload)
