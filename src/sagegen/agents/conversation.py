"""The call / search / record machinery every agent loop shares (solver, generator, reviser).

A :class:`Conversation` holds one agent run's chat history, its recorded steps and the searches
used. Its verbs are the only way the loops touch the LLM and the retriever, so each turn is
recorded the same way everywhere: ``call`` appends a ``model`` step (or, for the solver, an
``llm_error`` event: an expected event, the loop decides what follows), ``search`` runs one query
(off the event loop unless it is quick) and appends a ``search`` step, ``event`` records what the
loop noticed (malformed output, a forced finish), ``push`` keeps the history alternating.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from sagegen.agents import tags
from sagegen.errors import LLMError
from sagegen.llm.base import LLM, Message
from sagegen.records import Completion, Step, Trajectory, TrajectoryStatus
from sagegen.retrieval.base import Retriever, search_async

StepCallback = Callable[[Step], None]


class Conversation:
    """One agent run: chat history, recorded steps, searches used.

    ``recover_llm_errors``: a failed call is recorded as event ``llm_error`` and ``call`` returns
    ``None`` (the solver's way: it forces an answer, and ``sagegen.agents.outage`` later refuses to store
    it); otherwise the ``LLMError`` propagates (the generator's way: the pair is left for a rerun).
    """

    def __init__(
        self,
        agent: str,
        llm: LLM | None,
        retriever: Retriever | None,
        *,
        max_turn_tokens: int,
        temperature: float,
        seed: int | None,
        topk: int = 3,
        passage_chars: int = 0,
        messages: Sequence[Message] = (),
        on_step: StepCallback | None = None,
        recover_llm_errors: bool = False,
    ):
        self.agent, self.llm, self.retriever = agent, llm, retriever
        self.max_turn_tokens, self.temperature, self.seed = max_turn_tokens, temperature, seed
        self.topk, self.passage_chars = topk, passage_chars
        self.on_step, self.recover_llm_errors = on_step, recover_llm_errors
        self.messages: list[Message] = [dict(m) for m in messages]
        self.steps: list[Step] = []
        self.searches = 0

    async def call(
        self, *, stop: Sequence[str] | None = None, tools: list[dict[str, Any]] | None = None
    ) -> Completion | None:
        """One LLM turn on the history so far, recorded as a ``model`` step."""
        if self.llm is None:  # Search-R1's rollout drives its own token-level model instead
            raise TypeError(f"{type(self).__name__} has no chat LLM to call")
        t0 = time.perf_counter()
        try:
            c = await self.llm.complete(
                list(self.messages),
                max_tokens=self.max_turn_tokens,
                temperature=self.temperature,
                stop=list(stop) if stop else None,
                seed=self.seed,
                tools=tools,
            )
        except LLMError as e:
            if not self.recover_llm_errors:
                raise
            self.add(Step(kind="event", event="llm_error", text=str(e), seconds=time.perf_counter() - t0))
            return None
        # A cached replay carries the seconds its first call took: the cost, not this wait.
        self.add(
            Step(
                kind="model",
                text=c.text,
                prompt_tokens=c.prompt_tokens,
                completion_tokens=c.completion_tokens,
                seconds=c.seconds or time.perf_counter() - t0,
                reasoning=c.reasoning,
                finish_reason=c.finish_reason,
            )
        )
        return c

    async def search(self, query: str) -> str:
        """Run one query, record it, and return the ``<information>`` block to show the model."""
        assert self.retriever is not None, f"the {self.agent} has no search tool"
        t0 = time.perf_counter()
        hits = (await search_async(self.retriever, [query], self.topk))[0][: self.topk]
        self.searches += 1
        self.add(
            Step(
                kind="search",
                query=query,
                hit_ids=tuple(h.doc.id for h in hits),
                text=" | ".join(h.doc.title for h in hits),
                seconds=time.perf_counter() - t0,
            )
        )
        return tags.format_information(hits, self.passage_chars)

    def push(self, role: str, content: str) -> None:
        # Keep user/assistant alternation: merge into the previous message of the same role
        # (a retry after an LLM error leaves a user message last), never push empty turns.
        if not content:
            return
        last = self.messages[-1] if self.messages else None
        if last is not None and last["role"] == role and role != "tool" and "tool_calls" not in last:
            last["content"] = f"{last['content']}\n\n{content}"
        else:
            self.messages.append({"role": role, "content": content})

    def add(self, step: Step) -> None:
        self.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)

    def event(self, name: str, text: str = "") -> None:
        self.add(Step(kind="event", event=name, text=text))

    def trajectory(self, status: TrajectoryStatus, question: str, answer: str | None) -> Trajectory:
        return Trajectory(
            agent=self.agent,
            question=question,
            steps=tuple(self.steps),
            answer=answer,
            status=status,
            messages=tuple(dict(m) for m in self.messages),
        )
