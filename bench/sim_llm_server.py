"""A simulated OpenAI-compatible chat server for bench/bench_generate.py: real HTTP, modelled latency.

    python bench/sim_llm_server.py [--port 0] [--slots 256] [--time-scale 1.0] [--log FILE]

It prints ``port N`` on its first stdout line once it listens on 127.0.0.1.

Latency model (per request, after waiting for one of ``--slots`` free decode slots, FIFO):
``ttft + prompt_tokens / prefill + completion_tokens / decode``, all times × ``--time-scale``.
Tokens are estimated as characters / 4; the completion length is drawn from the request's
``seed`` (a reasoning model writes more than the few tags we send back), so the same request always
takes the same time. Capacity is then ``slots / mean service time``, the figure the bench reports
throughput against.

Replies follow sagegen's protocol for each role, found from the request's messages:

- **judge** (the prompt carries ``[correct_answer]``): ``correct: yes`` when the response contains
  the golden answer, else ``no``, in the BrowseComp grader layout ``judge.py`` reads;
- **generator / reviser** (the system prompt describes ``<answering_steps>``): 1–4 ``<search>``
  turns, then ``<question>``/``<answer>``/``<answering_steps>``. The question names a marker
  ``G<seed>`` and its answer (a year) is a function of that seed, so solver and judge requests can
  be told which authoring call they descend from (``key`` in the log) and the solver "knows" the answer;
- **solver** (anything else): 1–5 searches, then an answer that is exact, a paraphrase (so the LLM
  judge is asked) or wrong, drawn from the seed.

``stop`` is honoured with OpenAI semantics (the text ends before the first stop string, which is not
returned). The server is a bare asyncio protocol (HTTP/1.1 keep-alive, Content-Length bodies only),
so it costs far less CPU per request than any client it measures; ``--ceiling`` in bench_generate
measures that. ``GET /stats`` returns its counters and its own CPU time; ``POST /reset`` clears them.
With ``--log FILE`` each request is appended as one JSON line (its body, key, role, service time,
arrival ``t`` and service start ``s`` on this machine's monotonic clock).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import time
from dataclasses import dataclass
from typing import Any

_MARKER = re.compile(r"\bG(\d+)\b")
_GOLDEN = re.compile(r"\[correct_answer\]:\s*(.+)")
_RESPONSE = re.compile(r"\[response\]:\s*(.*?)\n\s*\n", re.DOTALL)

#: Completion tokens drawn per role (uniform), standing for the reasoning a real model writes.
COMPLETION_TOKENS = {"generator": (60, 240), "solver": (40, 160), "judge": (30, 80)}


@dataclass(frozen=True)
class Latency:
    slots: int = 256
    ttft: float = 0.1
    prefill: float = 20_000.0  # prompt tokens/s per request
    decode: float = 60.0  # completion tokens/s per request
    scale: float = 1.0

    def service(self, prompt_tokens: int, completion_tokens: int) -> float:
        return self.scale * (self.ttft + prompt_tokens / self.prefill + completion_tokens / self.decode)


def answer_of(key: int) -> str:
    return str(1500 + key % 500)


def role_of(messages: list[dict[str, Any]]) -> str:
    text = "\n".join(str(m.get("content") or "") for m in messages)
    if "[correct_answer]" in text:
        return "judge"
    system = str(messages[0].get("content") or "") if messages else ""
    if "answering_steps" in system or "answering steps" in system:
        return "generator"
    return "solver"


def _turns(messages: list[dict[str, Any]]) -> int:
    return sum(1 for m in messages if m.get("role") == "assistant")


def reply(body: dict[str, Any]) -> tuple[str, str, int, int]:
    """(role, text, chain key, completion tokens) for one chat request; deterministic."""
    messages = body.get("messages") or []
    seed = int(body.get("seed") or 0)
    role = role_of(messages)
    turn = _turns(messages)
    rng = random.Random(seed * 1_000_003 + turn)
    lo, hi = COMPLETION_TOKENS[role]
    tokens = rng.randint(lo, hi)
    if role == "generator":
        key = seed
        if turn < random.Random(seed).randint(1, 4):
            text = (
                f"<think> Step {turn + 1}: I look up the next fact the chain needs. </think>\n"
                f"<search> archive record {seed % 97} part {turn} </search>"
            )
        else:
            text = (
                f"<think> I have the facts for a chained question. </think>\n"
                f"<question> In which year did the archive catalogued as item G{key} first open "
                f"to readers? </question>\n<answer> {answer_of(key)} </answer>\n"
                f"<answering_steps> 1. Which archive is item G{key}? The city archive. 2. When did "
                f"it open? {answer_of(key)}. </answering_steps>"
            )
        return role, text, key, tokens
    marks = _MARKER.findall("\n".join(str(m.get("content") or "") for m in messages[:2]))
    key = int(marks[-1]) if marks else -1
    if role == "judge":
        content = str(messages[-1].get("content") or "")
        g = _GOLDEN.search(content)
        r = _RESPONSE.search(content)
        golden = g.group(1).split(" OR ")[0].strip() if g else ""
        response = r.group(1).strip() if r else ""
        ok = bool(golden) and golden in response
        text = (
            f"extracted_final_answer: {response or 'None'}\n\nreasoning: The response "
            f"{'gives' if ok else 'does not give'} the correct year.\n\ncorrect: {'yes' if ok else 'no'}"
            "\n\nconfidence: 100"
        )
        return role, text, key, tokens
    plan = random.Random(seed)
    searches = plan.randint(1, 5)
    if turn < searches:
        text = (
            f"<think> I need one more fact (turn {turn + 1}). </think>\n"
            f"<search> archive item G{key} opening step {turn} </search>"
        )
    else:
        u = plan.random()
        ans = answer_of(key)
        ans = ans if u < 0.35 else f"the year {ans}" if u < 0.6 else str(int(ans) + 1)
        text = f"<think> The records agree. </think>\n<answer> {ans} </answer>"
    return role, text, key, tokens


def _apply_stop(text: str, stop: Any) -> str:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


class SimServer:
    def __init__(self, latency: Latency, log_path: str | None = None) -> None:
        self.latency = latency
        self.sem = asyncio.Semaphore(latency.slots)
        self.log = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.busy_s = 0.0  # summed service time
        self.in_flight = 0
        self.max_in_flight = 0
        self.first = self.last = 0.0
        self.cpu0 = time.process_time()
        self.t0 = time.monotonic()

    def stats(self) -> dict[str, Any]:
        if self.log is not None:
            self.log.flush()
        return {
            "requests": self.requests,
            "service_s": self.busy_s,
            "slots": self.latency.slots,
            "max_in_flight": self.max_in_flight,
            "span_s": self.last - self.first,
            "first": self.first,
            "last": self.last,  # monotonic: comparable across local processes
            "cpu_s": time.process_time() - self.cpu0,
            "wall_s": time.monotonic() - self.t0,
        }

    async def chat(self, raw: bytes) -> bytes:
        body = json.loads(raw)
        role, text, key, ctoks = reply(body)
        text = _apply_stop(text, body.get("stop"))
        ptoks = sum(len(str(m.get("content") or "")) for m in body.get("messages") or []) // 4
        service = self.latency.service(ptoks, ctoks)
        arrived = time.monotonic()
        if not self.requests:
            self.first = arrived
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        async with self.sem:
            started = time.monotonic()  # a slot is free: service starts (later than arrival when queued)
            await asyncio.sleep(service)
        self.in_flight -= 1
        self.busy_s += service
        self.last = time.monotonic()
        if self.log is not None:
            # The request's own bytes as the body (it is JSON already): re-encoding the parsed body
            # was a third of this server's CPU per request, which the client under test shares.
            head = json.dumps({"key": key, "role": role, "service": service, "t": arrived, "s": started})
            self.log.write(head[:-1] + ',"body":' + raw.decode() + "}\n")
        return json.dumps(
            {
                "id": f"chatcmpl-{self.requests}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "sim"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": {"prompt_tokens": ptoks, "completion_tokens": ctoks, "total_tokens": ptoks + ctoks},
            }
        ).encode()


class _Conn(asyncio.Protocol):
    """HTTP/1.1 with keep-alive; one request at a time per connection, as HTTP clients send them."""

    def __init__(self, server: SimServer) -> None:
        self.server = server
        self.buf = bytearray()
        self.transport: Any = None
        self.tasks: set[asyncio.Future[None]] = set()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4 : end + 4 + length])
            del self.buf[: end + 4 + length]
            method, path = head[0].split(" ")[:2]
            task = asyncio.ensure_future(self.respond(method, path, body))
            self.tasks.add(task)  # a reference, so the loop cannot drop the task mid-request
            task.add_done_callback(self.tasks.discard)

    async def respond(self, method: str, path: str, body: bytes) -> None:
        status = "200 OK"
        if method == "POST" and path.endswith("/chat/completions"):
            out = await self.server.chat(body)
        elif path == "/stats":
            out = json.dumps(self.server.stats()).encode()
        elif method == "POST" and path == "/reset":
            self.server.reset()
            out = b"{}"
        elif path.endswith("/models"):
            out = b'{"object":"list","data":[{"id":"sim","object":"model"}]}'
        else:
            status, out = "404 Not Found", b'{"error":{"message":"not found"}}'
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(out)}\r\n"
            "Connection: keep-alive\r\n\r\n".encode()
            + out
        )


async def serve(port: int, latency: Latency, log_path: str | None) -> None:
    sim = SimServer(latency, log_path)
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: _Conn(sim), "127.0.0.1", port, backlog=4096)
    print(f"port {srv.sockets[0].getsockname()[1]}", flush=True)
    async with srv:
        await srv.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--slots", type=int, default=256)
    ap.add_argument("--ttft", type=float, default=0.1)
    ap.add_argument("--prefill", type=float, default=20_000.0)
    ap.add_argument("--decode", type=float, default=60.0)
    ap.add_argument("--time-scale", type=float, default=1.0, help="Multiply every service time (0 = none).")
    ap.add_argument("--log", default=None, help="Append one JSON line per request to this file.")
    a = ap.parse_args()
    lat = Latency(a.slots, a.ttft, a.prefill, a.decode, a.time_scale)
    try:
        asyncio.run(serve(a.port, lat, a.log))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
