"""BM25 on ``bm25s``: eager sparse scores saved as plain ``.npy``/JSON, loaded memory-mapped.

bm25s precomputes every (term, doc) score at index time into a CSC matrix: per term, the passages
containing it (ascending) and the term's BM25 impact in each. We build those arrays ourselves in
bounded memory (:mod:`~sagegen.retrieval.bm25_build`, with bm25s' scoring functions, saved in bm25s'
layout) and search them with an exact MaxScore top-k (:mod:`~sagegen.retrieval.bm25_topk`), so
tokenization is exactly :class:`~sagegen.retrieval.tokenize.Tokenizer` for documents and queries alike
and no pickle is ever read.

Scoring variants (``retrieval.bm25.method``) are bm25s'. ``robertson`` ranks documents exactly as
``rank_bm25.BM25Okapi`` does: its term weight is BM25Okapi's divided by the constant ``k1 + 1``,
and its idf is the same ``log((N - df + 0.5) / (df + 0.5))`` except for terms in more than half of
the documents, which bm25s clamps to 0 and rank_bm25 floors at ``0.25 × mean idf`` (after stopword
removal such terms are rare; tests/retrieval/test_bm25.py checks the equivalence on a real corpus).
The default ``lucene`` idf ``log(1 + (N - df + 0.5)/(df + 0.5))`` is never negative (Lucene/Pyserini).
"""

from __future__ import annotations

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
    """Build the index in bounded memory (:mod:`~sagegen.retrieval.bm25_build`: shards, then a merge)."""
    if _has_scoring_functions():
        from sagegen.retrieval.bm25_build import build_sharded

        build_sharded(docs, cfg, out_dir, progress=progress)
        return
    # A bm25s without the scoring helpers build_sharded calls: bm25s' own (slower, in-memory) index.
    import bm25s

    tok = Tokenizer(cfg.stopwords, cfg.stemmer)
    vocab: dict[str, int] = {}
    corpus = [[vocab.setdefault(t, len(vocab)) for t in tok(d.contents)] for d in docs]
    model = bm25s.BM25(k1=cfg.k1, b=cfg.b, method=cfg.method)
    model.index((corpus, vocab), show_progress=False)
    model.save(str(out_dir), show_progress=False)
    _save_term_max(out_dir, np.asarray(model.scores["data"]), np.asarray(model.scores["indptr"]))


def _save_term_max(out_dir: Path, data: np.ndarray, indptr: np.ndarray) -> None:
    term_max, prunable = term_maxima(data, indptr)
    if prunable:  # else no file: searches score every posting (MaxScore's bound needs impacts >= 0)
        np.save(out_dir / TERM_MAX, term_max, allow_pickle=False)


def _has_scoring_functions() -> bool:
    # _index_arrays calls bm25s' module-private scoring helpers (as of bm25s 0.3.16); else the slow path.
    from bm25s import scoring

    names = ("_select_idf_scorer", "_select_tfc_scorer", "_build_idf_array", "_build_nonoccurrence_array")
    return all(hasattr(scoring, f) for f in names)


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
