"""LLM-call throughput of ``sagegen generate`` against a simulated OpenAI-compatible server.

The server (bench/sim_llm_server.py, a separate process on loopback) models a GPU inference server:
``--slots`` requests decode at once, each for ``ttft + prompt/prefill + completion/decode`` seconds,
and its replies follow sagegen's protocol per role, so the real pipeline (generator, K solver
attempts, LLM judge, feedback rounds; ``llm.backend=openai``, cache off, bundled corpus, BM25) runs
unchanged in this process at each concurrency (``pipeline.concurrency`` = calls in flight, since a
pair's calls are sequential).

Then a minimal baseline client in the same process replays exactly the same request bodies, pair
by pair in the same order with the same number of pairs in flight, over plain asyncio streams
(one keep-alive connection per lane, ``json`` in and out, nothing else): the reference for what
an orchestrator needs.

Figures per row:

- ``cap%``: the share of the server's capacity used, summed service time / (span × slots);
  capacity = slots / mean service time. Below ``slots`` in flight it cannot reach 100%.
- ``reach%``: the same against the slots this concurrency can fill, min(in flight, slots).
- ``steady%``: ``reach%`` over the part of the run where every lane had a pair to work on: from the
  first request of the ``in flight``-th pair (the ramp is over) to the first request of the last
  pair (after it lanes run dry one by one: the tail, a property of a workload with few pairs per
  lane, not of the client). It is what a run of many more pairs than lanes (the paper's 20k pairs)
  reaches over its whole span; ``-`` when there are no more pairs than lanes.
- ``over%``: span / ideal − 1. The ideal schedule runs each pair's calls back to back with zero
  client time, pairs taken in order by ``in flight`` lanes (list scheduling), and never beats
  total service / slots. Calls are attributed to pairs through the ``G<seed>`` marker the
  simulated generator writes into each question (see sim_llm_server.py).
- ``cpu ms/call``: CPU time of this process over the run / calls (everything: agents, retrieval,
  ledger, HTTP client, JSON). A one-pair warm-up generate runs first, unmeasured, so that one-off
  costs (imports, template compilation) are not booked to the first level; each level still pays
  its own run's set-up (ledger, run files), which matters only where a level makes few calls.

    python bench/bench_generate.py --quick            # 1/16/64/256 in flight, small runs, time ×0.25
    python bench/bench_generate.py                    # 1/16/64/256/1024, R=3, K=4, real-time latencies
    python bench/bench_generate.py --ceiling          # the simulated server's own request ceiling
    python bench/bench_generate.py --endpoints 2      # the same capacity split over 2 replicas
                                                      # (llm.base_url a list; slots/2 each)
    python bench/bench_generate.py --quick --levels 256 --transports
                      # also replays the baseline's requests through the OpenAI backend's HTTP
                      # transport (row ``aiohttp``: sagegen.llm.transport, one shared pool), with the
                      # backend's headers, in this same process. (The hand-written ``http1`` it
                      # replaced measured 0.47 ms/call against aiohttp's 0.50 at 256 in flight, one
                      # run, load 1.8: the pool costs about the same, and it never misreads a reply.)
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

from sagegen.config import load_config
from sagegen.ids import derive_seed
from sagegen.loop.session import Components, run_generate

HERE = Path(__file__).resolve().parent
KEY_ENV = "SAGEGEN_BENCH_SIM_KEY"


class Sim:
    """The simulated server in its own process (so its CPU never competes with the client's GIL)."""

    def __init__(
        self, args: argparse.Namespace, scale: float, log: Path | None = None, slots: int | None = None
    ) -> None:
        cmd = [
            sys.executable,
            str(HERE / "sim_llm_server.py"),
            "--slots",
            str(slots or args.slots),
            "--decode",
            str(args.decode),
            "--prefill",
            str(args.prefill),
            "--ttft",
            str(args.ttft),
            "--time-scale",
            str(scale),
        ]
        if log is not None:
            cmd += ["--log", str(log)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("port "):
            self.proc.kill()
            raise SystemExit(f"the simulated server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/stats", timeout=30) as r:
            return json.loads(r.read())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def steady(chains: list[list[dict[str, Any]]], lanes: int, slots: int) -> float | None:
    """Share of the slots busy while every lane had a pair: from the start of the ``lanes``-th pair
    (the ramp is over) to the start of the last one (then lanes run dry); None when pairs <= lanes."""
    starts = sorted(c[0]["t"] for c in chains if c)
    if len(starts) <= lanes:
        return None
    t0, t1 = starts[lanes - 1], starts[-1]
    if t1 <= t0:
        return None
    busy = sum(max(0.0, min(t1, r["s"] + r["service"]) - max(t0, r["s"])) for c in chains for r in c)
    return busy / ((t1 - t0) * min(slots, lanes))


def ideal_span(chains: list[list[float]], lanes: int, slots: int) -> float:
    heap = [0.0] * min(lanes, max(1, len(chains)))
    for chain in chains:
        heapq.heapreplace(heap, heap[0] + sum(chain))
    return max(max(heap), sum(map(sum, chains)) / slots)


class Sims:
    """One simulated server, or several replicas sharing its slots (``--endpoints``), seen as one."""

    def __init__(self, args: argparse.Namespace, scale: float, logs: list[Path] | None = None) -> None:
        n = args.endpoints
        self.sims: list[Sim] = []
        try:
            for i in range(n):
                self.sims.append(Sim(args, scale, logs[i] if logs else None, slots=args.slots // n))
        except BaseException:
            self.close()
            raise
        self.urls = [s.url + "/v1" for s in self.sims]
        self.ports = [s.port for s in self.sims]

    def stats(self) -> dict[str, Any]:
        each = [s.stats() for s in self.sims]
        out = {k: sum(e[k] for e in each) for k in ("requests", "service_s", "cpu_s")}
        out["span_s"] = max(e["last"] for e in each) - min(e["first"] for e in each if e["requests"])
        return out

    def close(self) -> None:
        for s in self.sims:
            s.close()


def chains_from_log(
    logs: list[Path], seed: int, n: int, rounds: int
) -> tuple[list[list[dict[str, Any]]], int]:
    """Logged requests grouped by pair (pair order), each in arrival order; and how many had no pair."""
    owner = {derive_seed(seed, "gen", i, r): i for i in range(n) for r in range(1, rounds + 1)}
    by_pair: dict[int, list[dict[str, Any]]] = defaultdict(list)
    lost = 0
    for log in logs:
        with log.open(encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                idx = owner.get(rec["key"])
                if idx is None:
                    lost += 1
                else:
                    by_pair[idx].append(rec)
    return [sorted(by_pair[i], key=lambda r: r["t"]) for i in sorted(by_pair)], lost


def run_sagegen(sim: Sims, level: int, n: int, args: argparse.Namespace, tmp: Path) -> float:
    url = sim.urls[0] if len(sim.urls) == 1 else "[" + ", ".join(sim.urls) + "]"
    cfg = load_config(
        None,
        [
            "llm.backend=openai",
            f"llm.base_url={url}",
            "llm.model=sim",
            "llm.cache=false",
            f"llm.api_key_env={KEY_ENV}",
            "llm.timeout=900",
            "judge.method=llm",
            f"pipeline.num_seeds={n}",
            f"pipeline.concurrency={level}",
            f"pipeline.rounds={args.rounds}",
            f"pipeline.attempts={args.k}",
            "pipeline.strategy=feedback",
            f"pipeline.seed={args.seed}",
            f"retrieval.index_dir={args.index_dir}",
        ],
    )
    parts = Components.from_config(cfg)  # corpus and index opened before the clock starts
    import aiohttp  # noqa: F401  (imported by the backend's first call: a one-off, not a per-call cost)

    try:
        c = time.process_time()
        run_generate(cfg, tmp / f"run-{level}", parts=parts)
        return time.process_time() - c
    finally:
        parts.close()


async def _baseline(ports: list[int], lanes: int, chains: list[list[dict[str, Any]]]) -> None:
    todo = iter(chains)
    length = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)

    async def lane(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for chain in todo:  # one shared iterator: each lane takes the next pair, as the pipeline does
            for rec in chain:
                data = json.dumps(rec["body"]).encode()
                writer.write(
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: sim\r\nContent-Type: "
                    b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data)
                )
                head = await reader.readuntil(b"\r\n\r\n")
                m = length.search(head)
                reply = json.loads(await reader.readexactly(int(m.group(1)) if m else 0))
                reply["choices"][0]["message"]["content"]  # what an orchestrator reads next
        writer.close()

    await asyncio.gather(*(lane(ports[i % len(ports)]) for i in range(lanes)))  # lanes dealt to replicas


def run_baseline(sim: Sim | Sims, lanes: int, chains: list[list[dict[str, Any]]]) -> float:
    c = time.process_time()
    asyncio.run(_baseline(getattr(sim, "ports", None) or [sim.port], lanes, chains))
    return time.process_time() - c


#: What the OpenAI backend sends with every request (its key is the bench's placeholder).
_HEADERS = {
    "Authorization": "Bearer sim-key",
    "Content-Type": "application/json",
    "Accept": "application/json",
}
TRANSPORTS = ("aiohttp",)


async def _transport(kind: str, ports: list[int], lanes: int, chains: list[list[dict[str, Any]]]) -> None:
    """The baseline's lanes, each request sent through the backend's HTTP transport (``kind``: its row)."""
    from sagegen.llm.transport import Transport

    todo = iter(chains)
    pool = Transport()

    async def lane(port: int) -> None:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        for chain in todo:
            for rec in chain:
                raw = (await pool.request("POST", url, _HEADERS, json.dumps(rec["body"]).encode())).body
                reply = json.loads(raw)
                reply["choices"][0]["message"]["content"]  # what an orchestrator reads next

    await asyncio.gather(*(lane(ports[i % len(ports)]) for i in range(lanes)))
    await pool.aclose()


def run_transport(kind: str, sim: Sims, lanes: int, chains: list[list[dict[str, Any]]]) -> float:
    import aiohttp  # noqa: F401  (a one-off import, not a per-call cost)

    c = time.process_time()
    asyncio.run(_transport(kind, sim.ports, lanes, chains))
    return time.process_time() - c


def row(
    name: str, level: int, st: dict[str, Any], cpu: float, ideal: float, slots: int, stdy: float | None
) -> str:
    span = st["span_s"]
    cap = st["service_s"] / (span * slots)
    reach = st["service_s"] / (span * min(level, slots))
    steady_txt = "-" if stdy is None else f"{100 * stdy:.1f}"
    return (
        f"{name:9} {level:5} {st['requests']:7} {span:8.1f} {ideal:8.1f} {100 * cap:6.1f} "
        f"{100 * reach:7.1f} {steady_txt:>8} {100 * (span / ideal - 1):6.1f} "
        f"{1000 * cpu / st['requests']:8.2f} "
        f"{st['requests'] / span:8.1f} {1000 * st['cpu_s'] / st['requests']:7.2f}"
    )


def ceiling(args: argparse.Namespace) -> None:
    """Requests/s of the simulated server with zero service time, and its CPU per request."""
    sim = Sim(args, 0.0)
    try:
        body = {
            "model": "sim",
            "seed": 1,
            "messages": [
                {"role": "system", "content": "Answer the given question. " * 80},
                {"role": "user", "content": "In which year did the archive catalogued as item G7 open?"},
            ],
        }
        chains = [[{"body": dict(body, seed=i)}] * 20 for i in range(args.ceiling_requests // 20)]
        t = time.monotonic()
        cpu = run_baseline(sim, args.slots, chains)
        wall = time.monotonic() - t
        st = sim.stats()
    finally:
        sim.close()
    print(
        f"ceiling: {st['requests']} requests in {wall:.2f}s = {st['requests'] / wall:,.0f}/s with "
        f"{args.slots} connections; server CPU {1000 * st['cpu_s'] / st['requests']:.3f} ms/request "
        f"(= {st['requests'] / st['cpu_s']:,.0f} requests per CPU-second); client CPU "
        f"{1000 * cpu / st['requests']:.3f} ms/request; load average {os.getloadavg()[0]:.2f}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="Small runs: 1/16/64/256, R=2, K=2, time x0.25.")
    ap.add_argument("--levels", default=None, help="Comma-separated calls in flight.")
    ap.add_argument("--pairs", type=int, default=0, help="Pairs per level (0 = 2 x in flight, 8..2048).")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--k", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slots", type=int, default=256)
    ap.add_argument("--ttft", type=float, default=0.1)
    ap.add_argument("--prefill", type=float, default=20_000.0)
    ap.add_argument("--decode", type=float, default=60.0)
    ap.add_argument("--time-scale", type=float, default=None)
    ap.add_argument("--index-dir", default=".sagegen/indexes", help="The bundled corpus' BM25 index.")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--no-warmup", action="store_true", help="Skip the unmeasured one-pair warm-up run.")
    ap.add_argument("--ceiling", action="store_true", help="Only measure the simulated server's ceiling.")
    ap.add_argument("--ceiling-requests", type=int, default=20_000)
    ap.add_argument(
        "--endpoints",
        type=int,
        default=1,
        help="Simulated replicas sharing --slots (llm.base_url a list of them).",
    )
    ap.add_argument(
        "--transports",
        action="store_true",
        help="Also replay the requests through the backend's HTTP transport (aiohttp).",
    )
    args = ap.parse_args()
    os.environ.setdefault(KEY_ENV, "sim-key")
    if args.ceiling:
        ceiling(args)
        return 0
    q = args.quick
    levels = [int(x) for x in (args.levels or ("1,16,64,256" if q else "1,16,64,256,1024")).split(",")]
    args.rounds = args.rounds or (2 if q else 3)
    args.k = args.k or (2 if q else 4)
    scale = args.time_scale if args.time_scale is not None else (0.25 if q else 1.0)
    print(
        f"cpus {os.cpu_count()}  load average {os.getloadavg()[0]:.2f}  slots {args.slots}  time x{scale}  "
        f"R={args.rounds} K={args.k} feedback, cache off, endpoints {args.endpoints}"
    )
    print(
        "client     inflt   calls   span_s  ideal_s   cap%  reach%  steady%  over%  cpu_ms/c   req/s"
        "  srv_ms/c"
    )
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        if not args.no_warmup:
            sims = Sims(args, 0.0)
            try:
                run_sagegen(sims, 1, 1, args, tmp / "warm-up")
            finally:
                sims.close()
        for level in levels:
            n = args.pairs or (max(2, level) if q else min(2048, max(8, 2 * level)))
            logs = [tmp / f"log-{level}-{i}.jsonl" for i in range(args.endpoints)]
            sims = Sims(args, scale, logs)
            try:
                cpu = run_sagegen(sims, level, n, args, tmp)
                st = sims.stats()
            finally:
                sims.close()
            chains, lost = chains_from_log(logs, args.seed, n, args.rounds)
            ideal = ideal_span([[r["service"] for r in c] for c in chains], level, args.slots)
            name = "sagegen" if args.endpoints == 1 else f"sagegen/{args.endpoints}"
            print(
                row(name, level, st, cpu, ideal, args.slots, steady(chains, level, args.slots))
                + (f"  ({lost} calls not attributed)" if lost else ""),
                flush=True,
            )
            if args.no_baseline:
                continue
            base_logs = [tmp / f"base-{level}-{i}.jsonl" for i in range(args.endpoints)]
            sims = Sims(args, scale, base_logs)
            try:
                cpu = run_baseline(sims, level, chains)
                st = sims.stats()
            finally:
                sims.close()
            replayed, _ = chains_from_log(base_logs, args.seed, n, args.rounds)
            print(
                row(
                    "baseline" if args.endpoints == 1 else f"base/{args.endpoints}",
                    level,
                    st,
                    cpu,
                    ideal,
                    args.slots,
                    steady(replayed, level, args.slots),
                ),
                flush=True,
            )
            base_cpu = cpu / st["requests"]
            for kind in TRANSPORTS if args.transports else ():
                t_logs = [tmp / f"{kind}-{level}-{i}.jsonl" for i in range(args.endpoints)]
                sims = Sims(args, scale, t_logs)
                try:
                    cpu = run_transport(kind, sims, level, chains)
                    st = sims.stats()
                finally:
                    sims.close()
                replayed, _ = chains_from_log(t_logs, args.seed, n, args.rounds)
                print(
                    row(kind, level, st, cpu, ideal, args.slots, steady(replayed, level, args.slots))
                    + f"  ({cpu / st['requests'] / base_cpu:.2f}x baseline)",
                    flush=True,
                )
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
