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
    from bm25s import scoring

    budget = (memory_mb or cfg.index_memory_mb) * 2**20
    shard_tokens = max(1, budget // _BYTES_PER_TOKEN)
    out_dir.mkdir(parents=True, exist_ok=True)
    shard_dir = out_dir / "_shards"
    shard_dir.mkdir(exist_ok=True)
    tok = Tokenizer(cfg.stopwords, cfg.stemmer)
    vocab: dict[str, int] = {}
    word_id = _WordIds(tok, vocab)
    n = len(docs)
    step = max(1, n // 100)
    doc_len = np.zeros(n, dtype=np.uint32)  # kept (non-stopword) tokens per passage
    df = np.zeros(0, dtype=np.int64)
    shards: list[Path] = []
    flat = array.array("i")  # the shard's token ids, passages one after another; -1 for stopwords
    lens = array.array("I")  # the shard's words per passage
    first = 0  # corpus position of the shard's first passage

    def flush() -> None:
        nonlocal flat, lens, first, df
        if not len(lens):
            return
        ids = np.frombuffer(flat, dtype=np.int32)
        local = np.repeat(np.arange(len(lens), dtype=np.int64), np.frombuffer(lens, dtype=np.uint32))
        keep = ids >= 0
        ids, local = ids[keep], local[keep]
        doc_len[first : first + len(lens)] = np.bincount(local, minlength=len(lens))
        keys, tf = np.unique(ids.astype(np.int64) * len(lens) + local, return_counts=True)
        del ids, local, keep
        term = (keys // len(lens)).astype(np.uint32)
        doc = (keys % len(lens) + first).astype(np.uint32)
        del keys
        counts = np.bincount(term, minlength=len(vocab))
        df = np.concatenate([df, np.zeros(len(counts) - len(df), dtype=np.int64)]) + counts
        path = shard_dir / f"{len(shards):05d}"
        path.mkdir()
        for name, arr in (("term", term), ("doc", doc), ("tf", tf.astype(np.uint32))):
            np.save(path / f"{name}.npy", arr, allow_pickle=False)
        shards.append(path)
        first += len(lens)
        flat, lens = array.array("i"), array.array("I")

    for i, d in enumerate(docs):
        words = tok.words(d.contents)
        lens.append(len(words))
        flat.extend(map(word_id.__getitem__, words))  # a C loop; Python runs only for unseen words
        if len(flat) >= shard_tokens:
            flush()
        if progress and (i % step == 0 or i == n - 1):
            progress("bm25: tokenize", i + 1, n)
    flush()
    word_id.clear()

    n_vocab = len(vocab)
    df = np.concatenate([df, np.zeros(n_vocab - len(df), dtype=np.int64)])
    model = bm25s.BM25(k1=cfg.k1, b=cfg.b, method=cfg.method)
    avg_doc_len = doc_len.mean() if n else 0.0
    doc_frequencies = dict(enumerate(df.tolist()))
    idf_fn = scoring._select_idf_scorer(model.idf_method)
    tfc_fn = scoring._select_tfc_scorer(model.method)
    nonocc = None
    if model.method in model.methods_requiring_nonoccurrence:
        nonocc = scoring._build_nonoccurrence_array(
            doc_frequencies=doc_frequencies,
            n_docs=n,
            compute_idf_fn=idf_fn,
            calculate_tfc_fn=tfc_fn,
            l_d=avg_doc_len,
            l_avg=avg_doc_len,
            k1=model.k1,
            b=model.b,
            delta=model.delta,
            dtype=model.dtype,
        )
    idf = scoring._build_idf_array(doc_frequencies, n, compute_idf_fn=idf_fn, dtype=model.dtype)
    del doc_frequencies
    indptr = np.zeros(n_vocab + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    nnz = int(indptr[-1])

    # The small files (params, vocab, non-occurrence) exactly as bm25s writes them; the arrays after.
    model.nonoccurrence_array = nonocc
    model.scores = {
        "data": np.zeros(0, dtype=model.dtype),
        "indices": np.zeros(0, dtype=model.int_dtype),
        "indptr": indptr,
        "num_docs": n,
    }
    model.vocab_dict = {**vocab, "": n_vocab}  # as bm25s' index(): "" keeps empty queries valid
    vocab.clear()
    model.save(str(out_dir), show_progress=False)
    model.vocab_dict = {}

    # Term ranges of about `per_range` postings each.
    per_range = max(1, budget // _BYTES_PER_POSTING)
    cuts = np.unique(np.searchsorted(indptr, np.arange(0, nnz, per_range), side="right") - 1)
    bounds = np.concatenate([cuts[cuts > 0], [n_vocab]]).astype(np.int64)
    bounds = np.concatenate([[0], bounds])
    readers = [_ShardReader(p, bounds) for p in shards]
    term_max = np.zeros(n_vocab, dtype=np.float32)
    prunable = True
    data_path, idx_path = out_dir / "data.csc.index.npy", out_dir / "indices.csc.index.npy"
    with (
        _NpyWriter(data_path, model.dtype, nnz) as data_out,
        _NpyWriter(idx_path, model.int_dtype, nnz) as idx_out,
    ):
        for r in range(len(bounds) - 1):
            t0, t1 = int(bounds[r]), int(bounds[r + 1])
            parts = [rd.read(r) for rd in readers]
            term = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.uint32)
            doc = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.uint32)
            tf = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.uint32)
            del parts
            order = np.argsort(term, kind="stable")
            term, doc, tf = term[order].astype(np.int64), doc[order], tf[order]
            del order
            scores = idf[term] * tfc_fn(
                tf_array=tf.astype(model.dtype),
                l_d=doc_len[doc].astype(np.int64),
                l_avg=avg_doc_len,
                k1=model.k1,
                b=model.b,
                delta=model.delta,
            )
            if nonocc is not None:
                scores -= nonocc[term]
            scores = scores.astype(model.dtype)
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
    shutil.rmtree(shard_dir)
    if prunable:  # else no file: searches score every posting (MaxScore's bound needs impacts >= 0)
        np.save(out_dir / "term_max.npy", term_max, allow_pickle=False)


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
