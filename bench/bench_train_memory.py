"""Peak memory of the SFT warm-up with and without activation checkpointing (SmolLM2-135M, CPU).

Builds warm-up trajectories the way ``sagegen train`` does (live BM25 searches over a QA file's
passages), runs ``sft_warmup`` for ``--steps`` steps and prints the process's peak RSS. Run it once
per setting (each in its own process, so the peaks do not mix)::

    python bench/bench_train_memory.py --steps 2                    # checkpointing on (the default)
    python bench/bench_train_memory.py --steps 2 --no-checkpointing
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SAGEGEN_SHARED_DATA", ROOT.parent / "shared" / "data"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED / "hotpotqa" / "questions.jsonl")
    ap.add_argument("--corpus", type=Path, default=SHARED / "hotpotqa" / "corpus.jsonl")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--no-checkpointing", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_train_memory"))
    args = ap.parse_args()

    import torch

    from sagegen.config import load_config
    from sagegen.llm.hf_models import load_policy
    from sagegen.retrieval.factory import build_retriever
    from sagegen.train.data import load_rows
    from sagegen.train.sft import build_warmup, sft_warmup

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [x for x in args.data.read_text(encoding="utf-8").splitlines() if x.strip()][: args.rows]
    data = args.out / "train.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = load_config(
        None,
        [
            f"corpus.path={json.dumps(str(args.corpus))}",
            "retrieval.kind=bm25",
            f"retrieval.index_dir={json.dumps(str(args.out / 'indexes'))}",
        ],
    )
    rows = load_rows(data, max_searches=4)
    convs = build_warmup(rows, build_retriever(cfg), topk=2, passage_chars=150, max_searches=4)
    model, tok = load_policy(args.model, cache_dir=cfg.train.model_cache_dir)
    t0 = time.perf_counter()
    losses = sft_warmup(
        model, tok, convs, steps=args.steps, batch_size=args.batch, checkpointing=not args.no_checkpointing
    )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "checkpointing": not args.no_checkpointing,
                "steps": args.steps,
                "batch": args.batch,
                "losses": [round(x, 4) for x in losses],
                "seconds": round(time.perf_counter() - t0, 1),
                "peak_rss_mb": round(peak_mb),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
