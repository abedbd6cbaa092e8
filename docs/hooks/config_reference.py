"""MkDocs hook: the configuration reference page is generated from the config models themselves.

``docs/reference.md`` holds the marker below; at build time it is replaced by one table per section
of :class:`sagegen.config.Config`: every key with its type, default, whether it may change on resume,
and the ``#:`` comment written above it in ``config.py``. The page therefore cannot drift from the
code: a key added there appears here at the next build.
"""

from __future__ import annotations

import ast
import inspect
import json
import textwrap
import typing
from typing import Any

MARKER = "<!-- config-keys -->"


def _field_comments(cls: type) -> dict[str, str]:
    """The ``#:`` comment lines written directly above each field of ``cls``."""
    source = textwrap.dedent(inspect.getsource(cls))
    cls_node = ast.parse(source).body[0]
    assert isinstance(cls_node, ast.ClassDef)
    body = cls_node.body
    lines = source.splitlines()
    out: dict[str, str] = {}
    for node in body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            comment: list[str] = []
            i = node.lineno - 2
            while i >= 0 and lines[i].strip().startswith("#:"):
                comment.insert(0, lines[i].strip()[2:].strip())
                i -= 1
            if not comment:  # else a comment at the end of the field's own line
                _, sep, tail = lines[node.lineno - 1].partition("  # ")
                comment = [tail.strip()] if sep else []
            out[node.target.id] = " ".join(comment)
    return out


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("sagegen.config.", "")
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if isinstance(annotation, type):
        return f"`{annotation.__name__}`"
    # A "|" would end the table cell, and an escaped one shows its backslash inside a code span.
    return f"`{text}`".replace(" | ", "` or `")


def _default(field: Any) -> str:
    value = field.default_factory() if field.default_factory is not None else field.default
    if hasattr(value, "model_dump"):
        return ""
    return f"`{json.dumps(value, default=str)}`"


def _section_tables(model: type, prefix: str, out: list[str], volatile_section: bool = False) -> None:
    from pydantic import BaseModel

    comments = _field_comments(model)
    rows: list[str] = []
    nested: list[tuple[str, type, bool]] = []
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        annotation = field.annotation
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        is_volatile = volatile_section or bool(extra.get("volatile"))
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((name, annotation, is_volatile))
            continue
        volatile = "yes" if is_volatile else ""
        doc = comments.get(name, "").replace("|", "\\|")
        rows.append(
            f"| `{prefix}{name}` | {_type_name(annotation)} | {_default(field)} | {volatile} | {doc} |"
        )
    if rows:
        title = prefix.rstrip(".") or "top level"
        out += [
            f"### `{title}`",
            "",
            "| key | type | default | may change on resume | what |",
            "|---|---|---|---|---|",
            *rows,
            "",
        ]
    for name, sub, sub_volatile in nested:
        _section_tables(sub, f"{prefix}{name}.", out, sub_volatile)


def config_reference() -> str:
    from sagegen.config import Config

    out: list[str] = []
    _section_tables(Config, "", out)
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, config_reference())
