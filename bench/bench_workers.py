"""``sagegen generate --workers N`` against the simulated server (bench_generate.py's), where one process is
CPU-bound: the same pairs with 1 and 2 workers (and whatever ``--workers`` lists), side by side.

The server gets as many slots as calls in flight, so it is never the limit; one process then tops out
at one core (its client CPU per call times the calls), which is what more workers are for (goal:
2 workers >= 1.8x one worker's requests/s on a machine with 2 free cores). Columns as in
bench_generate.py, plus ``x1``: requests/s against the first row; ``max_x1``: the most ``x1`` this
machine allows, min(workers / client, cores / (client + server)) in requests/s from the row's own CPU
per call, against the first row (on 2 cores with the server beside them it is well below 2: the goal
needs cores to spare); ``cpu ms/call`` counts the parent and its worker processes (they are reaped
before it is read); ``cores``: that CPU over the wall time, the cores the run got (about 1.0 for one
CPU-bound process on an idle machine).

    python bench/bench_workers.py                      # 512 in flight and slots, 512 pairs, R=2 K=2, x0.25
    python bench/bench_workers.py --level 1024 --pairs 1024 --workers 1,2,4
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from bench_generate import KEY_ENV, Sim, chains_from_log, ideal_span, row, steady
from sagegen.config import load_config
from sagegen.loop.session import Components, run_generate


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run(sim: Sim, args: argparse.Namespace, workers: int, tmp: Path) -> tuple[float, float]:
    """One run; returns (CPU seconds of this process and its workers, wall seconds)."""
    cfg = load_config(
        None,
        [
            "llm.backend=openai",
            f"llm.base_url={sim.url}/v1",
            "llm.model=sim",
            "llm.cache=false",
            f"llm.api_key_env={KEY_ENV}",
            "llm.timeout=900",
            "judge.method=llm",
            f"pipeline.num_seeds={args.pairs}",
            f"pipeline.concurrency={args.level}",
            f"pipeline.rounds={args.rounds}",
            f"pipeline.attempts={args.k}",
            "pipeline.strategy=feedback",
            f"pipeline.seed={args.seed}",
            f"retrieval.index_dir={args.index_dir}",
            f"pipeline.workers={workers}",
        ],
    )
    parts = Components.from_config(cfg)  # this process's corpus and index, before the clock
    import aiohttp  # noqa: F401  (the backend's first call would import it)

    try:
        c, k, t = time.process_time(), children_cpu(), time.monotonic()
        run_generate(cfg, tmp / f"run-{workers}", parts=parts)
        return time.process_time() - c + children_cpu() - k, time.monotonic() - t
    finally:
        parts.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--level", type=int, default=512, help="Calls in flight (pipeline.concurrency).")
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--workers", default="1,2", help="Comma-separated worker counts.")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slots", type=int, default=0, help="Server slots (0 = as many as in flight).")
    ap.add_argument("--ttft", type=float, default=0.1)
    ap.add_argument("--prefill", type=float, default=20_000.0)
    ap.add_argument("--decode", type=float, default=60.0)
    ap.add_argument("--time-scale", type=float, default=0.25)
    ap.add_argument("--index-dir", default=".sagegen/indexes", help="The bundled corpus' BM25 index.")
    args = ap.parse_args()
    args.slots = args.slots or args.level
    os.environ.setdefault(KEY_ENV, "sim-key")
    print(
        f"cpus {os.cpu_count()}  load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}  "
        f"slots {args.slots}  time x{args.time_scale}  R={args.rounds} K={args.k} feedback, cache off, "
        f"{args.pairs} pairs"
    )
    print(
        "workers   inflt   calls   span_s  ideal_s   cap%  reach%  steady%  over%  cpu_ms/c   req/s"
        "  srv_ms/c     x1  max_x1  wall_s  cores"
    )
    cores = len(os.sched_getaffinity(0))
    first = None
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for w in [int(x) for x in args.workers.split(",")]:
            log = tmp / f"log-{w}.jsonl"
            sim = Sim(args, args.time_scale, log)
            try:
                cpu, wall = run(sim, args, w, tmp)
                st = sim.stats()
            finally:
                sim.close()
            chains, _ = chains_from_log([log], args.seed, args.pairs, args.rounds)
            ideal = ideal_span([[r["service"] for r in c] for c in chains], args.level, args.slots)
            rate = st["requests"] / st["span_s"]
            first = first or rate
            # What this machine allows: w processes at most w cores, and the server's CPU comes out of
            # the same cores: requests/s <= min(w / client, cores / (client + server)), CPU per call.
            client, server = cpu / st["requests"], st["cpu_s"] / st["requests"]
            bound = min(w / client, cores / (client + server)) / first
            print(
                row(
                    f"{w} worker" + ("s" if w > 1 else ""),
                    args.level,
                    st,
                    cpu,
                    ideal,
                    args.slots,
                    steady(chains, args.level, args.slots),
                )
                + f"  {rate / first:5.2f}  {bound:6.2f}  {wall:6.1f}  {cpu / wall:5.2f}",
                flush=True,
            )
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
