"""The run ledger's per-pair writes as a run grows to the paper's 20k pairs, against the same ledger
without its indexes (the schema before them), both in this process.

Each pair is written as the pipeline writes it: ``add_pair``, one event (as the ambiguity check
stores its verdict), ``finish_pair`` with a dataset row; the ambiguity check's lookup of the
pair's events (``events(idx)``) comes before its event. Printed per thousand pairs at a few points
of the run: the mean ms of ``finish_pair`` (it checks for a duplicate question and takes the next
``finish_seq`` under the write lock, which every other ``--workers`` process waits on with its event
loop blocked) and of ``events(idx)``, with the unindexed ledger beside them and the ratio.

    python bench/bench_ledger.py              # 20,000 pairs
    python bench/bench_ledger.py --pairs 5000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from sagegen.ledger.store import RunStore
from sagegen.records import QAPair

INDEXES = ("pairs_by_output", "pairs_by_finish", "events_by_pair")


def fill(run_dir: Path, n: int, *, indexed: bool) -> tuple[list[float], list[float]]:
    """Write ``n`` pairs; returns the seconds of each ``finish_pair`` and each ``events(idx)``."""
    store, _ = RunStore.create_or_resume(run_dir, {"bench": 1}, "bench: 1\n")
    if not indexed:
        for name in INDEXES:
            store.conn.execute(f"DROP INDEX {name}")
    store.begin_session()
    plan = "1. Which archive is item G7? The city archive. 2. When did it open? 1571. " * 4
    finish, events = [], []
    try:
        for i in range(n):
            store.add_pair(i, f"doc{i}", 3, "date")
            t = time.perf_counter()
            store.events(i)
            events.append(time.perf_counter() - t)
            store.event("ambiguity", '{"ambiguous": false, "reason": "one archive fits"}', i, 1)
            question = f"In which year did the archive catalogued as item G{i} first open to readers?"
            qa = QAPair(
                id=f"q{i}",
                question=question,
                answer=str(1500 + i % 500),
                answer_type="date",
                target=3,
                difficulty=3,
                avg_at_k=0.5,
                label="pass",
                round=1,
                seed_doc_id=f"doc{i}",
                plan=plan,
            )
            t = time.perf_counter()
            store.finish_pair(i, "pass", 1, qa, "dataset", question.lower())
            finish.append(time.perf_counter() - t)
    finally:
        store.close()
    return finish, events


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=20_000)
    args = ap.parse_args()
    n = max(1000, args.pairs)
    print(f"cpus {os.cpu_count()}  load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}  {n} pairs")
    with tempfile.TemporaryDirectory() as td:
        t = time.perf_counter()
        new = fill(Path(td) / "indexed", n, indexed=True)
        new_s = time.perf_counter() - t
        t = time.perf_counter()
        old = fill(Path(td) / "unindexed", n, indexed=False)
        old_s = time.perf_counter() - t
    print(
        "pairs          finish_pair ms: indexed  unindexed      x  events(idx) ms: indexed  unindexed      x"
    )
    for lo in sorted({0, n // 10, n // 2, n - 1000}):
        hi = lo + 1000

        def mean(xs: list[float], lo: int = lo, hi: int = hi) -> float:
            return 1000 * sum(xs[lo:hi]) / len(xs[lo:hi])

        f_new, f_old, e_new, e_old = mean(new[0]), mean(old[0]), mean(new[1]), mean(old[1])
        print(
            f"{lo:6}-{hi:6}  {f_new:22.3f} {f_old:10.3f} {f_old / f_new:6.1f}  {e_new:22.3f} {e_old:10.3f} "
            f"{e_old / e_new:6.1f}"
        )
    print(
        f"whole run: indexed {new_s:.1f} s, unindexed {old_s:.1f} s ({old_s / new_s:.1f}x); "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
