"""``sagegen export RUN --format verl|sft|hf|flashrag``: pick pairs, split, write, validate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sagegen.errors import SagegenError
from sagegen.export.source import RunPairs, load_pairs, select, split_pairs
from sagegen.records import QAPair

FORMATS = ("verl", "sft", "hf", "flashrag")


@dataclass(frozen=True)
class _Options:
    split: float
    seed: int
    labels: Sequence[str]
    min_difficulty: int
    data_source: str
    sft_style: str
    clean: bool
    per_pair: int | None
    dev_split: float


def export_run(
    source: str | Path,
    fmt: str,
    out: str | Path | None = None,
    *,
    split: float = 0.1,
    min_difficulty: int = 2,
    seed: int = 0,
    labels: Sequence[str] = ("pass",),
    data_source: str = "sagegen",
    sft_style: str = "chat",
    clean: bool = True,
    per_pair: int | None = None,
    dev_split: float = 0.0,
) -> dict[str, Any]:
    """Export a run (directory) or a QAPair JSONL file; returns a summary (paths and counts)."""
    if fmt not in FORMATS:
        raise SagegenError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    opts = _Options(split, seed, labels, min_difficulty, data_source, sft_style, clean, per_pair, dev_split)
    run = load_pairs(source, labels)
    pairs = select(run.pairs, min_difficulty=min_difficulty)
    src = Path(source)
    out_dir = Path(out) if out else (src if src.is_dir() else src.parent) / "export" / fmt
    summary: dict[str, Any] = {
        "format": fmt,
        "source": str(src),
        "out": str(out_dir),
        "available": len(run.pairs),
        "selected": len(pairs),
        "min_difficulty": min_difficulty,
        "labels": list(labels),
    }
    if not pairs:
        raise SagegenError(
            f"{src}: no pairs to export ({len(run.pairs)} with labels {list(labels)}, none with difficulty ≥ "
            f"{min_difficulty}); lower --min-difficulty or add --include too_easy"
        )
    writer = {"verl": _verl, "hf": _hf, "flashrag": _flashrag, "sft": _sft}[fmt]
    summary.update(writer(run, pairs, out_dir, opts))
    return summary


def _verl(run: RunPairs, pairs: list[QAPair], out_dir: Path, o: _Options) -> dict[str, Any]:
    from sagegen.export.verl import write_verl

    train, test = split_pairs(pairs, o.split, o.seed)
    corpus = {k: run.config[k] for k in ("corpus", "retrieval") if isinstance(run.config.get(k), dict)}
    res = write_verl(
        train, test, out_dir, data_source=o.data_source, run_id=run.run_id, corpus=corpus or None
    )
    return {
        "files": {k: str(v) for k, v in res.files.items()},
        "counts": res.counts,
        "reward": str(res.reward_path),
    }


def _hf(run: RunPairs, pairs: list[QAPair], out_dir: Path, o: _Options) -> dict[str, Any]:
    from sagegen.export.hf import write_hf

    train, test = split_pairs(pairs, o.split, o.seed)
    analysis = None
    if run.has_ledger:
        from sagegen.analysis.analyze import analyze_pairs
        from sagegen.ledger.store import RunStore

        with RunStore.open(run.source) as store:
            analysis = analyze_pairs(list(store.pairs()), dup_method="jaccard")
    selection = {
        "labels": "/".join(o.labels),
        "min difficulty": o.min_difficulty,
        "split": o.split,
        "seed": o.seed,
    }
    res = write_hf(
        train,
        test,
        out_dir,
        config=run.config,
        analysis=analysis,
        run_id=run.run_id,
        name=f"sagegen: {run.run_id or run.source.name}",
        selection=selection,
    )
    return {
        "files": {k: str(v) for k, v in res["files"].items()},
        "counts": res["counts"],
        "card": str(res["card"]),
    }


def _flashrag(run: RunPairs, pairs: list[QAPair], out_dir: Path, o: _Options) -> dict[str, Any]:
    from sagegen.export.flashrag import split_for_flashrag, write_flashrag

    if out_dir.suffix == ".jsonl":  # one named file: every selected pair, a benchmark of the whole run
        write_flashrag(pairs, out_dir, run_id=run.run_id)
        return {"out": str(out_dir), "files": {"all": str(out_dir)}, "counts": {"all": len(pairs)}}
    # FlashRAG's get_dataset reads DIR/{train,dev,test}.jsonl
    splits = split_for_flashrag(pairs, o.split, o.dev_split, o.seed)
    files = {
        name: write_flashrag(part, out_dir / f"{name}.jsonl", run_id=run.run_id)
        for name, part in splits.items()
    }
    return {"files": {k: str(v) for k, v in files.items()}, "counts": {k: len(v) for k, v in splits.items()}}


def _sft(run: RunPairs, pairs: list[QAPair], out_dir: Path, o: _Options) -> dict[str, Any]:
    if not run.has_ledger:
        raise SagegenError(
            f"{run.source}: SFT export needs the run's ledger (ledger.sqlite) for the trajectories"
        )
    from sagegen.export.sft import SFTStats, sft_rows, write_sft
    from sagegen.ledger.store import RunStore

    stats = SFTStats()
    with RunStore.open(run.source) as store:
        rows = sft_rows(
            store, {p.id for p in pairs}, style=o.sft_style, clean=o.clean, per_pair=o.per_pair, stats=stats
        )
    path = write_sft(rows, out_dir, name=f"sft_{o.sft_style}.jsonl")
    counts = {
        "examples": stats.examples,
        "pairs": stats.pairs,
        "pairs_with_trajectory": stats.pairs_with_trajectory,
    }
    return {"files": {"sft": str(path)}, "counts": counts, "skipped": stats.skipped}
