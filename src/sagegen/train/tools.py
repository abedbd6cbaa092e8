"""The search tool the policy calls during RL: one small environment per rollout.

TRL's ``GRPOTrainer(environment_factory=...)`` builds one ``SearchEnv`` per rollout and exposes
its public methods as tools. Its ``search`` method is the same tool, with the same schema and the
same result text, as the solver's native tool protocol (``solver.protocol=tools``): description
and parameter text come from ``solver_tool_*.j2``, results are ``tags.format_information``. A
policy trained here is therefore evaluated by ``sagegen eval -s solver.protocol=tools`` on
exactly the interface it learnt.

Each environment records its queries and the exact result strings it returned, so the trainer
can count searches per episode and check, on token ids, that those strings were masked out of
the loss (``sagegen.train.masking``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sagegen.agents import tags
from sagegen.prompts import render
from sagegen.retrieval.base import Retriever


def _tool_docstring() -> str:
    # transformers builds the JSON schema from a Google-style docstring; both texts live in templates.
    return f"{render('solver_tool_search.j2')}\n\nArgs:\n    query: {render('solver_tool_query.j2')}"


@dataclass
class SearchEnv:
    """One rollout's search tool: a shared retriever, a per-episode budget and a record of calls."""

    retriever: Retriever
    topk: int = 3
    max_searches: int = 10
    passage_chars: int = 0
    lock: threading.Lock | None = None
    queries: list[str] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    hit_ids: list[tuple[str, ...]] = field(default_factory=list)
    question: str = ""

    def reset(self, **row: Any) -> None:
        """Called by TRL with the dataset row before each rollout; returns no extra observation."""
        self.queries, self.results, self.hit_ids = [], [], []
        self.question = str(row.get("question", ""))
        return None

    def search(self, query: str) -> str:
        # The docstring is replaced below by the template text (no prompt text in Python).
        query = str(query).strip()
        if not query:
            raise ValueError("empty query")
        if len(self.queries) >= self.max_searches:
            # Counted as a tool failure by TRL; the model sees the message as the tool result.
            raise RuntimeError(render("solver_nudge.j2", problem="search_budget_exhausted"))
        if self.lock is not None:
            with self.lock:
                hits = self.retriever.search([query], self.topk)[0][: self.topk]
        else:
            hits = self.retriever.search([query], self.topk)[0][: self.topk]
        text = tags.format_information(hits, self.passage_chars)
        self.queries.append(query)
        self.results.append(text)
        self.hit_ids.append(tuple(h.doc.id for h in hits))
        return text

    @property
    def num_searches(self) -> int:
        return len(self.queries)


SearchEnv.search.__doc__ = _tool_docstring()


def env_factory(
    retriever: Retriever, *, topk: int = 3, max_searches: int = 10, passage_chars: int = 0
) -> Callable[[], SearchEnv]:
    """A zero-argument factory for ``GRPOTrainer(environment_factory=...)``; all envs share one retriever."""
    lock = threading.Lock()  # TRL may call tools from an async loop thread; keep index access serial

    def make() -> SearchEnv:
        return SearchEnv(
            retriever, topk=topk, max_searches=max_searches, passage_chars=passage_chars, lock=lock
        )

    return make


def tool_schema() -> dict[str, Any]:
    """The JSON schema transformers derives from ``SearchEnv.search`` (what the policy sees in its prompt)."""
    from transformers.utils import get_json_schema

    def search(query: str) -> str:
        return query

    search.__doc__ = _tool_docstring()
    return get_json_schema(search)
