"""BM25 on ``bm25s``: eager sparse scores saved as plain ``.npy``/JSON, loaded memory-mapped.

bm25s precomputes every (term, doc) score at index time into a CSC matrix; a query is then a
sum of a few matrix columns. We let bm25s build and save that matrix and do the (tiny) query-time
sum and top-k ourselves, so tokenization is exactly :class:`~sagegen.retrieval.tokenize.Tokenizer`
for documents and queries alike and no pickle is ever read.

Scoring variants (``retrieval.bm25.method``) are bm25s'. ``robertson`` ranks documents exactly as
``rank_bm25.BM25Okapi`` does: its term weight is BM25Okapi's divided by the constant ``k1 + 1``,
and its idf is the same ``log((N - df + 0.5) / (df + 0.5))`` except for terms in more than half of
the documents, which bm25s clamps to 0 and rank_bm25 floors at ``0.25 × mean idf`` (after stopword
removal such terms are rare; tests/test_bm25.py checks the equivalence on a real corpus).
The default ``lucene`` idf ``log(1 + (N - df + 0.5)/(df + 0.5))`` is never negative (Lucene/Pyserini).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sagegen.config import BM25Config
from sagegen.records import Doc, Hit
from sagegen.retrieval.index import DocStore, Progress
from sagegen.retrieval.tokenize import Tokenizer

#: Above this many postings per document, a dense score vector beats sorting the postings.
_DENSE_RATIO = 8


def build_bm25(
    docs: Sequence[Doc], cfg: BM25Config, out_dir: Path, *, progress: Progress | None = None
) -> None:
    import bm25s

    tok = Tokenizer(cfg.stopwords, cfg.stemmer)
    vocab: dict[str, int] = {}  # token -> id
    word_id: dict[str, int] = {}  # surface word -> token id, -1 for stopwords: one lookup per word
    corpus_ids: list[list[int]] = []
    n = len(docs)
    step = max(1, n // 100)

    def new_word(w: str) -> int:
        t = tok.norm(w)
        word_id[w] = -1 if t is None else vocab.setdefault(t, len(vocab))
        return word_id[w]

    for i, d in enumerate(docs):
        ids = [word_id[w] if w in word_id else new_word(w) for w in tok.words(d.contents)]
        corpus_ids.append([t for t in ids if t >= 0])
        if progress and (i % step == 0 or i == n - 1):
            progress("bm25: tokenize", i + 1, n)
    model = bm25s.BM25(k1=cfg.k1, b=cfg.b, method=cfg.method)
    if progress:
        progress("bm25: score matrix", 0, 1)
    model.index((corpus_ids, vocab), show_progress=False)
    model.save(str(out_dir), show_progress=False)
    if progress:
        progress("bm25: score matrix", 1, 1)


class BM25Retriever:
    """Batched BM25 search over a saved bm25s index (memory-mapped) and a :class:`DocStore`."""

    def __init__(self, model: Any, tokenizer: Tokenizer, store: DocStore) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.store = store
        self.vocab: dict[str, int] = model.vocab_dict
        self.n_docs = int(model.scores["num_docs"])
        self._data = model.scores["data"]
        self._indices = model.scores["indices"]
        self._indptr = model.scores["indptr"]

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
        out = []
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
        return [[Hit(doc=self.store[i], score=s) for i, s in hits] for hits in self.search_ids(queries, k)]
