"""``sagegen export RUN --format verl|sft|hf|flashrag``: pick pairs, split, write, validate."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sagegen.errors import SagegenError
from sagegen.export.source import load_pairs, select, split_pairs

FORMATS = ("verl", "sft", "hf", "flashrag")


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
    if fmt == "verl":
        from sagegen.export.verl import write_verl

        train, test = split_pairs(pairs, split, seed)
        res = write_verl(train, test, out_dir, data_source=data_source, run_id=run.run_id)
        summary.update(
            files={k: str(v) for k, v in res.files.items()}, counts=res.counts, reward=str(res.reward_path)
        )
    elif fmt == "hf":
        from sagegen.export.hf import write_hf

        train, test = split_pairs(pairs, split, seed)
        analysis = None
        if run.has_ledger:
            from sagegen.analysis.analyze import analyze_pairs
            from sagegen.store import RunStore

            with RunStore.open(src) as store:
                analysis = analyze_pairs(list(store.pairs()), dup_method="jaccard")
        res2 = write_hf(
            train,
            test,
            out_dir,
            config=run.config,
            analysis=analysis,
            run_id=run.run_id,
            name=f"sagegen: {run.run_id or src.name}",
            selection={
                "labels": "/".join(labels),
                "min difficulty": min_difficulty,
                "split": split,
                "seed": seed,
            },
        )
        summary.update(
            files={k: str(v) for k, v in res2["files"].items()}, counts=res2["counts"], card=str(res2["card"])
        )
    elif fmt == "flashrag":
        from sagegen.export.flashrag import write_flashrag

        if out_dir.suffix == ".jsonl":  # one named file: every selected pair, a benchmark of the whole run
            write_flashrag(pairs, out_dir, run_id=run.run_id)
            summary.update(out=str(out_dir), files={"all": str(out_dir)}, counts={"all": len(pairs)})
        else:  # FlashRAG's get_dataset reads DIR/{train,dev,test}.jsonl
            from sagegen.export.flashrag import split_for_flashrag

            splits = split_for_flashrag(pairs, split, dev_split, seed)
            files = {name: write_flashrag(part, out_dir / f"{name}.jsonl", run_id=run.run_id)
                     for name, part in splits.items()}
            summary.update(files={k: str(v) for k, v in files.items()},
                           counts={k: len(v) for k, v in splits.items()})
    else:
        if not run.has_ledger:
            raise SagegenError(
                f"{src}: SFT export needs the run's ledger (ledger.sqlite) for the trajectories"
            )
        from sagegen.export.sft import SFTStats, sft_rows, write_sft
        from sagegen.store import RunStore

        stats = SFTStats()
        with RunStore.open(src) as store:
            rows = sft_rows(
                store, {p.id for p in pairs}, style=sft_style, clean=clean, per_pair=per_pair, stats=stats
            )
        path = write_sft(rows, out_dir, name=f"sft_{sft_style}.jsonl")
        summary.update(
            files={"sft": str(path)},
            counts={
                "examples": stats.examples,
                "pairs": stats.pairs,
                "pairs_with_trajectory": stats.pairs_with_trajectory,
            },
            skipped=stats.skipped,
        )
    return summary
