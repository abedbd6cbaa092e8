"""Reading JSON Lines input: one object per line, every problem named by file and line."""

from __future__ import annotations

import codecs
import json
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

from sagegen.errors import InputError


def iter_text_lines(path: str | Path, *, what: str = "file") -> Generator[tuple[int, str], None, None]:
    """Yield ``(line number, text)`` for each line of the UTF-8 file ``path`` (a leading UTF-8 BOM,
    which Windows editors write, is dropped).

    Each line is decoded on its own, so bytes that are not UTF-8 are reported on their own line
    (a text-mode reader decodes 8 KB blocks and would name the line its block started on). A missing
    file, a folder, an unreadable file or such bytes raise ``InputError`` naming the file and line.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"is a folder; give the {what} itself", path=path)
    if not path.is_file():
        raise InputError(f"{what} does not exist", path=path)
    try:
        fh = path.open("rb")
    except OSError as e:
        raise InputError(f"cannot open: {e.strerror}", path=path) from None
    with fh:
        for lineno, data in enumerate(fh, 1):
            if lineno == 1 and data.startswith(codecs.BOM_UTF8):
                data = data[len(codecs.BOM_UTF8) :]
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(
                    f"not valid UTF-8 (byte 0x{data[e.start]:02x} at column {e.start + 1}); save the file "
                    "as UTF-8",
                    path=path,
                    line=lineno,
                ) from None
            yield lineno, text


def iter_json_objects(path: str | Path, *, what: str = "file") -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each non-blank line of ``path``.

    A missing file, a line that is not JSON, a line that is not an object, or bytes that are not
    UTF-8 raise ``InputError`` naming the file and line; ``what`` names the file in the message
    ("benchmark file does not exist").
    """
    for lineno, raw in iter_text_lines(path, what=what):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except ValueError as e:
            raise InputError(f"not valid JSON ({e})", path=path, line=lineno) from None
        if not isinstance(rec, dict):
            raise InputError(f"expected a JSON object, got {type(rec).__name__}", path=path, line=lineno)
        yield lineno, rec
