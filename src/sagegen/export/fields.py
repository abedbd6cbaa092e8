"""The QAPair fields every export carries, defined once for the verl, Hugging Face and FlashRAG writers.

The list and the column types are read off :class:`sagegen.records.QAPair` itself, so a field added
there reaches all three exports (or fails loudly here when its type has no column kind yet).
Left out: ``format_version`` (each export file states its own format) and ``trace_ids`` (they point
into the run's ledger, which an export does not ship).
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from sagegen.records import QAPair

_NOT_EXPORTED = ("format_version", "trace_ids")


def _kind(annotation: Any) -> str:
    """``string`` / ``int64`` / ``float64`` / ``strings`` (a list) for a QAPair annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):  # ``int | None``: the column is nullable anyway
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _kind(inner)
    if annotation is str or origin is Literal:
        return "string"
    if annotation is int:
        return "int64"
    if annotation is float:
        return "float64"
    if origin is tuple and typing.get_args(annotation)[0] is str:
        return "strings"
    raise TypeError(f"QAPair annotation {annotation!r} has no export column kind")


#: Field name → column kind, in QAPair's order.
PAIR_FIELDS: dict[str, str] = {
    name: _kind(info.annotation) for name, info in QAPair.model_fields.items() if name not in _NOT_EXPORTED
}


def pair_fields(pair: QAPair, run_id: str = "") -> dict[str, Any]:
    """The exported fields of ``pair``; ``run_id`` fills in pairs that do not carry their own."""
    row = {name: getattr(pair, name) for name in PAIR_FIELDS}
    row["question"] = pair.question.strip()
    row["supporting_ids"] = list(pair.supporting_ids)
    row["run_id"] = pair.run_id or run_id
    return row


def arrow_fields() -> list[tuple[str, Any]]:
    """``(name, pyarrow type)`` for :data:`PAIR_FIELDS` (used by the verl and HF schemas)."""
    import pyarrow as pa

    kinds = {
        "string": pa.string(),
        "int64": pa.int64(),
        "float64": pa.float64(),
        "strings": pa.list_(pa.string()),
    }
    return [(name, kinds[kind]) for name, kind in PAIR_FIELDS.items()]
