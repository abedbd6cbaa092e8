"""A tiny word-overlap retriever over a few documents, and the server limits the server tests use."""

from __future__ import annotations

from collections.abc import Sequence

from sagegen.config import ServerConfig
from sagegen.records import Doc, Hit

DOCS = [
    Doc(id="p0", title="Paris", text="Paris is the capital and largest city of France."),
    Doc(id="p1", title="Lyon", text="Lyon is the third-largest city of France, on the Rhone."),
    Doc(id="p2", title="Berlin", text="Berlin is the capital and largest city of Germany."),
    Doc(id="p3", title="Hamlet", text="Hamlet is a tragedy written by William Shakespeare."),
    Doc(id="p4", title="", text="An untitled passage about rivers: the Rhone flows through Lyon."),
]


class WordOverlap:
    """A tiny deterministic retriever: score = shared lowercase words; ties broken by corpus order."""

    kind = "word-overlap"

    def __init__(self, docs: Sequence[Doc] = DOCS) -> None:
        self.docs = list(docs)
        self.calls: list[tuple[list[str], int]] = []

    def __len__(self) -> int:
        return len(self.docs)

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        self.calls.append((list(queries), k))
        out = []
        for q in queries:
            words = set(q.lower().replace("?", "").split())
            scored = [
                (len(words & set(d.contents.lower().replace(".", "").split())), -i, d)
                for i, d in enumerate(self.docs)
            ]
            scored.sort(key=lambda t: (t[0], t[1]), reverse=True)
            out.append([Hit(doc=d, score=float(s) + 0.5) for s, _, d in scored[:k]])
        return out


LIMITS = ServerConfig(max_topk=4, max_queries=5, max_query_chars=64, max_body_bytes=2048, default_topk=2)
