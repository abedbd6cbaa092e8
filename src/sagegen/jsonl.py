"""Reading JSON Lines input: one object per line, every problem named by file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sagegen.errors import InputError


def iter_json_objects(path: str | Path, *, what: str = "file") -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each non-blank line of ``path``.

    A missing file, a line that is not JSON, a line that is not an object, or bytes that are not
    UTF-8 raise ``InputError`` naming the file and line; ``what`` names the file in the message
    ("benchmark file does not exist").
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} does not exist", path=path)
    try:
        fh = path.open("r", encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot open: {e.strerror}", path=path) from None
    with fh:
        lineno = 0
        try:
            for lineno, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    rec = json.loads(raw)
                except ValueError as e:
                    raise InputError(f"not valid JSON ({e})", path=path, line=lineno) from None
                if not isinstance(rec, dict):
                    raise InputError(
                        f"expected a JSON object, got {type(rec).__name__}", path=path, line=lineno
                    )
                yield lineno, rec
        except UnicodeDecodeError:
            raise InputError("not valid UTF-8", path=path, line=lineno + 1) from None
