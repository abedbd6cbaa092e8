"""What ``sagegen estimate`` predicts from a pilot against what a larger run then costs.

Scripted fixture (``fixture:sage``) over the bundled corpus with BM25, S = 2, K = 4, 2 rounds; the
pre-check is off because the fixture's quote questions would all be caught by it. The pilot is seeds
0..P-1; the larger run is a separate run of N seeds (0..N-1, so the pilot's seeds are among them).
The "actual" cost of T accepted pairs is the larger run's total scaled to T.

    python bench/bench_estimate.py --pilot 20 --full 200 --pairs 100
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from sagegen.config import load_config
from sagegen.ledger.store import RunStore
from sagegen.loop.estimate import FIELDS, estimate, pilot_costs
from sagegen.loop.session import run_generate

SETS = [
    "llm.backend=scripted",
    "llm.model=fixture:sage",
    "llm.cache=false",
    "judge.method=em",
    "pipeline.precheck=off",
    "pipeline.target=2",
    "pipeline.attempts=4",
    "pipeline.rounds=2",
    "pipeline.concurrency=4",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pilot", type=int, default=20)
    ap.add_argument("--full", type=int, default=200)
    ap.add_argument("--pairs", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        runs = {}
        for name, n in (("pilot", args.pilot), ("full", args.full)):
            cfg = load_config(None, [*SETS, f"retrieval.index_dir={tmp / 'idx'}", f"pipeline.num_seeds={n}"])
            run_generate(cfg, tmp / name)
            runs[name] = tmp / name
        costs, _ = pilot_costs(runs["pilot"])
        pred = estimate(costs, args.pairs, price_in=0.30, price_out=2.50)
        with RunStore.open(runs["full"]) as store:
            usage = store.llm_usage()
            acc = store.counts().get("output.dataset", 0)
        full_costs, _ = pilot_costs(runs["full"])
    total = {k: sum(getattr(c, k) for c in full_costs) for k in FIELDS}
    assert total["calls"] == sum(u["calls"] for u in usage.values())
    scale = args.pairs / acc
    print(
        f"pilot {args.pilot} seeds: {pred['pilot_accepted']} accepted; larger run {args.full} seeds: "
        f"{acc} accepted; target {args.pairs} accepted pairs"
    )
    print("| quantity | predicted | 90% interval | actual (larger run, scaled) |\n|---|---|---|---|")
    for k in ("seeds", "calls", "prompt_tokens", "completion_tokens", "cost"):
        actual = scale * (
            args.full
            if k == "seeds"
            else total[k]
            if k in total
            else total["prompt_tokens"] / 1e6 * 0.30 + total["completion_tokens"] / 1e6 * 2.50
        )
        lo, hi = pred["interval"][k]
        fmt = "{:,.2f}" if k == "cost" else "{:,.0f}"
        print(
            f"| {k} | {fmt.format(pred['estimate'][k])} | {fmt.format(lo)} – {fmt.format(hi)} | "
            f"{fmt.format(actual)} |"
        )


if __name__ == "__main__":
    main()
