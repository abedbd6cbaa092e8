"""Which fields of a benchmark line hold the id, the question and the gold answers.

Public benchmark releases disagree: FlashRAG writes ``{"id", "question", "golden_answers": [...]}``,
HotpotQA ``{"_id", "question", "answer": "..."}``, many eval sets ``{"idx", "question",
"answer"}`` or ``{"question", "answers": [...]}`` with no id at all. ``sagegen eval`` reads all
of these; anything else is mapped with ``--id-field``, ``--question-field``, ``--answer-field``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sagegen.errors import InputError

ID_FIELDS = ("id", "_id", "idx")
ANSWER_FIELDS = ("golden_answers", "answers", "answer")
FLAGS_HINT = "map your layout with --id-field, --question-field, --answer-field"


@dataclass(frozen=True)
class Fields:
    """Field names chosen by the user; None = look for the usual names."""

    id: str | None = None
    question: str | None = None
    answer: str | None = None


def _answers(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value] if value.strip() else None
    if isinstance(value, list) and value and all(isinstance(a, str) and a.strip() for a in value):
        return list(value)
    return None


def read_fields(row: dict[str, Any], lineno: int, path: Path, fields: Fields) -> tuple[str, str, list[str]]:
    """``(id, question, golden answers)`` of one line; an unusable line raises one InputError."""
    if fields.id is not None:
        if fields.id not in row:
            raise InputError(f"no field {fields.id!r} (--id-field)", path=path, line=lineno, field=fields.id)
        qid: Any = row[fields.id]
    else:
        key = next((k for k in ID_FIELDS if k in row), None)
        qid = row[key] if key else lineno  # no id at all: the line number is the id
    if isinstance(qid, int) and not isinstance(qid, bool):
        qid = str(qid)
    if not isinstance(qid, str) or not qid:
        raise InputError(
            f"id is not a string or integer; {FLAGS_HINT}",
            path=path,
            line=lineno,
            field=fields.id or next((k for k in ID_FIELDS if k in row), "id"),
        )
    qname = fields.question or "question"
    question = row.get(qname)
    if not isinstance(question, str) or not question.strip():
        raise InputError(f"missing or empty question; {FLAGS_HINT}", path=path, line=lineno, field=qname)
    names = (fields.answer,) if fields.answer else ANSWER_FIELDS
    aname = next((k for k in names if k in row), None)
    golds = _answers(row[aname]) if aname else None
    if golds is None:
        wanted = "a non-empty string or list of strings"
        if aname is None:
            wanted = f"{', '.join(names)}: {wanted}"
        raise InputError(
            f"no gold answers (expected {wanted}); {FLAGS_HINT}",
            path=path,
            line=lineno,
            field=aname or names[0],
        )
    return qid, question.strip(), golds
