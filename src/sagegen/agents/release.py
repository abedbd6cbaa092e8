"""The two steps the authors' release does differently from sagegen's loop, for ``--profile sage``
(the profile's settings are data: ``sagegen/profiles/sage.yaml``).

1. **Feedback transcripts.** The release keeps each agent's run as one flat prompt string and shows
   the reviser two halves of it: the agent's *prompt* (its instructions with the seed document or
   the question) and its *output* (every later turn, retrieved ``<information>`` included), whole.
   :func:`split_trace` makes the same halves from a trajectory's chat messages: everything up to and
   including the first user message is the prompt, the rest is the output. For a reviser of round
   >= 2 that first user message *is* its feedback prompt, so the next round nests the previous
   prompt — the release's round chaining (``--previous_feedback_file``).
2. **The reviser.** Feedback rounds make one call with no search tool (the release overrides
   ``max_turn`` to 0), and the pair is read from the last ``<question>``/``<answer>`` of the reply,
   with no further checks (:func:`read_revision`); a reply without both is a failed revision. The
   call itself is ``sagegen.agents.generator.revise`` with ``generator.feedback_search: false``,
   on the agents' shared conversation machinery.

Both traces are whole; only past the model's context does :mod:`sagegen.agents.feedback_fit`
shorten the oldest retrieved text, recorded as event ``feedback_shortened``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sagegen.agents import tags
from sagegen.llm.base import Message
from sagegen.prompts import Prompts
from sagegen.records import Candidate, Trajectory, Verdict

_OPEN, _CLOSE = "<information>", "</information>"


def split_trace(traj: Trajectory) -> tuple[str, list[dict[str, Any]]]:
    """(prompt, output segments) of a trajectory, as the release splits its flat transcript."""
    msgs = [dict(m) for m in traj.messages]
    first_user = next((i for i, m in enumerate(msgs) if m.get("role") == "user"), len(msgs) - 1)
    prompt = "\n".join(str(m.get("content") or "") for m in msgs[: first_user + 1])
    segments: list[dict[str, Any]] = []
    for m in msgs[first_user + 1 :]:
        content = str(m.get("content") or "").strip()
        if m.get("role") != "assistant" and content.startswith(_OPEN):
            inner = content[len(_OPEN) :]
            inner = inner[: -len(_CLOSE)] if inner.endswith(_CLOSE) else inner
            segments.append({"kind": "information", "text": inner.strip()})
        else:
            segments.append({"kind": "model" if m.get("role") == "assistant" else "prompt", "text": content})
    return prompt, segments


def join_segments(segments: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{_OPEN}{s['text']}{_CLOSE}" if s["kind"] == "information" else str(s["text"]) for s in segments
    )


def feedback_opening(
    candidate: Candidate, own: Trajectory, solver: Trajectory, verdict: Verdict, prompts: Prompts
) -> tuple[list[list[dict[str, Any]]], Callable[[], list[Message]]]:
    """The release's too-easy (``difficulty``) or incorrect (``correctness``) prompt, one user message:
    the two output traces (what ``feedback_fit`` may shorten) and the function that renders it."""
    gen_prompt, gen_out = split_trace(own)
    sol_prompt, sol_out = split_trace(solver)
    name = "feedback_too_easy.j2" if verdict.label == "too_easy" else "feedback_incorrect.j2"

    def build() -> list[Message]:
        return [
            {
                "role": "user",
                "content": prompts(
                    name,
                    target=candidate.target,
                    generator_prompt=gen_prompt,
                    generator_output=join_segments(gen_out),
                    solver_prompt=sol_prompt,
                    solver_output=join_segments(sol_out),
                ),
            }
        ]

    return [gen_out, sol_out], build


def read_revision(text: str) -> tuple[str | None, str | None, str]:
    """(question, answer, plan) of a revision as the release reads it: the last ``<question>`` and
    ``<answer>``, the plan under ``<search steps>``, and no further checks."""
    return (
        tags.last(text, "question"),
        tags.last(text, "answer"),
        tags.last(text, "search steps", allow_unclosed=True) or "",
    )


_LAST_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_FIRST_SEARCH = re.compile(r"<search>(.*?)</search>", re.DOTALL)


async def solver_turns(run: Any) -> Trajectory:
    """The release's solver loop (``prompt_gemini_agentic_search_batch.py``, ``agentic_search``), for
    ``solver.prompt_set: sage``; ``run`` is the solver's conversation (``agents.solver._Run``).

    * ``solver.max_searches`` (``--max_turn``, 10) bounds the *model calls*, not the searches: a
      search asked for in the last call is run (the release counts it) but never shown, and the
      attempt ends without an answer (the release's "None");
    * each call stops at ``</search>``; its answer is the *last* closed ``<answer>`` (``extract_solution``)
      and an empty one does not end the attempt (``while not final_answer``);
    * a turn with no ``<search>`` (malformed) gets an empty ``<information></information>`` and the
      loop goes on; an empty reply spends the turn and changes nothing.
    """
    for _ in range(run.cfg.max_searches):
        c = await run.call(stop=("</search>",))
        if c is None:  # an LLM error (recorded by call): the turn is spent, as a failed Gemini call
            continue
        answers = _LAST_ANSWER.findall(c.text)
        answer = answers[-1].strip() if answers else None
        if answer:
            run.push("assistant", c.text)
            return run.finish(answer, "answered")
        if answer is not None or not c.text:  # "<answer></answer>" or nothing: the prompt is unchanged
            run.event("empty_answer" if answer is not None else "empty_reply", c.text[-300:])
            continue
        turn = c.text + "</search>"
        run.push("assistant", turn)
        m = _FIRST_SEARCH.search(turn)
        if m:
            info = await run.search(m.group(1).strip())
        else:
            run.event("no_action", c.text[-300:])
            info = tags.format_information([])
        run.push("user", info)
    run.event("no_forced_answer", "the release's turn budget is spent: its answer is None")
    return run.finish(None, "failed")
