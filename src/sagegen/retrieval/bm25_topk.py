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
#: Below this many postings in all, scoring every posting is cheaper than pruning (bench: crossover
#: at ~60k postings on a 100k-passage corpus).
PRUNE_ABOVE = 60_000
#: Lists holding at least 1/SKIP_SHARE of a query's postings are the first tried as non-essential.
SKIP_SHARE = 8
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
        found = _pruned(terms, k, total, n_docs)
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


def _pruned(terms: Sequence[Term], k: int, total: int, n_docs: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Candidates and their exact scores, a superset of the top-k; None when pruning would not pay.

    The non-essential terms are taken longest list first (what skipping saves is their length; any
    split is exact as long as the non-essential max-sum stays below theta): at first those holding at
    least ``1/SKIP_SHARE`` of the query's postings, then fewer while theta is too low for them.
    Essential lists are summed as the exhaustive path sums (sort or dense bincount): a candidate whose
    partial score plus the non-essential max-sum cannot reach the k-th best partial score is dropped
    before any lookup, so only a few candidates are looked up in the long lists.
    """
    order = sorted(range(len(terms)), key=lambda j: (-len(terms[j][0]), terms[j][2]))
    # bound[j] = max-sum of the j longest lists: the most a passage in none of the others can score.
    bound = np.concatenate([[0.0], np.cumsum([terms[j][2] for j in order])])
    j = min(len(terms) - 1, sum(1 for t in terms if len(t[0]) * SKIP_SHARE >= total))
    while j > 0:
        essential = [terms[i] for i in order[j:]]
        if sum(len(t[0]) for t in essential) * 2 > total:  # most postings are read anyway
            return None
        cand, partial = _exhaustive(essential, n_docs)
        if len(cand) > k:  # the k-th best partial score is at most the k-th best full score
            floor = np.partition(partial, len(partial) - k)[len(partial) - k] * (1 - _SLACK)
            cand = cand[(partial + bound[j]) * (1 + _SLACK) >= floor]
        scores = _score(terms, cand.astype(terms[0][0].dtype))
        positive = int(np.count_nonzero(scores > 0))
        theta = float(np.partition(scores, len(scores) - k)[len(scores) - k]) if positive >= k else 0.0
        if bound[j] == 0.0 or bound[j] < theta / (1 + _SLACK):
            keep = scores > 0
            return cand[keep], scores[keep]
        # Fewer non-essential lists: as many of the longest as theta allows (at least one fewer).
        j = min(j - 1, int(np.searchsorted(bound, theta / (1 + _SLACK), side="left")) - 1)
    return None  # every list essential: that is the exhaustive path


def _score(terms: Sequence[Term], cand: np.ndarray) -> np.ndarray:
    """Exact score of each candidate: each term's impact looked up in its list, summed in query order.

    A lookup is a binary search of the shorter side in the longer: candidates in a long list
    (``O(candidates · log list)``), a short list's postings among the candidates (``O(list · log
    candidates)``)."""
    acc = np.zeros(len(cand))
    for ids, imp, _ in terms:
        if ids.dtype != cand.dtype:  # searchsorted would convert (copy) the whole list otherwise
            cand = cand.astype(ids.dtype)
        if len(ids) > len(cand):
            pos = np.searchsorted(ids, cand)
            np.minimum(pos, len(ids) - 1, out=pos)
            hit = np.flatnonzero(ids[pos] == cand)
            acc[hit] += imp[pos[hit]]
        else:
            pos = np.searchsorted(cand, ids)
            np.minimum(pos, len(cand) - 1, out=pos)
            hit = cand[pos] == ids
            acc[pos[hit]] += imp[hit]  # a list's postings are distinct passages: no repeated index
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
