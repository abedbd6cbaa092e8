"""BM25 on ``bm25s``: eager sparse scores saved as plain ``.npy``/JSON, loaded memory-mapped.

bm25s precomputes every (term, doc) score at index time into a CSC matrix; a query is then a
sum of a few matrix columns. bm25s' own functions score that matrix and bm25s saves it, but we
count the terms (vectorised, :func:`_index_arrays`: bm25s' per-document loop was most of a 100k
build) and do the (tiny) query-time sum and top-k ourselves, so tokenization is exactly
:class:`~sagegen.retrieval.tokenize.Tokenizer` for documents and queries alike and no pickle is
ever read.

Scoring variants (``retrieval.bm25.method``) are bm25s'. ``robertson`` ranks documents exactly as
``rank_bm25.BM25Okapi`` does: its term weight is BM25Okapi's divided by the constant ``k1 + 1``,
and its idf is the same ``log((N - df + 0.5) / (df + 0.5))`` except for terms in more than half of
the documents, which bm25s clamps to 0 and rank_bm25 floors at ``0.25 × mean idf`` (after stopword
removal such terms are rare; tests/retrieval/test_bm25.py checks the equivalence on a real corpus).
The default ``lucene`` idf ``log(1 + (N - df + 0.5)/(df + 0.5))`` is never negative (Lucene/Pyserini).
"""

from __future__ import annotations

import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sagegen.config import BM25Config
from sagegen.records import Hit
from sagegen.retrieval.base import SearchPace
from sagegen.retrieval.index import DocStore, Passages, Progress, to_hits
from sagegen.retrieval.tokenize import Tokenizer

#: Above this many postings per document, a dense score vector beats sorting the postings.
_DENSE_RATIO = 8


def build_bm25(docs: Passages, cfg: BM25Config, out_dir: Path, *, progress: Progress | None = None) -> None:
    import bm25s

    tok = Tokenizer(cfg.stopwords, cfg.stemmer)
    n = len(docs)
    step = max(1, n // 100)
    vocab: dict[str, int] = {}  # token -> id, in order of first occurrence
    word_id = _WordIds(tok, vocab)
    flat = array.array("q")  # every word's token id, documents one after another; -1 for stopwords
    lengths = np.zeros(n, dtype=np.int64)
    for i, d in enumerate(docs):
        words = tok.words(d.contents)
        lengths[i] = len(words)
        flat.extend(map(word_id.__getitem__, words))  # a C loop; Python runs only for unseen words
        if progress and (i % step == 0 or i == n - 1):
            progress("bm25: tokenize", i + 1, n)
    ids = np.frombuffer(flat, dtype=np.int64)
    doc_of = np.repeat(np.arange(n, dtype=np.int64), lengths)
    keep = ids >= 0
    ids, doc_of = ids[keep], doc_of[keep]
    model = bm25s.BM25(k1=cfg.k1, b=cfg.b, method=cfg.method)
    if progress:
        progress("bm25: score matrix", 0, 1)
    if ids.size and _has_scoring_functions():
        _index_arrays(model, ids, doc_of, np.bincount(doc_of, minlength=n), vocab)
    else:  # nothing but stopwords, or a bm25s without those helpers: bm25s' own (slower) path
        per_doc = np.split(ids, np.cumsum(np.bincount(doc_of, minlength=n))[:-1])
        model.index(([d.tolist() for d in per_doc], vocab), show_progress=False)
    model.save(str(out_dir), show_progress=False)
    if progress:
        progress("bm25: score matrix", 1, 1)


def _has_scoring_functions() -> bool:
    # _index_arrays calls bm25s' module-private scoring helpers (as of bm25s 0.3.16); else the slow path.
    from bm25s import scoring

    names = ("_select_idf_scorer", "_select_tfc_scorer", "_build_idf_array", "_build_nonoccurrence_array")
    return all(hasattr(scoring, f) for f in names)


class _WordIds(dict[str, int]):
    """Surface word -> token id (-1 for a stopword); a word is stemmed once, on its first lookup."""

    def __init__(self, tok: Tokenizer, vocab: dict[str, int]) -> None:
        super().__init__()
        self.tok, self.vocab = tok, vocab

    def __missing__(self, word: str) -> int:
        t = self.tok.norm(word)
        out = self[word] = -1 if t is None else self.vocab.setdefault(t, len(self.vocab))
        return out


def _index_arrays(
    model: Any, ids: np.ndarray, doc_of: np.ndarray, doc_len: np.ndarray, vocab: dict[str, int]
) -> None:
    """What ``model.index((corpus_ids, vocab))`` computes, from flat arrays instead of per-document lists.

    bm25s counts terms with one ``Counter`` and one set intersection per document (most of a 100k
    build); here one ``np.unique`` over (term, doc) keys gives the term frequencies already in the
    CSC order bm25s produces (column by column, documents ascending). The idf, the term-frequency
    component and the non-occurrence correction are bm25s' own functions, fed the same dtypes, so
    the saved arrays are bit-identical (tests/retrieval/test_bm25.py compares them for every method).
    """
    from bm25s import scoring

    n_docs, n_vocab = len(doc_len), len(vocab)
    keys, tf = np.unique(ids * n_docs + doc_of, return_counts=True)
    term, doc = keys // n_docs, keys % n_docs
    df = np.bincount(term, minlength=n_vocab)
    avg_doc_len = doc_len.mean()
    doc_frequencies = dict(enumerate(df.tolist()))
    idf_fn = scoring._select_idf_scorer(model.idf_method)
    tfc_fn = scoring._select_tfc_scorer(model.method)
    nonocc = None
    if model.method in model.methods_requiring_nonoccurrence:
        nonocc = scoring._build_nonoccurrence_array(
            doc_frequencies=doc_frequencies,
            n_docs=n_docs,
            compute_idf_fn=idf_fn,
            calculate_tfc_fn=tfc_fn,
            l_d=avg_doc_len,
            l_avg=avg_doc_len,
            k1=model.k1,
            b=model.b,
            delta=model.delta,
            dtype=model.dtype,
        )
    idf = scoring._build_idf_array(doc_frequencies, n_docs, compute_idf_fn=idf_fn, dtype=model.dtype)
    tfc = tfc_fn(
        tf_array=tf.astype(model.dtype),
        l_d=doc_len[doc],
        l_avg=avg_doc_len,
        k1=model.k1,
        b=model.b,
        delta=model.delta,
    )
    scores = idf[term] * tfc
    if nonocc is not None:
        scores -= nonocc[term]
    indptr = np.zeros(n_vocab + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    model.nonoccurrence_array = nonocc
    model.scores = {
        "data": scores.astype(model.dtype),
        "indices": doc.astype(model.int_dtype),
        "indptr": indptr,
        "num_docs": n_docs,
    }
    # As index() does with create_empty_token: "" scores nothing and keeps empty queries valid.
    model.vocab_dict = {**vocab, "": n_vocab}
    model.unique_token_ids_set = set(model.vocab_dict.values())


class BM25Retriever:
    """Batched BM25 search over a saved bm25s index (memory-mapped) and a :class:`DocStore`."""

    #: Searches share only read-only state (memory-mapped arrays, the store) and the tokenizer,
    #: whose cache and stemmer are safe across threads, so the server may run several at once.
    thread_safe = True

    def __init__(self, model: Any, tokenizer: Tokenizer, store: DocStore) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.store = store
        self.vocab: dict[str, int] = model.vocab_dict
        self.n_docs = int(model.scores["num_docs"])
        # Plain ndarray views of the memory maps: slicing an np.memmap builds a memmap subclass
        # object each time, a measurable share of a single-query search.
        self._data = np.asarray(model.scores["data"])
        self._indices = np.asarray(model.scores["indices"])
        self._indptr = np.asarray(model.scores["indptr"])
        #: Pure computation on this process' arrays: quick searches may run on the event loop.
        self.pace = SearchPace()

    @classmethod
    def load(cls, directory: Path, store: DocStore, params: dict[str, Any]) -> BM25Retriever:
        import bm25s

        model = bm25s.BM25.load(str(directory), mmap=True, allow_pickle=False, show_progress=False)
        spec = params["tokenizer"]
        return cls(model, Tokenizer(spec["stopwords"], spec["stemmer"]), store)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for ``query`` (dense vector; for tests and diagnostics)."""
        out = np.zeros(self.n_docs)
        idx, w = self._postings(query)
        if len(idx):
            out += np.bincount(idx, weights=w, minlength=self.n_docs)
        return out

    def _postings(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        # Repeated query words count once per occurrence, as in rank_bm25.
        tids = [self.vocab[t] for t in self.tokenizer(query) if t in self.vocab]
        if not tids:
            return np.empty(0, dtype=np.int64), np.empty(0)
        ptr = self._indptr
        parts_i = [self._indices[ptr[t] : ptr[t + 1]] for t in tids]
        parts_w = [self._data[ptr[t] : ptr[t + 1]] for t in tids]
        return np.concatenate(parts_i), np.concatenate(parts_w).astype(np.float64)

    def search_ids(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        """Top-``k`` (position, score) per query; documents scoring 0 (no shared term) are not returned."""
        out: list[list[tuple[int, float]]] = []
        for q in queries:
            idx, w = self._postings(q)
            if not len(idx):
                out.append([])
                continue
            if len(idx) * _DENSE_RATIO > self.n_docs:
                scores = np.bincount(idx, weights=w, minlength=self.n_docs)
                cand = np.flatnonzero(scores > 0)
                cand_scores = scores[cand]
            else:
                cand, inverse = np.unique(idx, return_inverse=True)
                cand_scores = np.bincount(inverse, weights=w)
                keep = cand_scores > 0
                cand, cand_scores = cand[keep], cand_scores[keep]
            if len(cand) > k:
                part = np.argpartition(-cand_scores, k - 1)[:k]
                cand, cand_scores = cand[part], cand_scores[part]
            # Best first; ties broken by corpus position so results are deterministic.
            order = np.lexsort((cand, -cand_scores))
            out.append([(int(cand[i]), float(cand_scores[i])) for i in order])
        return out

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        if k < 1:
            raise ValueError("k must be >= 1")
        return to_hits(self.store, self.search_ids(queries, k))
