"""Search-R1's GRPO batch against ``sagegen serve``, and what a second client sees meanwhile.

One client posts Search-R1's shape, ``{"queries": [2,560 queries], "topk": 3, "return_scores":
true}`` (512 prompts × 5 rollouts), over a loopback socket; a second client sends single-query
requests back to back for as long as the batch runs. Reported: the batch's wall time and the
single-query latencies (median, max), for ``server.chunk_queries`` = one chunk for the whole
batch (what the server did before) and the default (64).

The corpus is the bundled 10,033 Wikipedia leads (BM25); queries are the shared HotpotQA,
MuSiQue and 2Wiki questions, cycled with a counter so none repeats.

    python bench/bench_server_batches.py [--queries 2560] [--chunks 100000,64]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from sagegen.config import ServerConfig, load_config
from sagegen.retrieval.factory import build_retriever
from sagegen.server import create_app, running_server

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SAGEGEN_SHARED_DATA", REPO.parent / "shared" / "data"))


def questions(n: int) -> list[str]:
    qs: list[str] = []
    for name in ("hotpotqa", "musique", "2wiki"):
        path = SHARED / name / "questions.jsonl"
        if path.is_file():
            qs += [json.loads(line)["question"] for line in path.read_text().splitlines()]
    qs = qs or ["capital of France", "who wrote Hamlet"]
    return [f"{qs[i % len(qs)]} {i // len(qs)}" for i in range(n)]


def run(retriever, chunk: int, queries: list[str]) -> dict[str, float]:
    cfg = ServerConfig(chunk_queries=chunk)
    latencies: list[float] = []
    with running_server(create_app(retriever, cfg)) as url:
        httpx.post(f"{url}/retrieve", json={"queries": queries[:64], "topk": 3})  # warm-up
        done = threading.Event()
        out: dict[str, float] = {}

        def big() -> None:
            t = time.perf_counter()
            r = httpx.post(
                f"{url}/retrieve", json={"queries": queries, "topk": 3, "return_scores": True}, timeout=600
            )
            out["batch_s"] = time.perf_counter() - t
            out["status"] = r.status_code
            out["results"] = len(r.json()["result"])
            done.set()

        th = threading.Thread(target=big)
        th.start()
        with httpx.Client(timeout=60) as client:
            while not done.is_set():
                t = time.perf_counter()
                client.post(f"{url}/retrieve", json={"queries": ["Who directed Inception?"], "topk": 3})
                latencies.append(time.perf_counter() - t)
        th.join()
    out.update(single_n=len(latencies), single_p50=statistics.median(latencies), single_max=max(latencies))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=2560)
    ap.add_argument("--chunks", default="100000,64")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, [f"retrieval.index_dir={tmp}"])
        retriever = build_retriever(cfg)
        queries = questions(args.queries)
        print(f"{args.queries} queries, top-3, bundled corpus BM25; load {os.getloadavg()[0]:.2f}")
        print("| chunk_queries | status | results | batch s | single-query n | p50 s | max s |")
        print("|---|---|---|---|---|---|---|")
        for chunk in (int(c) for c in args.chunks.split(",")):
            r = run(retriever, chunk, queries)
            print(
                f"| {chunk} | {r['status']:.0f} | {r['results']:.0f} | {r['batch_s']:.2f} | "
                f"{r['single_n']} | {r['single_p50']:.3f} | {r['single_max']:.3f} |"
            )


if __name__ == "__main__":
    main()
