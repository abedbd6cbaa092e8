"""The search agent (solver): Search-R1's think / search / information / answer loop.

``solve`` sees only the question. Each turn the model reasons in ``<think>``, then either
searches (``<search> q </search>`` → the top-k passages come back in ``<information>``) or
answers (``<answer> a </answer>``). Malformed turns are expected, not fatal: each is recorded
as an ``event`` step; the first gets one corrective nudge, the next one (or running out of
searches) gets a forced final answer. ``cfg.protocol == "tools"`` runs the same loop with the
OpenAI native tool-calling API instead of tags.
"""

from __future__ import annotations

import json
from typing import Any

from sagegen.agents import tags
from sagegen.agents.conversation import Conversation, StepCallback
from sagegen.config import SolverConfig
from sagegen.llm.base import LLM
from sagegen.prompts import render
from sagegen.records import Completion, Trajectory, TrajectoryStatus
from sagegen.retrieval.base import Retriever


async def solve(
    question: str,
    llm: LLM,
    retriever: Retriever,
    cfg: SolverConfig,
    *,
    seed: int | None = None,
    on_step: StepCallback | None = None,
) -> Trajectory:
    """Run the search agent once on ``question``; ``on_step`` sees each step as it happens."""
    if cfg.prompt_set == "searchr1":  # Search-R1's own rollout on token ids (agents/searchr1.py)
        from sagegen.agents.searchr1 import solve_searchr1

        return await solve_searchr1(question, llm, retriever, cfg, seed=seed, on_step=on_step)
    run = _Run(question, llm, retriever, cfg, seed, on_step)
    if cfg.protocol == "tools":
        return await run.loop_tools()
    return await run.loop_tags()


class _Run(Conversation):
    """One attempt: the shared conversation machinery plus the question and the strikes."""

    def __init__(
        self,
        question: str,
        llm: LLM,
        retriever: Retriever,
        cfg: SolverConfig,
        seed: int | None,
        on_step: StepCallback | None,
    ):
        super().__init__(
            "solver",
            llm,
            retriever,
            max_turn_tokens=cfg.max_turn_tokens,
            temperature=cfg.temperature,
            seed=seed,
            topk=cfg.topk,
            passage_chars=cfg.passage_chars,
            on_step=on_step,
            recover_llm_errors=True,
        )
        self.question, self.cfg = question, cfg
        self.strikes = 0  # malformed turns and LLM errors so far: the first is forgiven, the second forces

    # -- the two loops ------------------------------------------------------------------

    async def loop_tags(self) -> Trajectory:
        if self.cfg.prompt_set == "sage":  # the release's own loop (agents/release.py, docs/protocol.md)
            from sagegen.agents.release import solver_turns

            self.messages = [
                {
                    "role": "system",
                    "content": self.cfg.prompts("solver_system.j2", max_searches=self.cfg.max_searches),
                },
                {"role": "user", "content": self.cfg.prompts("solver_user.j2", question=self.question)},
            ]
            return await solver_turns(self)
        self.messages = [
            {
                "role": "system",
                "content": self.cfg.prompts("solver_system.j2", max_searches=self.cfg.max_searches),
            },
            {
                "role": "user",
                "content": self.cfg.prompts("solver_user.j2", question=self.question),
            },
        ]
        while True:
            c = await self.call(stop=tags.SOLVER_STOPS)
            if c is None:
                if self.strike():
                    return await self.force("llm_error")
                continue  # one retry of the same turn
            act = tags.parse_action(c.text, c.finish_reason)
            self.push("assistant", act.transcript)
            if act.kind == "answer" and act.content and not act.truncated:
                return self.finish(act.content, "answered")
            if act.kind == "search" and act.content and not act.truncated:
                if self.searches >= self.cfg.max_searches:
                    self.event("search_budget_exhausted", act.content)
                    return await self.force("search_budget_exhausted")
                self.push("user", await self.search(act.content))
                continue
            problem = _problem(act)
            self.event(problem, c.text[-300:])
            if self.strike():
                return await self.force(problem)
            self.push("user", self.cfg.prompts("solver_nudge.j2", problem=problem))

    async def loop_tools(self) -> Trajectory:
        self.messages = [
            {
                "role": "system",
                "content": self.cfg.prompts("solver_tools_system.j2", max_searches=self.cfg.max_searches),
            },
            {"role": "user", "content": self.cfg.prompts("solver_user.j2", question=self.question)},
        ]
        while True:
            c = await self.call(stop=None, tools=[search_tool_spec()])
            if c is None:
                if self.strike():
                    return await self.force("llm_error")
                continue
            if c.tool_calls:
                problem = await self.run_tool_calls(c)
                if problem == "search_budget_exhausted":
                    return await self.force(problem)
                if problem and self.strike():
                    return await self.force(problem)
                continue
            answer = tags.last(c.text, "answer", allow_unclosed=c.finish_reason != "length")
            self.push("assistant", c.text.strip())
            if answer:
                return self.finish(answer, "answered")
            problem = (
                "truncated"
                if c.finish_reason == "length"
                else ("empty_answer" if tags.has_tag(c.text, "answer") else "no_action")
            )
            self.event(problem, c.text[-300:])
            if self.strike():
                return await self.force(problem)
            self.push("user", self.cfg.prompts("solver_nudge.j2", problem=problem))

    async def run_tool_calls(self, c: Completion) -> str | None:
        """Answer every tool call of one turn (the API requires a reply to each); return a problem."""
        calls = [
            dict(tc, id=tc.get("id") or f"call_{len(self.steps)}_{i}") for i, tc in enumerate(c.tool_calls)
        ]
        # Per-turn state a provider needs back verbatim rides along: DeepSeek's reasoning_content on
        # the turn, Gemini's thought signature (extra_content) on each call (sagegen.llm.providers).
        self.messages.append(
            {
                "role": "assistant",
                "content": c.text or "",
                **c.assistant_extra,
                "tool_calls": [
                    {
                        "id": tc["id"],
                        "type": "function",
                        "function": {
                            "name": tc.get("name", ""),
                            "arguments": _arguments_str(tc.get("arguments")),
                        },
                        **({"extra_content": tc["extra_content"]} if "extra_content" in tc else {}),
                    }
                    for tc in calls
                ],
            }
        )
        problem: str | None = None
        for tc in calls:
            query = _tool_query(tc)
            if query is None:
                self.event(
                    "bad_tool_call",
                    json.dumps({"name": tc.get("name"), "arguments": tc.get("arguments")}, default=str)[:300],
                )
                content, problem = (
                    self.cfg.prompts("solver_nudge.j2", problem="bad_tool_call"),
                    problem or "bad_tool_call",
                )
            elif self.searches >= self.cfg.max_searches:
                self.event("search_budget_exhausted", query)
                content, problem = (
                    self.cfg.prompts("solver_nudge.j2", problem="search_budget_exhausted"),
                    "search_budget_exhausted",
                )
            else:
                content = await self.search(query)
            self.messages.append({"role": "tool", "tool_call_id": tc["id"], "content": content})
        return problem

    # -- shared pieces ------------------------------------------------------------------

    async def force(self, reason: str) -> Trajectory:
        """Ask for the final answer alone; ``forced`` if one comes, ``failed`` otherwise.

        With ``force_answer`` off the attempt ends here without an answer (the release's solver
        simply stops after its last turn), recorded as event ``no_forced_answer``.
        """
        if not self.cfg.force_answer:
            self.event("no_forced_answer", reason)
            return self.finish(None, "failed")
        self.event("forced_answer", reason)
        self.push("user", self.cfg.prompts("solver_force.j2", reason=reason, question=self.question))
        c = await self.call(stop=("</answer>",))
        if c is None:
            return self.finish(None, "failed")
        act = tags.parse_action(c.text, c.finish_reason)
        self.push("assistant", act.transcript)
        if act.kind == "answer" and act.content and not act.truncated:
            return self.finish(act.content, "forced")
        self.event("no_answer", c.text[-300:])
        return self.finish(None, "failed")

    def strike(self) -> bool:
        """Count a problem; True when it is not the first (time to force the answer)."""
        self.strikes += 1
        return self.strikes > 1

    def finish(self, answer: str | None, status: TrajectoryStatus) -> Trajectory:
        return self.trajectory(status, self.question, answer)


def _problem(act: tags.Action) -> str:
    if act.truncated:
        return "truncated"
    if act.kind == "search":
        return "empty_search"
    if act.kind == "answer":
        return "empty_answer"
    return "no_action"


def search_tool_spec() -> dict[str, Any]:
    """The OpenAI function-tool schema of ``search``."""
    return {
        "type": "function",
        "function": {
            "name": "search",
            "description": render("solver_tool_search.j2"),
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "description": render("solver_tool_query.j2")}},
                "required": ["query"],
            },
        },
    }


def _arguments_str(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments if arguments is not None else {})


def _tool_query(tc: dict[str, Any]) -> str | None:
    """The query of a well-formed ``search`` call; None for an unknown tool or bad arguments."""
    if tc.get("name") != "search":
        return None
    args = tc.get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    query = args.get("query")
    if not isinstance(query, str) or not query.strip():
        return None
    return query.strip()
