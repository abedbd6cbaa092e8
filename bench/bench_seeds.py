"""Stratified seeds: clustering time on the bundled corpus (10,033 passages) and a 100k-passage one,
and how many topic clusters N seeds reach, uniform vs stratified.

    python bench/bench_seeds.py                    # bundled corpus
    python bench/bench_seeds.py --replicate 100000 # its passages repeated (ids made unique) to 100k
"""

from __future__ import annotations

import argparse
import random
import time

from sagegen.corpus import load_corpus
from sagegen.loop.seeds import StratifiedSeeds
from sagegen.records import Doc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicate", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=100)
    args = ap.parse_args()
    docs = load_corpus()
    if args.replicate:
        docs = [
            Doc(id=f"{i}", title=docs[i % len(docs)].title, text=docs[i % len(docs)].text)
            for i in range(args.replicate)
        ]
    t0 = time.perf_counter()
    strata = StratifiedSeeds(docs, seed=0)
    secs = time.perf_counter() - t0
    label = {i: c for c, members in enumerate(strata.members) for i in members}
    strat = {label[strata.pick(i, random.Random(i))] for i in range(args.seeds)}
    unif = {label[random.Random(i).randrange(len(docs))] for i in range(args.seeds)}
    sizes = sorted(strata.sizes())
    print(f"passages {len(docs):,}  clusters {len(sizes)} ({strata.vectors} vectors)  build {secs:.1f} s")
    print(f"cluster sizes: smallest {sizes[:3]}, largest {sizes[-3:]}")
    print(f"{args.seeds} seeds reach {len(unif)} clusters uniformly, {len(strat)} stratified")


if __name__ == "__main__":
    main()
