"""Before/after evaluation: the base policy and a trained checkpoint on the same benchmark slice.

Both runs go through ``sagegen.loop.evaluate.evaluate`` (the harness behind ``sagegen eval``) with the
same retriever, the same seeds and the solver's native tool protocol (the interface ``sagegen
train`` trains on), only ``llm.model`` differs. The equivalent pair of commands is::

    sagegen eval BENCH -s llm.backend=transformers -s llm.model=smollm2 -s solver.protocol=tools \\
        -s judge.method=em --out evals/base
    sagegen eval BENCH -s llm.backend=transformers -s llm.model=runs/train/checkpoint-final \\
        -s solver.protocol=tools -s judge.method=em --out evals/trained

Writes ``comparison.json`` and ``comparison.md`` (a markdown table the report can show).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sagegen.config import Config

METRICS = ("em", "f1", "judge_acc", "pass_at_k", "mean_searches", "answered", "forced", "failed")


def eval_config(cfg: Config, model: str) -> Config:
    """``cfg`` with the policy ``model`` on the transformers backend and the tools protocol."""
    llm = cfg.llm.model_copy(update={"backend": "transformers", "model": model, "cache": False})
    judge = cfg.judge
    if judge.method == "llm" and cfg.judge_llm is None:
        # The solver model is the small policy itself; it is no judge. Without a judge LLM, use EM.
        judge = judge.model_copy(update={"method": "em"})
    solver = cfg.solver.model_copy(update={"protocol": "tools"})
    return cfg.model_copy(update={"llm": llm, "solver_llm": None, "solver": solver, "judge": judge})


def evaluate_model(
    cfg: Config,
    model: str,
    bench: str | Path,
    out_dir: Path,
    *,
    limit: int | None = None,
    k: int = 1,
    seed: int = 0,
    retriever: Any = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    from sagegen.llm.factory import build_llm
    from sagegen.loop.evaluate import evaluate, load_benchmark

    ecfg = eval_config(cfg, model)
    items = load_benchmark(bench, limit)
    llm = build_llm(ecfg.llm)
    judge_llm = build_llm(ecfg.judge_llm) if ecfg.judge.method == "llm" and ecfg.judge_llm else None
    if retriever is None:
        from sagegen.retrieval.factory import build_retriever

        retriever = build_retriever(ecfg)
    return asyncio.run(
        evaluate(
            items,
            llm,
            retriever,
            ecfg,
            out_dir,
            judge_llm=judge_llm,
            k=k,
            concurrency=1,
            seed=seed,
            bench_path=bench,
            restart=True,
            on_result=on_result,
        )
    )


def compare(
    cfg: Config,
    bench: str | Path,
    base: str,
    trained: str | Path,
    out_dir: str | Path,
    *,
    limit: int | None = None,
    k: int = 1,
    seed: int = 0,
    retriever: Any = None,
    watch: Callable[[str, int], Callable[[dict[str, Any]], None]] | None = None,
) -> dict[str, Any]:
    """Evaluate ``base`` and ``trained`` on ``bench``; write and return the comparison.

    ``watch(which, questions)`` is called as each model's evaluation starts ("base", "trained") and
    returns the hook each finished question is given to (the command line's progress lines)."""
    from sagegen.loop.evaluate import load_benchmark

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(load_benchmark(bench, limit))
    runs = {}
    for which, model in (("base", base), ("trained", str(trained))):
        runs[which] = evaluate_model(
            cfg,
            model,
            bench,
            out / f"eval_{which}",
            limit=limit,
            k=k,
            seed=seed,
            retriever=retriever,
            on_result=watch(which, n) if watch is not None else None,
        )
    before, after = runs["base"], runs["trained"]
    table = {m: {"base": before.get(m), "trained": after.get(m)} for m in METRICS}
    result = {
        "bench": str(bench),
        "questions": after.get("questions"),
        "k": k,
        "base_model": base,
        "trained_model": str(trained),
        "retrieval": cfg.retrieval.kind,
        "metrics": table,
    }
    (out / "comparison.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    (out / "comparison.md").write_text(markdown(result), encoding="utf-8")
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Before/after on `{Path(result['bench']).name}` ({result['questions']} questions, K={result['k']}, "
        f"retriever {result['retrieval']})",
        "",
        "| metric | base | trained | change |",
        "|---|---|---|---|",
    ]
    for m, v in result["metrics"].items():
        b, t = v["base"], v["trained"]
        delta = f"{t - b:+.3f}" if isinstance(b, (int, float)) and isinstance(t, (int, float)) else "-"
        lines.append(f"| {m} | {b if b is not None else '-'} | {t if t is not None else '-'} | {delta} |")
    return "\n".join(lines) + "\n"
