"""Exact BM25 top-k over per-term posting lists, with MaxScore pruning, vectorised in numpy.

A query's score for a passage is the sum, over the query's terms (a repeated word counts once per
occurrence), of the term's precomputed impact in that passage. The exhaustive path adds every posting
of every term (``np.bincount``): its cost grows with the corpus, since common terms' lists do.

MaxScore (Turtle & Flood 1995) avoids scanning long lists. Sort the terms by their largest impact
(``term_max``, stored per term). The *non-essential* terms are the lowest-max ones whose max-sum
``S`` is below the k-th best score ``θ`` found so far: a passage found in none of the other
(*essential*) terms' lists scores at most ``S < θ``, so it cannot enter the top-k. Candidates are
therefore the union of the essential lists only; each candidate is scored exactly by looking it up
(``np.searchsorted``, ``O(candidates · log n)``) in every query term's sorted list, rather than by
reading those lists whole. ``θ`` from those exact scores is a lower bound on the true k-th score, so
the non-essential set only grows as ``θ`` is known better; when it cannot grow, the result is exact.

Each candidate's score is summed in query-term order, as ``np.bincount`` over the concatenated lists
sums it, so pruned scores are bit-identical to exhaustive ones, and ties at the k-th place are broken by
corpus position on both paths: the pruned top-k *is* the exhaustive top-k.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Above this many postings per document, a dense score vector beats sorting the postings.
DENSE_RATIO = 8
#: Below this many postings in all, scoring every posting is cheaper than pruning's bookkeeping.
PRUNE_ABOVE = 30_000
#: Relative slack on the max-sum bound: scores are float64 sums of float32 impacts in another order.
_SLACK = 1e-9

#: One query term: (passage positions ascending, impact per posting, the term's largest impact).
Term = tuple[np.ndarray, np.ndarray, float]


def top_k(terms: Sequence[Term], k: int, n_docs: int, *, prune: bool = True) -> list[tuple[int, float]]:
    """Top-``k`` (position, score), best first, ties by position; passages scoring <= 0 are left out.

    ``prune`` needs every impact >= 0 (the bound above); callers pass False when an index has negatives.
    """
    total = sum(len(ids) for ids, _, _ in terms)
    if not total:
        return []
    if prune and len(terms) > 1 and total > PRUNE_ABOVE:
        found = _pruned(terms, k, total)
        if found is not None:
            return _best(found[0], found[1], k)
    return _best(*_exhaustive(terms, n_docs), k)


def _exhaustive(terms: Sequence[Term], n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.concatenate([ids for ids, _, _ in terms])
    w = np.concatenate([imp for _, imp, _ in terms]).astype(np.float64)
    if len(idx) * DENSE_RATIO > n_docs:
        scores = np.bincount(idx, weights=w, minlength=n_docs)
        cand = np.flatnonzero(scores > 0)
        return cand, scores[cand]
    cand, inverse = np.unique(idx, return_inverse=True)
    cand_scores = np.bincount(inverse, weights=w)
    keep = cand_scores > 0
    return cand[keep], cand_scores[keep]


def _pruned(terms: Sequence[Term], k: int, total: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Candidates and their exact scores, a superset of the top-k; None when pruning would not pay."""
    order = sorted(range(len(terms)), key=lambda j: terms[j][2])  # lowest max impact first
    # bound[e] = max-sum of the e lowest-max terms: the most a passage in none of the others can score.
    bound = np.concatenate([[0.0], np.cumsum([terms[j][2] for j in order])])
    e = len(order) - 1  # start with the single highest-max term essential
    while True:
        essential = [terms[j][0] for j in order[e:]]
        size = sum(len(ids) for ids in essential)
        if size * 2 > total:  # most postings must be read anyway: scoring them all is cheaper
            return None
        cand = np.unique(np.concatenate(essential)) if len(essential) > 1 else np.asarray(essential[0])
        scores = _score(terms, cand)
        positive = int(np.count_nonzero(scores > 0))
        theta = float(np.partition(scores, len(scores) - k)[len(scores) - k]) if positive >= k else 0.0
        # Fewest essential terms the bound allows now: the others' max-sum must stay below theta.
        e_new = int(np.searchsorted(bound, theta / (1 + _SLACK), side="left")) - 1
        if bound[e] == 0.0 or e_new >= e:
            keep = scores > 0
            return cand[keep], scores[keep]
        e = max(e_new, 0)


def _score(terms: Sequence[Term], cand: np.ndarray) -> np.ndarray:
    """Exact score of each candidate: each term's impact looked up in its list, summed in query order."""
    acc = np.zeros(len(cand))
    for ids, imp, _ in terms:
        if ids.dtype != cand.dtype:  # searchsorted would convert (copy) the whole list otherwise
            cand = cand.astype(ids.dtype)
        pos = np.searchsorted(ids, cand)
        np.minimum(pos, len(ids) - 1, out=pos)
        hit = np.flatnonzero(ids[pos] == cand)
        acc[hit] += imp[pos[hit]]
    return acc


def _best(cand: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    if len(cand) > k:
        # Everything scoring at least the k-th score, so ties at the k-th place are all kept and
        # broken by position below (argpartition alone would pick among them arbitrarily).
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        sel = np.flatnonzero(scores >= kth)
        cand, scores = cand[sel], scores[sel]
    order = np.lexsort((cand, -scores))[:k]  # best first; ties by corpus position
    return [(int(cand[i]), float(scores[i])) for i in order]
