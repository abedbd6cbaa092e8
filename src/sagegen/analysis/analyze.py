"""``sagegen analyze RUN``: every metric of :mod:`sagegen.analysis.metrics` over a run, as one dict.

The result is written to ``RUN/analysis.json`` (and read back by the report and the HF card).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sagegen.analysis import metrics as M
from sagegen.store import PairRecord, RunStore

ANALYSIS_FILE = "analysis.json"
#: Bumped when the analysis gains or changes fields, so a stale analysis.json is recomputed.
ANALYSIS_VERSION = 3


def saved_analysis(run_dir: str | Path) -> dict[str, Any] | None:
    """``RUN/analysis.json`` if it is current: same version and newer than the ledger's last write."""
    run_dir = Path(run_dir)
    f = run_dir / ANALYSIS_FILE
    if not f.is_file():
        return None
    # Readers touch ledger.sqlite-shm (read marks), so only the database and its WAL count as writes.
    ledger = [run_dir / "ledger.sqlite", run_dir / "ledger.sqlite-wal"]
    ledger_mtime = max((p.stat().st_mtime for p in ledger if p.is_file()), default=0.0)
    if f.stat().st_mtime < ledger_mtime:
        return None
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and data.get("analysis_version") == ANALYSIS_VERSION else None


def funnel(pairs: list[PairRecord]) -> dict[str, int]:
    """Where every seed ended, by the file it went to (``sagegen.outcomes``, as status and the summary)."""
    from sagegen.outcomes import outcome_counts

    return outcome_counts((p.state, p.output) for p in pairs)


def analyze_pairs(
    pairs: list[PairRecord],
    *,
    bench: str | Path | None = None,
    dup_method: str = "auto",
    dup_threshold: float | None = None,
) -> dict[str, Any]:
    from sagegen.analysis.duplicates import near_duplicates

    finals = [p for p in pairs if p.qa is not None]
    accepted = [p.qa for p in pairs if p.qa is not None and p.output == "dataset"]
    result: dict[str, Any] = {
        "funnel": funnel(pairs),
        "by_round": M.by_round(pairs),
        "round_verdicts": M.round_verdicts(pairs),
        "by_target": M.by_target(pairs),
        "difficulty_agreement": M.difficulty_agreement(pairs),
        "answer_types": M.answer_types(pairs),
        "duplicates": near_duplicates(
            [(q.id, q.question) for q in accepted], method=dup_method, threshold=dup_threshold
        ),
        "leaks": M.answer_leaks((p.qa.id, p.qa.question, p.qa.answer) for p in finals if p.qa),
    }
    from sagegen.analysis.diversity import question_diversity

    # Diversity of the dataset (accepted pairs); of every finished question while fewer than 2 are accepted.
    pool = [p.qa for p in pairs if p.qa is not None and p.output == "dataset"]
    over = "accepted" if len(pool) >= 2 else "finished"
    if over == "finished":
        pool = [p.qa for p in finals if p.qa is not None]
    result["diversity"] = {
        "over": over,
        **question_diversity(
            [(q.id, q.question, q.seed_doc_id) for q in pool],
            result["duplicates"],
            method="embedding" if result["duplicates"]["method"] == "embedding" else "terms",
        ),
    }
    if bench is not None:
        rows = M.load_benchmark(bench)
        c = M.contamination([(p.qa.id, p.qa.question) for p in finals if p.qa], rows)
        c["benchmark"] = str(bench)
        result["contamination"] = c
    return result


def analyze_run(
    run_dir: str | Path,
    *,
    bench: str | Path | None = None,
    labels: bool = False,
    dup_method: str = "auto",
    dup_threshold: float | None = None,
    write: bool = True,
    label_llm: Any = None,
) -> dict[str, Any]:
    """Analyse a run directory; writes ``RUN/analysis.json`` unless ``write`` is False."""
    run_dir = Path(run_dir)
    with RunStore.open(run_dir) as store:
        pairs = list(store.pairs())
        result = {
            "analysis_version": ANALYSIS_VERSION,
            "run_dir": str(run_dir),
            "run_id": next((p.qa.run_id for p in pairs if p.qa and p.qa.run_id), run_dir.name),
            "config": store.config,
            "counts": store.counts(),
            "llm_usage": store.llm_usage(),
            **analyze_pairs(pairs, bench=bench, dup_method=dup_method, dup_threshold=dup_threshold),
        }
        if labels:
            from sagegen.analysis.labels import label_run

            result["labels"] = label_run(store, pairs, llm=label_llm)
    if write:
        (run_dir / ANALYSIS_FILE).write_text(
            json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8"
        )
    return result


def _f(x: Any, digits: int = 1) -> str:
    if x is None:
        return "–"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def print_analysis(result: dict[str, Any], console: Any) -> None:
    """Rich tables of the main numbers (the JSON has everything)."""
    from rich.table import Table

    fun = result["funnel"]
    console.print(
        f"[bold]{result.get('run_id', '')}[/] — {fun['seeds']} seeds: {fun['accepted']} accepted, "
        f"{fun['duplicate']} duplicates, {fun['too_easy']} too easy, {fun['incorrect']} incorrect, "
        f"{fun['failed']} generator failures, {fun['unfinished']} unfinished"
    )
    t = Table(title="State after each round (paper's table)")
    for col in (
        "round",
        "pairs",
        "% correct",
        "% pass",
        "Avg@K",
        "mean #search",
        "searches/attempt",
        "attempts",
    ):
        t.add_column(col, justify="right")
    for r, m in result["by_round"].items():
        t.add_row(
            str(r),
            str(m["n"]),
            _f(m["pct_correct"]),
            _f(m["pct_pass"]),
            _f(m["avg_at_k"]),
            _f(m["mean_searches"], 2),
            _f(m["mean_attempt_searches"], 2),
            _f(m.get("mean_attempts"), 2),
        )
    console.print(t)
    t = Table(title="Final state by target S")
    for col in (
        "target S",
        "pairs",
        "% correct",
        "% pass",
        "Avg@K",
        "mean difficulty",
        "difficulty histogram",
    ):
        t.add_column(col, justify="right")
    for s, m in result["by_target"].items():
        hist = " ".join(f"{k}:{v}" for k, v in m["difficulty_hist"].items())
        t.add_row(
            str(s),
            str(m["n"]),
            _f(m["pct_correct"]),
            _f(m["pct_pass"]),
            _f(m["avg_at_k"]),
            _f(m["mean_searches"], 2),
            hist,
        )
    console.print(t)
    ag = result["difficulty_agreement"]
    console.print(
        f"difficulty agreement over {ag['n']} correct pairs: exact {_f(ag['exact'], 2)}, "
        f"≥ target {_f(ag['at_least_target'], 2)}, MAE {_f(ag['mae'], 2)}, "
        f"Spearman {_f(ag['spearman'], 2)}"
    )
    mix = ", ".join(
        f"{k} {v['n']} ({_f(100 * v['share'] if v['share'] is not None else None)}%, "
        f"pass {_f(v['pct_pass'])}%)"
        for k, v in result["answer_types"].items()
    )
    console.print(f"answer types: {mix or '–'}")
    d = result["duplicates"]
    console.print(
        f"duplicates among {d['n']} accepted ({d['method']}, ≥ {d['threshold']}): "
        f"{d['exact_duplicates']} exact, {len(d['near_pairs'])} near pairs"
    )
    console.print(f"answer-in-question leaks: {len(result['leaks'])}")
    dv = result.get("diversity")
    if dv:
        console.print(
            f"diversity of {dv['n']} {dv['over']} questions ({dv['method'] or '–'}): "
            f"spread {_f(dv['spread'], 3)}, "
            f"mean nearest-neighbour similarity {_f(dv['mean_nn_similarity'], 3)}, "
            f"{dv['distinct_entities']} distinct of {dv['entities']} entity mentions, "
            f"{dv['distinct_seeds']} distinct seed passages"
        )
    if "contamination" in result:
        c = result["contamination"]
        console.print(
            f"contamination vs {c['benchmark']} ({c['benchmark_size']} questions): {c['flagged']} of "
            f"{c['n']} flagged ({c['exact']} exact, {c['ngram']}-gram overlap ≥ {c['threshold']})"
        )
    if "labels" in result:
        lab = result["labels"]
        for kind in ("strategies", "easy_causes", "incorrect_causes"):
            if lab.get(kind):
                shares = ", ".join(f"{k} {_f(v, 0)}%" for k, v in lab[kind]["pct"].items())
                console.print(f"{kind.replace('_', ' ')} (n={lab[kind]['n']}): {shares}")
