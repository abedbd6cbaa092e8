"""Index directories: the passage store, the manifest, atomic builds and stale detection.

Layout of one index directory (every file plain .npy / JSON / FAISS, nothing pickled)::

    manifest.json            format version, kind, corpus hash, n_docs, model, params (written last)
    passages.jsonl           one {"id","contents"} (or {"id","title","text"[,"raw"]}) per line, in index order
    passages.offsets.npy     int64 byte offsets (n_docs + 1) into passages.jsonl, memory-mapped
    bm25/                    numpy engine: arrays (data/indices/indptr/term_max .npy, vocab/params .json)
                             tantivy engine: a tantivy index (segments, memory-mapped)   [bm25, hybrid]
    dense/                   embeddings.npy + faiss.index                                  [dense, hybrid]

A build writes into a hidden sibling ``.<name>.tmp-<pid>-<rand>`` and renames it into place only
once the manifest is written, so a killed ``sagegen index`` never leaves a directory that loads:
the loader requires ``manifest.json``, and only a finished build has one under the final name.
"""

from __future__ import annotations

import array
import hashlib
import json
import mmap
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pydantic_core
from pydantic import ValidationError

from sagegen import __version__
from sagegen.config import BM25Config, HybridConfig, RetrievalConfig
from sagegen.errors import IndexError_
from sagegen.records import Doc, Hit, contents_of

if TYPE_CHECKING:
    from sagegen.retrieval.bm25 import BM25Retriever
    from sagegen.retrieval.bm25_tantivy import TantivyRetriever
    from sagegen.retrieval.dense import DenseRetriever

INDEX_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOCAL_KINDS = ("bm25", "dense", "hybrid")


class Passages(Protocol):
    """What an index build reads: passages it can count and iterate (a list, or
    :class:`~sagegen.corpus.CorpusPassages` streaming them from disk)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Doc]: ...


#: progress(stage, done, total): called as a build advances; the CLI draws a bar from it.
Progress = Callable[[str, int, int], None]


class BuildInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGINT) during :func:`build_index`, after its temp directory was removed.

    Still a ``KeyboardInterrupt`` (exit 130, every existing handler applies); ``str()`` is the
    sentence to show: where the build stopped and that the index directory was left as it was.
    """

    def __init__(self, final: Path, stage: str, done: int, total: int, existed: bool) -> None:
        where = f" during {stage} ({done:,}/{total:,})" if stage else ""
        kept = "the previous index there is unchanged" if existed else "nothing was written there"
        super().__init__(f"index build interrupted{where}: {kept} ({final}); rerun the command to build it")
        self.path, self.stage, self.done, self.total = final, stage, done, total


class DocStore:
    """Passages of an index, read lazily from a memory-mapped JSONL file by position."""

    FILE = "passages.jsonl"
    OFFSETS = "passages.offsets.npy"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._offsets = np.load(directory / self.OFFSETS, mmap_mode="r", allow_pickle=False)
        # A plain ndarray view: indexing an np.memmap builds a memmap scalar each time (3x slower).
        self._at = np.asarray(self._offsets)
        self._fh = (directory / self.FILE).open("rb")
        size = os.fstat(self._fh.fileno()).st_size
        self._mm = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""

    @staticmethod
    def line(d: Doc) -> bytes:
        """One stored passage: ``{"id","contents"}`` when :meth:`Doc.from_contents` gives ``d`` back
        (a Search-R1 corpus line, about what the corpus itself costs on disk), else every field."""
        rec: dict[str, str] = {"id": d.id, "contents": d.contents}
        if Doc.from_contents(d.id, rec["contents"]) != d:
            rec = {"id": d.id, "title": d.title, "text": d.text}
            if d.raw is not None:  # the corpus's own contents bytes (see Doc.raw)
                rec["raw"] = d.raw
        try:
            return json.dumps(rec, ensure_ascii=False).encode() + b"\n"
        except UnicodeEncodeError:  # a lone surrogate (a corpus' "\ud800"): UTF-8 cannot hold it
            return json.dumps(rec, ensure_ascii=True).encode() + b"\n"

    @staticmethod
    def write(docs: Iterable[Doc], directory: Path) -> int:
        """Write the passages one by one; return the count."""
        with StoreWriter(directory) as w:
            for d in docs:
                w.add(d)
        return w.count

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def _line(self, i: int) -> bytes:
        return self._mm[int(self._at[i]) : int(self._at[i + 1])]

    def __getitem__(self, i: int) -> Doc:
        line = self._line(i)
        if b'"contents":' in line:  # the key itself: inside a JSON string its quotes would be escaped
            rec = self._parse(line)
            return Doc.from_contents(rec["id"], rec["contents"])
        try:
            # pydantic-core parses and checks the line in one pass: 3x json.loads + model_construct,
            # and a 256-query top-3 search reads 768 passages.
            return Doc.model_validate_json(line)
        except ValidationError:  # its parser refuses a lone surrogate's escape ("\ud800"); json keeps it
            rec = json.loads(line)
            return Doc.model_construct(id=rec["id"], title=rec["title"], text=rec["text"], raw=rec.get("raw"))

    @staticmethod
    def _parse(line: bytes) -> dict[str, Any]:
        try:
            return pydantic_core.from_json(line)
        except ValueError:  # a lone surrogate's escape, as in __getitem__
            return json.loads(line)

    def record(self, i: int) -> dict[str, Any]:
        """Passage ``i`` as its stored fields (id and contents, or id, title, text and maybe raw)."""
        return self._parse(self._line(i))

    def served(self, i: int) -> dict[str, str]:
        """Passage ``i`` as the ``/retrieve`` wire shows it: ``{"id", "contents"}``, no Doc built."""
        rec = self._parse(self._line(i))
        if "contents" in rec:
            return {"id": rec["id"], "contents": rec["contents"]}
        return {"id": rec["id"], "contents": contents_of(rec["title"], rec["text"], rec.get("raw"))}

    def __iter__(self) -> Iterator[Doc]:
        for i in range(len(self)):
            yield self[i]

    def close(self) -> None:
        if isinstance(self._mm, mmap.mmap):
            self._mm.close()
        self._fh.close()


class StoreWriter:
    """Appends passages to a new store; only the offsets (8 bytes a passage) are held until closed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fh = (directory / DocStore.FILE).open("wb")
        self._offsets = array.array("q", [0])
        self._pos = 0

    @property
    def count(self) -> int:
        return len(self._offsets) - 1

    def add(self, d: Doc) -> None:
        line = DocStore.line(d)
        self._fh.write(line)
        self._pos += len(line)
        self._offsets.append(self._pos)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
            offsets = np.frombuffer(self._offsets, dtype=np.int64)
            np.save(self.directory / DocStore.OFFSETS, offsets, allow_pickle=False)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Stored:
    """``docs`` read once, each passage written to the store as the index builder takes it: one pass
    over the corpus feeds both (each pass of a large JSONL corpus is parsing-bound)."""

    def __init__(self, docs: Passages, writer: StoreWriter) -> None:
        self.docs, self.writer = docs, writer

    def __len__(self) -> int:
        return len(self.docs)

    def __iter__(self) -> Iterator[Doc]:
        add = self.writer.add
        for d in self.docs:
            add(d)
            yield d


def to_hits(store: Sequence[Doc] | DocStore, found: Sequence[Sequence[tuple[int, float]]]) -> list[list[Hit]]:
    """``search_ids`` results as Hits: every local retriever's ``search`` ends here."""
    return [[Hit(doc=store[i], score=s) for i, s in row] for row in found]


# ----------------------------------------------------------------------------- manifest


def bm25_engine(cfg: BM25Config, n_docs: int) -> str:
    """The BM25 engine ``cfg`` picks for a corpus of ``n_docs`` passages (``auto`` resolved)."""
    if cfg.engine != "auto":
        return cfg.engine
    return "tantivy" if n_docs >= cfg.tantivy_above else "numpy"


def index_params(kind: str, rcfg: RetrievalConfig, n_docs: int = 0) -> dict[str, Any]:
    """The build-time parameters that define an index (search-time knobs such as nprobe are left out).

    ``n_docs`` (the corpus' passage count) resolves ``retrieval.bm25.engine=auto``.
    """
    from sagegen.retrieval.tokenize import Tokenizer

    params: dict[str, Any] = {}
    if kind in ("bm25", "hybrid"):
        b = rcfg.bm25
        tokenizer = Tokenizer(b.stopwords, b.stemmer).spec()
        if bm25_engine(b, n_docs) == "tantivy":
            from sagegen.retrieval.bm25_tantivy import tantivy_params

            params["bm25"] = tantivy_params(b, tokenizer)
        else:  # no "engine" key: the numpy indexes built before engines existed keep their key
            params["bm25"] = {"k1": b.k1, "b": b.b, "method": b.method, "tokenizer": tokenizer}
    if kind in ("dense", "hybrid"):
        from sagegen.retrieval.dense import resolve_prefixes

        d = rcfg.dense
        qp, pp = resolve_prefixes(d)
        params["dense"] = {
            "model": d.model,
            "query_prefix": qp,
            "passage_prefix": pp,
            "index_type": d.index_type,
            "nlist": d.nlist if d.index_type == "ivf" else None,
            "hnsw_m": d.hnsw_m if d.index_type == "hnsw" else None,
        }
        if d.prebuilt:
            from sagegen.retrieval.dense import prebuilt_params

            params["dense"].update(prebuilt_params(d.prebuilt))
    return params


def index_key(kind: str, corpus_hash: str, params: dict[str, Any]) -> str:
    blob = json.dumps(
        {"v": INDEX_FORMAT_VERSION, "kind": kind, "corpus": corpus_hash, "params": params}, sort_keys=True
    )
    return hashlib.blake2b(blob.encode(), digest_size=6).hexdigest()


def default_index_path(rcfg: RetrievalConfig, kind: str, key: str) -> Path:
    return Path(rcfg.index_dir) / f"{kind}-{key}"


def read_manifest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    mf = path / MANIFEST
    if not mf.is_file():
        hint = " (an interrupted build? rerun `sagegen index`)" if path.is_dir() else ""
        raise IndexError_(f"{path} is not a sagegen index: no {MANIFEST}{hint}")
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise IndexError_(f"{mf}: unreadable manifest ({e})") from None
    if not isinstance(manifest, dict):
        raise IndexError_(f"{mf}: manifest is not a JSON object")
    version = manifest.get("format_version")
    if version != INDEX_FORMAT_VERSION:
        raise IndexError_(
            f"{path}: index format version {version!r}, this sagegen reads {INDEX_FORMAT_VERSION}; "
            "rebuild it with `sagegen index`"
        )
    if manifest.get("kind") not in LOCAL_KINDS:
        raise IndexError_(f"{mf}: unknown index kind {manifest.get('kind')!r}")
    return manifest


def manifest_mismatches(
    manifest: dict[str, Any], kind: str, corpus_hash: str, params: dict[str, Any]
) -> list[str]:
    """Why an existing index does not fit the wanted corpus/params (empty list: it fits)."""
    problems = []
    if manifest.get("kind") != kind:
        problems.append(f"kind: index is {manifest.get('kind')!r}, wanted {kind!r}")
    if manifest.get("corpus_hash") != corpus_hash:
        problems.append(
            f"corpus: index built from another corpus (hash {manifest.get('corpus_hash')} != {corpus_hash})"
        )
    have = manifest.get("params", {})
    for section in sorted(set(have) | set(params)):
        a, b = have.get(section), params.get(section)
        if a != b:
            diffs = [
                f"{section}.{k}: {(a or {}).get(k)!r} -> {(b or {}).get(k)!r}"
                for k in sorted(set(a or {}) | set(b or {}))
                if (a or {}).get(k) != (b or {}).get(k)
            ]
            problems.append("params " + ", ".join(diffs))
    return problems


# ----------------------------------------------------------------------------- atomic build


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_leftovers(final: Path) -> None:
    """Remove temp dirs that killed builds of ``final`` left behind (only those whose process is gone)."""
    for p in final.parent.glob(f".{final.name}.*-*-*"):
        try:
            pid = int(p.name.rsplit("-", 2)[-2])
        except ValueError:
            continue
        if not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)


def _reusable_embeddings(parent: Path, chash: str, dense: dict[str, Any]) -> Path | None:
    """Embeddings of this corpus by this model in a sibling index (e.g. flat -> hnsw, dense -> hybrid).

    Embedding is by far the slowest part of a dense build; the FAISS structure on top is cheap.
    """
    for mf in sorted(parent.glob(f"*/{MANIFEST}")):
        if mf.parent.name.startswith("."):  # another build's temp or outgoing dir: may vanish mid-read
            continue
        try:
            m = json.loads(mf.read_text(encoding="utf-8"))
            d = m["params"]["dense"]
            same = (
                m["format_version"] == INDEX_FORMAT_VERSION
                and m["corpus_hash"] == chash
                and (d["model"], d["passage_prefix"]) == (dense["model"], dense["passage_prefix"])
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
        emb = mf.parent / "dense" / "embeddings.npy"
        if same and emb.is_file():
            return emb
    return None


def _fsync_write(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def build_index(
    docs: Passages,
    kind: str,
    rcfg: RetrievalConfig,
    out_dir: str | Path,
    *,
    corpus_hash: str | None = None,
    corpus_source: str = "",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Build a ``kind`` index of ``docs`` at ``out_dir`` atomically (replacing one); return its manifest.

    ``docs`` is only iterated (and its length asked), so a :class:`~sagegen.corpus.CorpusPassages`
    builds a bm25 index without ever holding the corpus (dense builds read it into memory).
    """
    from sagegen.corpus import corpus_hash as _hash

    if kind not in LOCAL_KINDS:
        raise IndexError_(
            f"cannot build a local index of kind {kind!r} (local kinds: {', '.join(LOCAL_KINDS)})"
        )
    if not docs:
        raise IndexError_("cannot index an empty corpus")
    final = Path(out_dir).absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(final)
    chash = corpus_hash or _hash(docs)
    n_docs = len(docs)
    params = index_params(kind, rcfg, n_docs)
    t0 = time.perf_counter()
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    seen: list[Any] = ["", 0, 0]  # the last progress report, for the interruption message

    def track(stage: str, done: int, total: int) -> None:
        seen[:] = [stage, done, total]
        if outer is not None:
            outer(stage, done, total)

    outer, progress = progress, track
    old: Path | None = None
    try:
        with StoreWriter(tmp) as writer:
            stream = _Stored(docs, writer)
            if kind in ("bm25", "hybrid"):
                if params["bm25"].get("engine") == "tantivy":
                    from sagegen.retrieval.bm25_tantivy import build_tantivy

                    build_tantivy(stream, rcfg.bm25, tmp / "bm25", progress=progress)
                else:
                    from sagegen.retrieval.bm25 import build_bm25

                    build_bm25(stream, rcfg.bm25, tmp / "bm25", progress=progress)
            else:
                for _ in stream:
                    pass
        if writer.count != n_docs:  # the corpus changed on disk between the scan and this pass
            raise IndexError_(f"the corpus gave {writer.count:,} passages, {n_docs:,} when scanned; rerun it")
        if kind in ("dense", "hybrid"):
            from sagegen.retrieval.dense import build_dense

            if rcfg.dense.prebuilt:
                from sagegen.retrieval.dense import link_prebuilt

                link_prebuilt(rcfg.dense.prebuilt, tmp / "dense", n_docs)
            else:
                reuse = _reusable_embeddings(final.parent, chash, params["dense"])
                dense_docs = docs if isinstance(docs, Sequence) else list(docs)
                build_dense(dense_docs, rcfg.dense, tmp / "dense", progress=progress, embeddings_from=reuse)
        manifest = {
            "format_version": INDEX_FORMAT_VERSION,
            "kind": kind,
            "key": index_key(kind, chash, params),
            "corpus_hash": chash,
            "corpus_source": corpus_source,
            "n_docs": n_docs,
            "model": params.get("dense", {}).get("model"),
            "params": params,
            "search": {"hybrid": rcfg.hybrid.model_dump()} if kind == "hybrid" else {},
            "sagegen_version": __version__,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "build_seconds": round(time.perf_counter() - t0, 3),
        }
        # The manifest is the commit marker: written (and synced) last, then the directory is renamed.
        _fsync_write(tmp / MANIFEST, json.dumps(manifest, indent=2, sort_keys=False))
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except KeyboardInterrupt:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not final.exists():  # stopped between the two renames
            os.rename(old, final)
        raise BuildInterrupted(
            final, seen[0], seen[1], seen[2], existed=(final / MANIFEST).is_file()
        ) from None
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.filename is None:  # a write through an open file (np.save, a stream) names none: the index's
            e.filename = str(final)  # folder is what the user can act on ("...: the disk is full")
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def open_index(path: str | Path, rcfg: RetrievalConfig | None = None):
    """Load the retriever of an index directory from its manifest alone (``sagegen serve --index DIR``).

    ``rcfg`` only supplies search-time settings (device, nprobe, RRF constants); build-time ones
    come from the manifest so queries are always processed the way the index was built.
    """
    path = Path(path)
    manifest = read_manifest(path)
    given = rcfg is not None
    rcfg = rcfg or RetrievalConfig()
    kind = manifest["kind"]
    try:
        store = DocStore(path)
    except _LOAD_ERRORS as e:
        raise _damaged(path, e) from None
    if len(store) != manifest.get("n_docs"):
        raise IndexError_(f"{path}: manifest says {manifest.get('n_docs')} passages, store has {len(store)}")
    end, size = (int(store._at[-1]) if len(store._at) else 0), len(store._mm)
    if end != size:  # the last passage ends where the file does: a cut-short file is caught here
        store.close()
        raise _damaged(path, ValueError(f"{size} bytes, its offsets say {end}"), path / DocStore.FILE)
    bm25: BM25Retriever | TantivyRetriever | None = None
    dense: DenseRetriever | None = None
    try:
        if kind in ("bm25", "hybrid"):
            from sagegen.retrieval.bm25 import BM25Retriever

            bparams = manifest["params"]["bm25"]
            if bparams.get("engine") == "tantivy":
                from sagegen.retrieval.bm25_tantivy import TantivyRetriever

                bm25 = TantivyRetriever.load(path / "bm25", store, bparams)
            else:
                bm25 = BM25Retriever.load(path / "bm25", store, bparams)
        if kind in ("dense", "hybrid"):
            from sagegen.retrieval.dense import DenseRetriever

            dense = DenseRetriever.load(path / "dense", store, manifest["params"]["dense"], rcfg.dense)
    except _LOAD_ERRORS as e:
        store.close()
        raise _damaged(path, e) from None
    if kind == "bm25":
        retriever: Any = bm25
    elif kind == "dense":
        retriever = dense
    else:
        from sagegen.retrieval.hybrid import HybridRetriever

        hcfg = (
            rcfg.hybrid
            if given
            else HybridConfig.model_validate(manifest.get("search", {}).get("hybrid", {}))
        )
        retriever = HybridRetriever(bm25, dense, rrf_k=hcfg.rrf_k, depth=hcfg.depth)
    retriever.manifest = manifest
    retriever.path = path
    return retriever


#: What numpy, json, bm25s and FAISS raise on a cut-short or altered file (FAISS: RuntimeError).
_LOAD_ERRORS = (OSError, ValueError, EOFError, KeyError, RuntimeError)


def _damaged(path: Path, exc: BaseException, file: Path | None = None) -> IndexError_:
    """One line for an index that does not load: the file at fault (found by checking each one,
    only now that loading failed) and how to rebuild the index."""
    file = file or _bad_file(path)
    where = file if file is not None else path
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return IndexError_(
        f"{where}: damaged index file ({reason}); rebuild the index: `sagegen index --force` "
        f"with the same settings, or delete {path} (a run builds a missing index)"
    )


def _bad_file(path: Path) -> Path | None:
    """The first file of the index that is cut short or not what its format says, if any."""
    for f in sorted(path.rglob("*")):
        if not f.is_file():
            continue
        try:
            if f.suffix == ".npy":
                with open(f, "rb") as fh:
                    version = np.lib.format.read_magic(fh)
                    read_header = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _fortran, dtype = read_header(fh)
                    need = fh.tell() + int(np.prod(shape)) * dtype.itemsize
                if f.stat().st_size < need:
                    return f
            elif f.suffix == ".json":
                json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError, EOFError):
            return f
    return None
