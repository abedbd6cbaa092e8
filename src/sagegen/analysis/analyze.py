"""``sagegen analyze RUN``: every metric of :mod:`sagegen.analysis.metrics` over a run, as one dict.

The result is written to ``RUN/analysis.json`` (and read back by the report and the HF card).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sagegen.analysis import metrics as M
from sagegen.ledger.store import PairRecord, RunStore

ANALYSIS_FILE = "analysis.json"
#: Bumped when the analysis gains or changes fields, so a stale analysis.json is recomputed.
ANALYSIS_VERSION = 5


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
    """Where every seed ended, by the file it went to (``sagegen.ledger.outcomes``, as status and the
    summary)."""
    from sagegen.ledger.outcomes import outcome_counts

    return outcome_counts((p.state, p.output) for p in pairs)


def answer_check(pairs: list[PairRecord]) -> dict[str, Any]:
    """Requested answer type against the type the answer was found to be, over the final pairs.

    The found type is ``QAPair.answer_type_found`` where the run recorded one (``None`` or absent: not
    checked); pairs without it count as requested only, so a run from before the check reads as unchecked.
    """
    out: dict[str, Any] = {"pairs": 0, "checked": 0, "mismatched": 0}
    out.update(requested={}, found={}, by_type={})
    for p in pairs:
        if p.qa is None:
            continue
        want, found = p.qa.answer_type, getattr(p.qa, "answer_type_found", None)
        out["pairs"] += 1
        out["requested"][want] = out["requested"].get(want, 0) + 1
        if found is None:
            continue
        row = out["by_type"].setdefault(want, {"checked": 0, "mismatched": 0})
        out["found"][found] = out["found"].get(found, 0) + 1
        out["checked"] += 1
        row["checked"] += 1
        if found != want:
            out["mismatched"] += 1
            row["mismatched"] += 1
    return out


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
        "answer_check": answer_check(pairs),
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


def _imported(run_dir: Path) -> dict[str, Any]:
    """``{"import": ...}`` for a run made by ``sagegen import`` (its ``import.json``), else nothing."""
    from sagegen.ledger.store import IMPORT_FILE

    f = run_dir / IMPORT_FILE
    if not f.is_file():
        return {}
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return {"import": data} if isinstance(data, dict) else {}


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
            "llm_replies": store.reply_stats(),
            **_imported(run_dir),
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
