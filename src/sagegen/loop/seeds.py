"""Diversity-aware seed passages: stratified over topic clusters of the corpus (docs/design.md §4).

The paper names diversity as its limitation: uniform sampling draws seeds where the corpus is
densest (a Wikipedia dump is mostly people and places). With ``pipeline.seed_sampling=stratified``
the passages are clustered once per run and pair ``i`` draws its seed from cluster
``order[i mod C]`` (``order`` a seeded permutation), so any ``C`` consecutive pairs visit every
topic once, and a run of N seeds covers the corpus instead of its largest regions.

Vectors: the dense retriever's own passage embeddings when the run uses one (read back from its
FAISS index), else TF-IDF term vectors hashed to 128 signed buckets (a random projection that keeps
cosine similarities, so 100,000 passages fit in 50 MB). Clusters: spherical k-means (cosine), with
k-means++ seeding, all drawn from ``pipeline.seed``: the same corpus and seed give the same seeds on
any machine. Measured by ``bench/bench_seeds.py``.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from sagegen.records import Doc

HASH_DIMS = 128
_WORD = re.compile(r"[^\W\d_]{3,}")


def _stopwords() -> frozenset[str]:
    try:
        import bm25s.stopwords as sw

        return frozenset(sw.STOPWORDS_EN)
    except Exception:  # bm25s is a core dependency; this only guards an unusual install
        return frozenset()


def term_vectors(texts: Sequence[str], dims: int = HASH_DIMS) -> np.ndarray:
    """L2-normalised, hashed TF-IDF vectors (sublinear tf), one row per text, float32."""
    stop = _stopwords()
    vocab: dict[str, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    for i, text in enumerate(texts):
        ids = [vocab.setdefault(w, len(vocab)) for w in _WORD.findall(text.lower()) if w not in stop]
        cols.extend(ids)
        rows.extend([i] * len(ids))
    n = len(texts)
    out = np.zeros((n, dims), dtype=np.float32)
    if not cols:
        return out
    v = len(vocab)
    r, c = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    keys, tf = np.unique(r * v + c, return_counts=True)
    r, c = keys // v, keys % v
    df = np.bincount(c, minlength=v)
    idf = np.log((n + 1) / (df + 1)) + 1.0
    # crc32, not hash(): Python's string hash changes between processes, the buckets must not.
    words = sorted(vocab, key=vocab.__getitem__)
    h = np.fromiter((zlib.crc32(w.encode()) for w in words), dtype=np.uint64, count=v)
    bucket, sign = (h % dims).astype(np.int64), np.where((h >> 16) & 1, 1.0, -1.0)
    w = (1.0 + np.log(tf)) * idf[c] * sign[c]
    out = np.bincount(r * dims + bucket[c], weights=w, minlength=n * dims).reshape(n, dims).astype(np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def passage_vectors(docs: Sequence[Doc], retriever: Any = None) -> tuple[np.ndarray, str]:
    """The vectors to cluster and what they are: ``dense`` embeddings from the retriever's FAISS index
    when it has one covering every passage, else ``terms`` (hashed TF-IDF)."""
    dense = getattr(retriever, "dense", retriever)  # the hybrid retriever holds its dense part
    index = getattr(dense, "index", None)
    if index is not None and getattr(index, "ntotal", -1) == len(docs):
        try:
            vecs = np.asarray(index.reconstruct_n(0, len(docs)), dtype=np.float32)
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            return vecs / np.maximum(norms, 1e-12), "dense"
        except Exception:  # IVF/HNSW indexes may not store reconstructable vectors
            pass
    return term_vectors([d.contents for d in docs]), "terms"


def default_clusters(n: int) -> int:
    return max(2, min(64, round(math.sqrt(n) / 2)))


#: Passages the centres are fitted on; the rest are assigned to the nearest centre once. A topic
#: with a share of 1/64 still has ~300 passages in the sample, and 100k passages cost what 20k do.
FIT_SAMPLE = 20_000


def spherical_kmeans(
    x: np.ndarray, k: int, seed: int, iters: int = 20, restarts: int = 4, sample: int = FIT_SAMPLE
) -> np.ndarray:
    """Cluster labels of the unit rows of ``x`` into ``k`` cosine clusters: the best (highest total
    similarity to its centre) of ``restarts`` runs from k-means++ (D²) starts on a sample of at most
    ``sample`` rows, then every row to its nearest centre; all drawn from ``seed``."""
    n = len(x)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    fit = x if n <= sample else x[np.sort(rng.choice(n, sample, replace=False))]
    best, best_score = None, -np.inf
    for _ in range(restarts):
        centers, score = _kmeans_once(fit, k, rng, iters)
        if score > best_score:
            best, best_score = centers, score
    assert best is not None
    labels = np.empty(n, dtype=np.int64)
    for start in range(0, n, 50_000):  # blocks keep the n x k similarity matrix small
        labels[start : start + 50_000] = np.argmax(x[start : start + 50_000] @ best.T, axis=1)
    return labels


def _cluster_sums(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per-cluster sums of the rows of ``x`` (sorted segments; ``np.add.at`` is ~20x slower)."""
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=k)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    sums = np.zeros((k, x.shape[1]), dtype=np.float32)
    nonempty = counts > 0
    sums[nonempty] = np.add.reduceat(x[order], starts[nonempty], axis=0)
    return sums


def _kmeans_once(x: np.ndarray, k: int, rng: np.random.Generator, iters: int) -> tuple[np.ndarray, float]:
    """One k-means run from a k-means++ start: its centres and total similarity to them."""
    n = len(x)
    centers = np.empty((k, x.shape[1]), dtype=np.float32)
    centers[0] = x[rng.integers(n)]
    dist = np.maximum(1.0 - x @ centers[0], 0.0) ** 2
    for j in range(1, k):
        total = float(dist.sum())
        i = int(rng.choice(n, p=dist / total)) if total > 0 else int(rng.integers(n))
        centers[j] = x[i]
        dist = np.minimum(dist, np.maximum(1.0 - x @ centers[j], 0.0) ** 2)
    labels = np.full(n, -1, dtype=np.int64)
    for _ in range(iters):
        new = np.argmax(x @ centers.T, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        sums = _cluster_sums(x, labels, k)
        counts = np.bincount(labels, minlength=k)
        for empty in np.flatnonzero(counts == 0):  # an empty cluster restarts at the worst-fitting passage
            worst = int(np.argmin(np.einsum("ij,ij->i", x, centers[labels])))
            sums[empty], labels[worst] = x[worst], empty
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centers = (sums / np.maximum(norms, 1e-12)).astype(np.float32)
    score = float(np.einsum("ij,ij->i", x, centers[labels]).sum())
    return centers, score


class StratifiedSeeds:
    """Pair ``i`` → a cluster (round-robin over a seeded order) → a passage of it (the pair's own rng)."""

    def __init__(self, docs: Sequence[Doc], seed: int, clusters: int = 0, retriever: Any = None):
        vecs, self.vectors = passage_vectors(docs, retriever)
        k = clusters or default_clusters(len(docs))
        labels = spherical_kmeans(vecs, k, seed)
        groups: dict[int, list[int]] = {}
        for i, lab in enumerate(labels.tolist()):
            groups.setdefault(lab, []).append(i)
        self.members = [groups[g] for g in sorted(groups)]
        self.order = np.random.default_rng(seed).permutation(len(self.members)).tolist()

    def pick(self, idx: int, rng: Any) -> int:
        """The passage index of pair ``idx``; ``rng`` (a ``random.Random``) picks within the cluster."""
        members = self.members[self.order[idx % len(self.order)]]
        return members[rng.randrange(len(members))]

    def sizes(self) -> list[int]:
        return [len(m) for m in self.members]
