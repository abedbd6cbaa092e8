"""Exact BM25 top-k over per-term posting lists, with MaxScore pruning, vectorised in numpy.

A query's score for a passage is the sum, over the query's terms (a repeated word counts once per
occurrence), of the term's precomputed impact in that passage. The exhaustive path adds every posting
of every term (``np.bincount``): its cost grows with the corpus, since common terms' lists do.

MaxScore (Turtle & Flood 1995) avoids reading long lists whole. A passage found in none of the
*essential* lists scores at most the max-sum ``S`` of the other (*non-essential*) terms' largest
impacts (``term_max``, stored per term); once the k-th best score ``θ`` of a real passage is above
``S``, no such passage can enter the top-k. So: a pilot over the shortest lists finds a first ``θ``;
the longest lists whose max-sum stays below it are made non-essential; the essential lists are summed
as the exhaustive path sums them; then each non-essential list is *looked up*
(``np.searchsorted``, ``O(candidates · log n)``) only for the candidates whose partial score plus
the max-sum still unread can reach ``θ``, a set that shrinks list by list. When ``θ`` is too low
for the split, fewer lists are left out and the pass is redone; when pruning cannot pay (most
postings essential, or a small query), the exhaustive path runs.

Each candidate's score is summed in query-term order, as ``np.bincount`` over the concatenated lists
sums it, so pruned scores are bit-identical to exhaustive ones, and ties at the k-th place are broken by
corpus position on both paths: the pruned top-k *is* the exhaustive top-k.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Above one posting per DENSE_RATIO passages, a dense score vector (np.bincount over every passage,
#: ~7 ns a posting plus ~0.7 ns a passage) beats sorting the postings (~50 ns a posting).
DENSE_RATIO = 64
#: Below this many postings in all, scoring every posting is cheaper than pruning (measured on
#: bench_bm25_scale's corpora: even at 100k passages, pruning gains from 1M passages on).
PRUNE_ABOVE = 100_000
#: The pilot that estimates theta reads the shortest lists, up to 1/PILOT_SHARE of the postings, and
#: scores exactly its best PILOT_TOP (at least 2k) passages (bench_bm25_scale at 1M: fastest of 16-128).
PILOT_SHARE = 64
PILOT_TOP = 16
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

    Non-essential terms are taken longest list first (what skipping saves is their length; any split
    is exact while the non-essential max-sum stays below theta). A pilot first finds a theta cheaply:
    the passages best on the shortest lists (``1/PILOT_SHARE`` of the postings), scored exactly. Then
    as many of the longest lists as that theta allows are left out, the others are summed as the
    exhaustive path sums them (sort or dense bincount), and a candidate whose partial score plus the
    non-essential max-sum cannot reach theta is dropped before any lookup in the long lists.
    """
    order = sorted(range(len(terms)), key=lambda j: (-len(terms[j][0]), terms[j][2]))
    # bound[j] = max-sum of the j longest lists: the most a passage in none of the others can score.
    bound = np.concatenate([[0.0], np.cumsum([terms[j][2] for j in order])])
    # Pilot: the shortest lists up to 1/PILOT_SHARE of the postings (at least one list).
    sizes = np.cumsum([len(terms[i][0]) for i in reversed(order)])
    n_pilot = max(1, int(np.searchsorted(sizes, total // PILOT_SHARE, side="right")))
    cand, partial = _exhaustive([terms[i] for i in order[len(order) - n_pilot :]], n_docs)
    top = max(PILOT_TOP, 2 * k)
    if len(cand) > top:
        cand = cand[np.argpartition(-partial, top - 1)[:top]]
    pilot = _score(terms, cand.astype(terms[0][0].dtype))
    theta = _kth(pilot, k)
    j = min(len(terms) - 1, int(np.searchsorted(bound, theta / (1 + _SLACK), side="left")) - 1)
    while j > 0:
        essential = [terms[i] for i in order[j:]]
        if sum(len(t[0]) for t in essential) * 2 > total:  # most postings are read anyway
            return None
        cand, partial = _exhaustive(essential, n_docs)
        cand = cand.astype(terms[0][0].dtype)
        # Full score <= partial + the max-sum of the lists not yet read: below theta (a real
        # passage's score), out of the top-k. Each non-essential list, shortest first, is looked up
        # only for the candidates still in, and the bound tightens as it goes.
        rest = float(bound[j])
        for i in reversed(order[:j]):
            floor = max(theta, _kth(partial, k)) * (1 - _SLACK)
            keep = (partial + rest) * (1 + _SLACK) >= floor
            cand, partial = cand[keep], partial[keep]
            partial = partial + _lookup(terms[i], cand)
            rest -= terms[i][2]
        scores = _score(terms, cand)
        theta = max(theta, _kth(scores, k))
        if bound[j] < theta / (1 + _SLACK):
            keep = scores > 0
            return cand[keep], scores[keep]
        # Fewer non-essential lists: as many of the longest as theta allows (at least one fewer).
        j = min(j - 1, int(np.searchsorted(bound, theta / (1 + _SLACK), side="left")) - 1)
    return None  # every list essential: that is the exhaustive path


def _kth(scores: np.ndarray, k: int) -> float:
    """The k-th best positive score (0 when fewer than k are positive)."""
    if int(np.count_nonzero(scores > 0)) < k:
        return 0.0
    return float(np.partition(scores, len(scores) - k)[len(scores) - k])


def _lookup(term: Term, cand: np.ndarray) -> np.ndarray:
    """The term's impact for each candidate (0 where absent), by binary search of the shorter side."""
    ids, imp, _ = term
    out = np.zeros(len(cand))
    if len(ids) > len(cand):
        pos = np.searchsorted(ids, cand)
        np.minimum(pos, len(ids) - 1, out=pos)
        hit = np.flatnonzero(ids[pos] == cand)
        out[hit] = imp[pos[hit]]
    elif len(cand):
        pos = np.searchsorted(cand, ids)
        np.minimum(pos, len(cand) - 1, out=pos)
        hit = cand[pos] == ids
        out[pos[hit]] = imp[hit]
    return out


def _score(terms: Sequence[Term], cand: np.ndarray) -> np.ndarray:
    """Exact score of each candidate: each term's impact looked up (:func:`_lookup`), summed in query
    order (the order ``np.bincount`` sums the concatenated lists in, so the sums are bit-identical)."""
    acc = np.zeros(len(cand))
    for term in terms:
        acc += _lookup(term, cand)
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
