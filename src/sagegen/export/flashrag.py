"""FlashRAG benchmark JSONL, so a generated set is itself a benchmark for ``sagegen eval``.

One line per pair: ``{"id", "question", "golden_answers": [answer], "metadata": {...}}`` —
FlashRAG's dataset format (``metadata`` is where FlashRAG keeps extra fields). A directory export
holds ``train.jsonl``, ``test.jsonl`` and, when asked, ``dev.jsonl``: FlashRAG's ``get_dataset``
opens ``dataset_path/{split}.jsonl`` for each split its config names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sagegen.errors import InputError, SagegenError
from sagegen.export.fields import pair_fields
from sagegen.records import QAPair


def flashrag_row(p: QAPair, run_id: str = "") -> dict[str, Any]:
    meta = pair_fields(p, run_id)
    return {
        "id": meta.pop("id"),
        "question": meta.pop("question"),
        "golden_answers": [meta.pop("answer")],
        "metadata": meta,
    }


def split_for_flashrag(
    pairs: Sequence[QAPair], test_fraction: float, dev_fraction: float = 0.0, seed: int = 0
) -> dict[str, list[QAPair]]:
    """Seeded ``train``/``test`` (and ``dev`` when ``dev_fraction`` > 0) splits, fractions of all pairs."""
    from sagegen.export.source import split_pairs

    if not 0 <= dev_fraction < 1 or test_fraction + dev_fraction >= 1:
        raise SagegenError(f"--dev {dev_fraction} with --split {test_fraction}: the two must sum to below 1")
    train, test = split_pairs(pairs, test_fraction, seed)
    out = {"train": train, "test": test}
    if dev_fraction:
        # dev is drawn from what test left, so its share of *all* pairs is dev_fraction
        train, dev = split_pairs(train, dev_fraction / (1 - test_fraction), seed + 1)
        out.update(train=train, dev=dev)
    return out


def write_flashrag(pairs: Sequence[QAPair], path: str | Path, *, run_id: str = "") -> Path:
    from sagegen.export.source import write_jsonl

    path = Path(path)
    write_jsonl(path, (flashrag_row(p, run_id) for p in pairs))
    check_flashrag(path)
    return path


def check_flashrag(path: str | Path) -> int:
    """Every line has a string id and question and a non-empty list of string golden answers."""
    from sagegen.analysis.metrics import load_benchmark

    rows = load_benchmark(path)
    ids = set()
    for no, row in enumerate(rows, 1):
        if not isinstance(row.get("id"), str) or not row["id"]:
            raise InputError("missing or non-string id", path=path, line=no, field="id")
        if row["id"] in ids:
            raise InputError(f"duplicate id {row['id']!r}", path=path, line=no, field="id")
        ids.add(row["id"])
        ga = row.get("golden_answers")
        if not isinstance(ga, list) or not ga or not all(isinstance(a, str) and a for a in ga):
            raise InputError(
                "golden_answers must be a non-empty list of strings",
                path=path,
                line=no,
                field="golden_answers",
            )
    return len(rows)
