"""Where exports read pairs from: a run directory (ledger or its JSONL views) or one JSONL file.

Shared by every exporter so that selection (which labels, minimum difficulty, deduplication)
means the same thing in the verl parquet, the HF dataset, the FlashRAG file and the SFT set.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sagegen.errors import InputError, SagegenError
from sagegen.ledger.store import CONFIG_FILE, LEDGER, OUTPUT_FILES
from sagegen.records import QAPair

#: Which output file holds each verdict label.
LABEL_FILES = {
    "pass": OUTPUT_FILES["dataset"],
    "too_easy": OUTPUT_FILES["too_easy"],
    "incorrect": OUTPUT_FILES["unsolved"],
    "ambiguous": OUTPUT_FILES["ambiguous"],  # passes the ambiguity check flagged (sagegen.verdict.agreement)
}


@dataclass
class RunPairs:
    """The pairs of a run (or file), where they came from, and the run's config when known."""

    source: Path
    pairs: list[QAPair]
    config: dict[str, Any] = field(default_factory=dict)
    has_ledger: bool = False

    @property
    def run_id(self) -> str:
        ids = {p.run_id for p in self.pairs if p.run_id}
        return next(iter(ids)) if len(ids) == 1 else (self.source.name if self.source.is_dir() else "")


def read_pairs_jsonl(path: Path) -> list[QAPair]:
    """QAPair lines; a bad line raises ``InputError`` naming file, line and field."""
    out = []
    with path.open(encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(QAPair.model_validate_json(line))
            except ValidationError as e:
                err = e.errors()[0]
                loc = ".".join(str(x) for x in err["loc"]) or None
                raise InputError(err["msg"], path=path, line=no, field=loc) from None
    return out


def load_pairs(source: str | Path, labels: Sequence[str] = ("pass",)) -> RunPairs:
    """Pairs with the given final labels from a run directory, or every pair of a JSONL file.

    In a run directory the ledger is the source of truth (duplicates it marked are skipped); the
    JSONL views are read when a directory has no ledger (e.g. a copied dataset folder).
    """
    src = Path(source)
    bad = set(labels) - set(LABEL_FILES)
    if bad:
        raise SagegenError(f"unknown label(s) {sorted(bad)}; choose from {sorted(LABEL_FILES)}")
    if src.is_file():
        pairs = [p for p in read_pairs_jsonl(src) if p.label in labels]
        return RunPairs(src, pairs)
    if not src.is_dir():
        raise InputError("no such run directory or JSONL file", path=src)
    config = _read_config(src)
    if (src / LEDGER).is_file():
        from sagegen.ledger.store import RunStore

        with RunStore.open(src) as store:
            wanted = {k for k, v in OUTPUT_FILES.items() if v in {LABEL_FILES[lbl] for lbl in labels}}
            pairs = [p.qa for p in store.pairs() if p.qa is not None and p.output in wanted]
            return RunPairs(src, pairs, config or store.config, has_ledger=True)
    pairs = []
    for lbl in labels:
        f = src / LABEL_FILES[lbl]
        if f.is_file():
            pairs.extend(read_pairs_jsonl(f))
    if not pairs and not any((src / LABEL_FILES[lbl]).is_file() for lbl in labels):
        raise InputError(
            f"not a sagegen run directory (no {LEDGER} and no {OUTPUT_FILES['dataset']})", path=src
        )
    return RunPairs(src, pairs, config)


def _read_config(run_dir: Path) -> dict[str, Any]:
    import yaml

    f = run_dir / CONFIG_FILE
    if not f.is_file():
        return {}
    try:
        data = yaml.safe_load(f.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def select(pairs: Iterable[QAPair], *, min_difficulty: int = 0, dedupe: bool = True) -> list[QAPair]:
    """Pairs with measured difficulty ≥ ``min_difficulty``, first occurrence of each normalised
    question kept. Unknown difficulty fails any minimum > 0, except for a pair its source accepted
    without recording it (``acceptance="unknown"``, ``sagegen import``): the release applied its own
    step filter when it accepted the pair, and that acceptance is all the file records."""
    from sagegen.verdict.reward import normalize_answer

    seen: set[str] = set()
    out = []
    for p in pairs:
        known = p.difficulty is not None or p.acceptance != "unknown"
        if min_difficulty > 0 and known and (p.difficulty is None or p.difficulty < min_difficulty):
            continue
        key = normalize_answer(p.question)
        if dedupe and key in seen:
            continue
        seen.add(key)
        out.append(p)
    return out


def split_pairs(
    pairs: Sequence[QAPair], test_fraction: float, seed: int = 0
) -> tuple[list[QAPair], list[QAPair]]:
    """Seeded random train/test split; at least one pair each side when ``test_fraction`` > 0
    and there are two or more pairs. Order inside each split follows the input order."""
    if not 0 <= test_fraction < 1:
        raise SagegenError(f"--split must be in [0, 1), got {test_fraction}")
    n = len(pairs)
    if test_fraction == 0 or n < 2:
        return list(pairs), []
    n_test = min(n - 1, max(1, round(n * test_fraction)))
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    test_idx = set(idx[:n_test])
    return [p for i, p in enumerate(pairs) if i not in test_idx], [
        p for i, p in enumerate(pairs) if i in test_idx
    ]


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n
