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
removal such terms are rare; tests/test_bm25.py checks the equivalence on a real corpus).
The default ``lucene`` idf ``log(1 + (N - df + 0.5)/(df + 0.5))`` is never negative (Lucene/Pyserini).
"""

from __future__ import annotations

import array
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sagegen.config import BM25Config
from sagegen.records import Hit
from sagegen.retrieval.base import SearchPace
from sagegen.retrieval.bm25_topk import Term, top_k
from sagegen.retrieval.index import DocStore, Passages, Progress, to_hits
from sagegen.retrieval.tokenize import Tokenizer


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
    _save_term_max(out_dir, np.asarray(model.scores["data"]), np.asarray(model.scores["indptr"]))
    if progress:
        progress("bm25: score matrix", 1, 1)


def _save_term_max(out_dir: Path, data: np.ndarray, indptr: np.ndarray) -> None:
    term_max, prunable = term_maxima(data, indptr)
    if prunable:  # else no file: searches score every posting (MaxScore's bound needs impacts >= 0)
        np.save(out_dir / TERM_MAX, term_max, allow_pickle=False)


def _has_scoring_functions() -> bool:
    # _index_arrays calls bm25s' module-private scoring helpers (as of bm25s 0.3.16); else the slow path.
    from bm25s import scoring

    names = ("_select_idf_scorer", "_select_tfc_scorer", "_build_idf_array", "_build_nonoccurrence_array")
    return all(hasattr(scoring, f) for f in names)


class _WordIds(dict):  # type: ignore[type-arg]
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
    the saved arrays are bit-identical (tests/test_bm25.py compares them for every method).
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
    """Batched BM25 search over a saved index (memory-mapped ``.npy`` arrays) and a :class:`DocStore`.

    Queries are exact top-k with MaxScore pruning (:mod:`~sagegen.retrieval.bm25_topk`): the longest
    posting lists of a query are looked up by binary search rather than read whole, so query cost grows
    far slower than the corpus.
    """

    #: Searches share only read-only state (memory-mapped arrays, the store) and the tokenizer,
    #: whose cache and stemmer are safe across threads, so the server may run several at once.
    thread_safe = True

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        vocab: dict[str, int],
        n_docs: int,
        tokenizer: Tokenizer,
        store: DocStore,
        term_max: np.ndarray | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.store = store
        self.vocab = vocab
        self.n_docs = n_docs
        # Plain ndarray views of the memory maps: slicing an np.memmap builds a memmap subclass
        # object each time, a measurable share of a single-query search.
        self._data = np.asarray(arrays["data"])
        self._indices = np.asarray(arrays["indices"])
        self._indptr = np.asarray(arrays["indptr"])
        if term_max is None:  # an index built before term_max.npy was written: one pass over it
            term_max, prunable = term_maxima(self._data, self._indptr)
        else:
            prunable = True  # written only for indexes whose impacts are all >= 0
        self._term_max = np.asarray(term_max)
        #: MaxScore's bound needs impacts >= 0 (bm25s' variants give that; checked, not assumed).
        self.prune = prunable
        #: Pure computation on this process' arrays: quick searches may run on the event loop.
        self.pace = SearchPace()

    @classmethod
    def load(cls, directory: Path, store: DocStore, params: dict[str, Any]) -> BM25Retriever:
        arrays = {k: np.load(directory / f"{k}.csc.index.npy", mmap_mode="r") for k in _ARRAYS}
        vocab = json.loads((directory / "vocab.index.json").read_text(encoding="utf-8"))
        saved = json.loads((directory / "params.index.json").read_text(encoding="utf-8"))
        tm = directory / TERM_MAX
        term_max = np.load(tm, mmap_mode="r") if tm.exists() else None
        spec = params["tokenizer"]
        tok = Tokenizer(spec["stopwords"], spec["stemmer"])
        return cls(arrays, vocab, int(saved["num_docs"]), tok, store, term_max)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for ``query`` (dense vector; for tests and diagnostics)."""
        out = np.zeros(self.n_docs)
        for ids, w, _ in self._terms(query):
            out += np.bincount(ids, weights=w.astype(np.float64), minlength=self.n_docs)
        return out

    def _terms(self, query: str) -> list[Term]:
        # Repeated query words count once per occurrence, as in rank_bm25.
        ptr, out = self._indptr, []
        for t in self.tokenizer(query):
            tid = self.vocab.get(t)
            if tid is None or tid >= len(ptr) - 1:  # "" (bm25s' empty token) has no postings
                continue
            a, b = ptr[tid], ptr[tid + 1]
            if b > a:
                out.append((self._indices[a:b], self._data[a:b], float(self._term_max[tid])))
        return out

    def search_ids(
        self, queries: Sequence[str], k: int, *, prune: bool = True
    ) -> list[list[tuple[int, float]]]:
        """Top-``k`` (position, score) per query; documents scoring 0 (no shared term) are not returned.

        ``prune=False`` scores every posting (the reference the pruned search must equal)."""
        return [top_k(self._terms(q), k, self.n_docs, prune=prune and self.prune) for q in queries]

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        if k < 1:
            raise ValueError("k must be >= 1")
        return to_hits(self.store, self.search_ids(queries, k))


#: The arrays of a saved index, as bm25s names them: ``{name}.csc.index.npy``.
_ARRAYS = ("data", "indices", "indptr")
#: Each term's largest impact (float32), for MaxScore; absent in indexes built by sagegen before it.
TERM_MAX = "term_max.npy"


def term_maxima(data: np.ndarray, indptr: np.ndarray) -> tuple[np.ndarray, bool]:
    """Each term's largest impact (0 for a term without postings), and whether no impact is negative."""
    n_terms = len(indptr) - 1
    out = np.zeros(n_terms, dtype=np.float32)
    if not len(data):
        return out, True
    df = np.diff(indptr)
    has = np.flatnonzero(df > 0)
    out[has] = np.maximum.reduceat(data, indptr[has])
    return out, bool(data.min() >= 0)
