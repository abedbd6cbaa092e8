"""Bounded-memory build of the numpy BM25 engine's arrays: streamed in shards, merged term range by range.

The saved index is what bm25s saves (``data/indices/indptr.csc.index.npy``, ``vocab/params.index.json``,
bit-identical to a one-shot build; tests/retrieval/test_bm25_build.py), so indexes of either build read
the same.

1. **Shards.** Passages are tokenised as they stream by; once a shard holds
   ``retrieval.bm25.index_memory_mb`` worth of tokens, its (term, passage, tf) postings are counted
   (one ``np.unique`` over int64 keys, sorted by term then passage) and written to disk, and only
   each passage's length (4 B) and each term's document frequency (8 B) stay in memory.
2. **Merge.** With every df known, the global idf and mean length are too. Terms are cut into ranges
   of about the same posting budget; each range's postings are read from every shard (plain reads at
   file offsets, not a memory map, so nothing stays resident), put in term order (a stable sort keeps
   passages ascending, as shards are in corpus order), scored with bm25s' own functions and appended
   to the output files. Peak memory: one shard or one range, plus the vocabulary (a Python dict,
   ~100-150 B a distinct token: it grows with the corpus, but sublinearly).
"""

from __future__ import annotations

import array
import shutil
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from sagegen.config import BM25Config
from sagegen.retrieval.index import Passages, Progress
from sagegen.retrieval.tokenize import Tokenizer

#: Working bytes per token while a shard is counted (int32 id, int64 key, np.unique's sort copies).
_BYTES_PER_TOKEN = 48
#: Working bytes per posting while a term range is merged (term/doc/tf reads, argsort, float64 scores).
_BYTES_PER_POSTING = 64


class _WordIds(dict[str, int]):
    """Surface word -> token id (-1 for a stopword); a word is stemmed once per memo lifetime.

    The memo starts over past :attr:`Tokenizer.MAX_CACHED` words (as the tokenizer's own does), so a
    streaming build does not hold every surface word of the corpus; ``vocab`` keeps every token."""

    def __init__(self, tok: Tokenizer, vocab: dict[str, int]) -> None:
        super().__init__()
        self.tok, self.vocab = tok, vocab

    def __missing__(self, word: str) -> int:
        if len(self) >= Tokenizer.MAX_CACHED:
            self.clear()
        t = self.tok.norm(word)
        out = self[word] = -1 if t is None else self.vocab.setdefault(t, len(self.vocab))
        return out


def build_sharded(
    docs: Passages, cfg: BM25Config, out_dir: Path, *, progress: Progress | None = None, memory_mb: int = 0
) -> None:
    """Build the numpy engine's index into ``out_dir`` within ``memory_mb`` (default: the config's)."""
    import bm25s

    budget = (memory_mb or cfg.index_memory_mb) * 2**20
    out_dir.mkdir(parents=True, exist_ok=True)
    shards = _Shards(out_dir / "_shards", len(docs), max(1, budget // _BYTES_PER_TOKEN))
    shards.count(docs, Tokenizer(cfg.stopwords, cfg.stemmer), progress)
    model = bm25s.BM25(k1=cfg.k1, b=cfg.b, method=cfg.method)
    score = _Scorer(model, shards.df, shards.doc_len)
    indptr = np.zeros(len(shards.vocab) + 1, dtype=np.int64)
    np.cumsum(shards.df, out=indptr[1:])
    # The small files (params, vocab, non-occurrence) exactly as bm25s writes them; the arrays after.
    model.nonoccurrence_array = score.nonocc
    model.scores = {
        "data": np.zeros(0, dtype=model.dtype),
        "indices": np.zeros(0, dtype=model.int_dtype),
        "indptr": indptr,
        "num_docs": len(docs),
    }
    model.vocab_dict = {**shards.vocab, "": len(shards.vocab)}  # as bm25s' index(): "" keeps "" valid
    shards.vocab.clear()
    model.save(str(out_dir), show_progress=False)
    model.vocab_dict = {}
    term_max = _merge(shards, score, indptr, out_dir, budget // _BYTES_PER_POSTING, progress)
    shutil.rmtree(shards.dir)
    if term_max is not None:  # else no file: searches score every posting (MaxScore needs impacts >= 0)
        np.save(out_dir / "term_max.npy", term_max, allow_pickle=False)


class _Shards:
    """Step 1: the corpus tokenised as it streams by, each shard's (term, passage, tf) postings counted
    and written to disk; only passage lengths, document frequencies and the vocabulary stay."""

    def __init__(self, directory: Path, n_docs: int, shard_tokens: int) -> None:
        self.dir, self.shard_tokens = directory, shard_tokens
        self.dir.mkdir(exist_ok=True)
        self.vocab: dict[str, int] = {}
        self.doc_len = np.zeros(n_docs, dtype=np.uint32)  # kept (non-stopword) tokens per passage
        self.df = np.zeros(0, dtype=np.int64)
        self.paths: list[Path] = []
        self.flat = array.array("i")  # the shard's token ids, passages one after another; -1: stopword
        self.lens = array.array("I")  # the shard's words per passage
        self.first = 0  # corpus position of the shard's first passage

    def count(self, docs: Passages, tok: Tokenizer, progress: Progress | None) -> None:
        word_id = _WordIds(tok, self.vocab)
        n = len(docs)
        step = max(1, n // 100)
        for i, d in enumerate(docs):
            words = tok.words(d.contents)
            self.lens.append(len(words))
            self.flat.extend(map(word_id.__getitem__, words))  # a C loop; Python runs only for new words
            if len(self.flat) >= self.shard_tokens:
                self.flush()
            if progress and (i % step == 0 or i == n - 1):
                progress("bm25: tokenize", i + 1, n)
        self.flush()
        word_id.clear()
        self.df = _grown(self.df, len(self.vocab))

    def flush(self) -> None:
        n = len(self.lens)
        if not n:
            return
        ids = np.frombuffer(self.flat, dtype=np.int32)
        local = np.repeat(np.arange(n, dtype=np.int64), np.frombuffer(self.lens, dtype=np.uint32))
        keep = ids >= 0
        ids, local = ids[keep], local[keep]
        self.doc_len[self.first : self.first + n] = np.bincount(local, minlength=n)
        keys, tf = np.unique(ids.astype(np.int64) * n + local, return_counts=True)
        del ids, local, keep
        term = (keys // n).astype(np.uint32)
        doc = (keys % n + self.first).astype(np.uint32)
        del keys
        counts = np.bincount(term, minlength=len(self.vocab))
        self.df = _grown(self.df, len(counts)) + counts
        path = self.dir / f"{len(self.paths):05d}"
        path.mkdir()
        for name, arr in (("term", term), ("doc", doc), ("tf", tf.astype(np.uint32))):
            np.save(path / f"{name}.npy", arr, allow_pickle=False)
        self.paths.append(path)
        self.first += n
        self.flat, self.lens = array.array("i"), array.array("I")


def _grown(a: np.ndarray, n: int) -> np.ndarray:
    """``a`` padded with zeros to length ``n`` (the vocabulary grows as shards are counted)."""
    return np.concatenate([a, np.zeros(n - len(a), dtype=a.dtype)])


class _Scorer:
    """bm25s' own scoring pieces for the whole corpus (global idf and mean length): a range's impacts
    are the very numbers a one-shot bm25s build computes."""

    def __init__(self, model: Any, df: np.ndarray, doc_len: np.ndarray) -> None:
        from bm25s import scoring

        n = len(doc_len)
        self.model, self.doc_len = model, doc_len
        self.avg = doc_len.mean() if n else 0.0
        frequencies = dict(enumerate(df.tolist()))
        idf_fn = scoring._select_idf_scorer(model.idf_method)
        self.tfc_fn = scoring._select_tfc_scorer(model.method)
        self.nonocc = None
        if model.method in model.methods_requiring_nonoccurrence:
            self.nonocc = scoring._build_nonoccurrence_array(
                doc_frequencies=frequencies,
                n_docs=n,
                compute_idf_fn=idf_fn,
                calculate_tfc_fn=self.tfc_fn,
                l_d=self.avg,
                l_avg=self.avg,
                k1=model.k1,
                b=model.b,
                delta=model.delta,
                dtype=model.dtype,
            )
        self.idf = scoring._build_idf_array(frequencies, n, compute_idf_fn=idf_fn, dtype=model.dtype)

    def __call__(self, term: np.ndarray, doc: np.ndarray, tf: np.ndarray) -> np.ndarray:
        m = self.model
        scores = self.idf[term] * self.tfc_fn(
            tf_array=tf.astype(m.dtype),
            l_d=self.doc_len[doc].astype(np.int64),
            l_avg=self.avg,
            k1=m.k1,
            b=m.b,
            delta=m.delta,
        )
        if self.nonocc is not None:
            scores -= self.nonocc[term]
        return scores.astype(m.dtype)


def _merge(
    shards: _Shards,
    score: _Scorer,
    indptr: np.ndarray,
    out_dir: Path,
    per_range: int,
    progress: Progress | None,
) -> np.ndarray | None:
    """Step 2: term ranges of about ``per_range`` postings, each read from every shard, put in term
    order, scored and appended to the output arrays; returns each term's highest impact (MaxScore's
    bound), or None when some impact is negative (the bound would not hold)."""
    model, df = score.model, shards.df
    n_vocab, nnz = len(df), int(indptr[-1])
    cuts = np.unique(np.searchsorted(indptr, np.arange(0, nnz, max(1, per_range)), side="right") - 1)
    bounds = np.concatenate([[0], cuts[cuts > 0], [n_vocab]]).astype(np.int64)
    readers = [_ShardReader(p, bounds) for p in shards.paths]
    term_max = np.zeros(n_vocab, dtype=np.float32)
    prunable = True
    with (
        _NpyWriter(out_dir / "data.csc.index.npy", model.dtype, nnz) as data_out,
        _NpyWriter(out_dir / "indices.csc.index.npy", model.int_dtype, nnz) as idx_out,
    ):
        for r in range(len(bounds) - 1):
            t0, t1 = int(bounds[r]), int(bounds[r + 1])
            parts = [rd.read(r) for rd in readers]
            term, doc, tf = (
                np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, np.uint32) for i in range(3)
            )
            del parts
            order = np.argsort(term, kind="stable")
            term, doc, tf = term[order].astype(np.int64), doc[order], tf[order]
            del order
            scores = score(term, doc, tf)
            if len(scores):
                prunable = prunable and bool(scores.min() >= 0)
                starts = indptr[t0:t1] - indptr[t0]
                has = np.flatnonzero(df[t0:t1] > 0)
                term_max[t0 + has] = np.maximum.reduceat(scores, starts[has])
            data_out.write(scores)
            idx_out.write(doc.astype(model.int_dtype))
            if progress:
                progress("bm25: merge", r + 1, len(bounds) - 1)
    for rd in readers:
        rd.close()
    return term_max if prunable else None


class _ShardReader:
    """One shard's postings, read range by range from the files (no memory map stays resident)."""

    def __init__(self, path: Path, bounds: np.ndarray) -> None:
        term = np.load(path / "term.npy", mmap_mode="r")
        # Where each term range starts in this shard: a binary search touching a few pages only.
        self.at = np.searchsorted(term, bounds.astype(term.dtype), side="left").tolist()
        del term
        self.files: list[tuple[BinaryIO, int, np.dtype[Any]]] = []
        for name in ("term", "doc", "tf"):
            m = np.load(path / f"{name}.npy", mmap_mode="r")  # only for the data's offset and dtype
            offset, dtype = m.offset, m.dtype
            del m
            self.files.append((open(path / f"{name}.npy", "rb"), offset, dtype))  # noqa: SIM115 - close()

    def read(self, r: int) -> tuple[np.ndarray, ...]:
        a, b = self.at[r], self.at[r + 1]
        out = []
        for f, offset, dtype in self.files:
            f.seek(offset + a * dtype.itemsize)
            out.append(np.fromfile(f, dtype=dtype, count=b - a))
        return tuple(out)

    def close(self) -> None:
        for f, _, _ in self.files:
            f.close()


class _NpyWriter:
    """A 1-D ``.npy`` file of known length written in pieces (np.save needs the whole array)."""

    def __init__(self, path: Path, dtype: Any, length: int) -> None:
        self.path, self.dtype, self.length, self.written = path, np.dtype(dtype), length, 0
        self.f = open(path, "wb")  # noqa: SIM115 - closed by __exit__
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (length,),
        }
        np.lib.format.write_array_header_1_0(self.f, header)

    def write(self, arr: np.ndarray) -> None:
        self.f.write(np.ascontiguousarray(arr, dtype=self.dtype).tobytes())
        self.written += len(arr)

    def __enter__(self) -> _NpyWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()
        if exc[0] is None and self.written != self.length:
            raise RuntimeError(f"{self.path}: wrote {self.written} of {self.length} values")
