"""Question diversity of a run: embedding spread, distinct entities, near-duplicates, seed coverage.

- spread: mean cosine distance between two different questions (0 = all the same, ~1 = unrelated),
  over MiniLM embeddings when the ``dense`` extra is installed, else hashed TF-IDF term vectors
  (``sagegen.loop.seeds.term_vectors``); ``method`` says which, so compare runs measured the same way;
- nearest-neighbour similarity of each question (its histogram is what the report plots: a mass
  near 1 means many questions have a twin);
- entities: capitalised name spans in the questions (a cheap stand-in for NER), distinct / total;
- near-duplicates: the counts of ``analysis.duplicates`` (exact after normalisation, and near);
- seeds: distinct seed passages among the pairs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

_NAME = re.compile(r"\b[A-Z][\w'’-]*(?:\s+(?:of|de|von|van|the|and|[A-Z][\w'’-]*))*\s*")
#: Capitalised words that start questions or sentences rather than name things.
_NOT_NAMES = frozenset(
    {
        "What",
        "Which",
        "Who",
        "Whom",
        "Whose",
        "When",
        "Where",
        "How",
        "Why",
        "In",
        "On",
        "At",
        "Of",
        "For",
        "From",
        "By",
        "The",
        "A",
        "An",
        "This",
        "That",
        "These",
        "Those",
        "Is",
        "Was",
        "Were",
        "Are",
        "Did",
        "Does",
        "Do",
        "Name",
        "After",
        "Before",
        "During",
        "Since",
    }
)
_LINKS = ("of", "de", "von", "van", "the", "and")


def entities(question: str) -> list[str]:
    """Capitalised name spans of a question, leading question/function words dropped."""
    out = []
    for m in _NAME.finditer(question):
        words = m.group(0).split()
        while words and (words[0] in _NOT_NAMES or words[0].lower() in _LINKS):
            words = words[1:]
        while words and words[-1].lower() in _LINKS:
            words = words[:-1]
        if words:
            out.append(" ".join(words))
    return out


def _vectors(texts: Sequence[str], method: str) -> tuple[np.ndarray, str]:
    from sagegen.analysis.duplicates import embed, embedder_available

    if method in ("auto", "embedding") and embedder_available():
        return np.asarray(embed(texts), dtype=np.float32), "embedding"
    from sagegen.loop.seeds import term_vectors

    return term_vectors(texts), "terms"


def question_diversity(
    items: Sequence[tuple[str, str, str]], duplicates: dict[str, Any] | None = None, *, method: str = "auto"
) -> dict[str, Any]:
    """Diversity of ``(id, question, seed_doc_id)`` items (see the module notes)."""
    n = len(items)
    names = [e for _, q, _ in items for e in entities(q)]
    out: dict[str, Any] = {
        "n": n,
        "method": None,
        "spread": None,
        "mean_nn_similarity": None,
        "nn_histogram": {},
        "entities": len(names),
        "distinct_entities": len(set(names)),
        "distinct_entity_ratio": len(set(names)) / len(names) if names else None,
        "distinct_seeds": len({s for _, _, s in items}),
        "exact_duplicates": (duplicates or {}).get("exact_duplicates", 0),
        "near_duplicate_pairs": len((duplicates or {}).get("near_pairs", [])),
    }
    if n < 2:
        return out
    vecs, used = _vectors([q for _, q, _ in items], method)
    sims = vecs @ vecs.T
    off = ~np.eye(n, dtype=bool)
    nn = np.where(off, sims, -np.inf).max(axis=1)
    hist: dict[int, int] = {}
    for s in nn.tolist():
        b = min(9, max(0, int(s * 10)))  # tenths of similarity: bin 9 = 0.9-1.0
        hist[b] = hist.get(b, 0) + 1
    out.update(
        method=used,
        spread=round(float(1.0 - sims[off].mean()), 4),
        mean_nn_similarity=round(float(nn.mean()), 4),
        nn_histogram={k: hist[k] for k in sorted(hist)},
    )
    return out
