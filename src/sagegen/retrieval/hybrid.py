"""Hybrid retrieval: reciprocal-rank fusion (Cormack et al., SIGIR 2009) of BM25 and dense results.

RRF needs no score calibration between the two retrievers: each document scores
``sum(1 / (rrf_k + rank))`` over the lists it appears in (rank from 1), over the top ``depth``
of each list. Ties go to the better BM25 rank, then to corpus position, so results are stable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sagegen.records import Hit
from sagegen.retrieval.index import to_hits


def rrf_fuse(rankings: Sequence[Sequence[int]], rrf_k: int, k: int) -> list[tuple[int, float]]:
    """Fuse ranked id lists (best first) into the top-``k`` (id, fused score)."""
    scores: dict[int, float] = {}
    first_rank: dict[int, tuple[int, int]] = {}
    for li, ranking in enumerate(rankings):
        for rank, doc in enumerate(ranking, 1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (rrf_k + rank)
            first_rank.setdefault(doc, (li, rank))
    order = sorted(scores, key=lambda d: (-scores[d], first_rank[d], d))
    return [(d, scores[d]) for d in order[:k]]


class HybridRetriever:
    thread_safe = True  # both halves are

    def __init__(self, bm25: Any, dense: Any, *, rrf_k: int = 60, depth: int = 50) -> None:
        self.bm25, self.dense = bm25, dense
        self.rrf_k, self.depth = rrf_k, depth
        self.store = bm25.store

    def search_ids(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        depth = max(self.depth, k)
        sparse = self.bm25.search_ids(queries, depth)
        dense = self.dense.search_ids(queries, depth)
        return [
            rrf_fuse([[i for i, _ in s], [i for i, _ in d]], self.rrf_k, k)
            for s, d in zip(sparse, dense, strict=True)
        ]

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        if k < 1:
            raise ValueError("k must be >= 1")
        return to_hits(self.store, self.search_ids(queries, k))
