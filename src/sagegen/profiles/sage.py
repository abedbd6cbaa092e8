"""The two steps the authors' release does differently from sagegen's loop, for ``--protocol sage``.

1. **Feedback transcripts.** The release keeps each agent's run as one flat prompt string and shows
   the reviser two halves of it: the agent's *prompt* (its instructions with the seed document or
   the question) and its *output* (every later turn, retrieved ``<information>`` included), whole.
   :func:`split_trace` makes the same halves from a trajectory's chat messages: everything up to and
   including the first user message is the prompt, the rest is the output. For a reviser of round
   >= 2 that first user message *is* its feedback prompt, so the next round nests the previous
   prompt — the release's round chaining (``--previous_feedback_file``).
2. **The reviser.** Feedback rounds make one call with no search tool (the release overrides
   ``max_turn`` to 0), and the pair is read from the last ``<question>``/``<answer>`` of the reply,
   with no further checks; a reply without both is a failed revision.

Both traces are whole; only past the model's context does :mod:`sagegen.agents.feedback_fit`
shorten the oldest retrieved text, recorded as event ``feedback_shortened``.
"""

from __future__ import annotations

import time
from typing import Any

from sagegen.agents import feedback_fit, tags
from sagegen.agents.feedback_fit import Shortening
from sagegen.agents.generator import Authored, with_shortening
from sagegen.config import GeneratorConfig
from sagegen.llm.base import LLM, Message
from sagegen.prompts import render
from sagegen.records import Candidate, Doc, Step, Trajectory, Verdict

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


def feedback_prompt(
    candidate: Candidate,
    own: Trajectory,
    solver: Trajectory,
    verdict: Verdict,
    budget_tokens: int = 0,
) -> tuple[list[Message], Shortening]:
    """The release's too-easy (``difficulty``) or incorrect (``correctness``) prompt, one user message."""
    gen_prompt, gen_out = split_trace(own)
    sol_prompt, sol_out = split_trace(solver)
    name = "feedback_too_easy.j2" if verdict.label == "too_easy" else "feedback_incorrect.j2"
    built: list[str] = []

    def build() -> int:
        built[:] = [render(name, "sage", target=candidate.target, generator_prompt=gen_prompt,
                           generator_output=join_segments(gen_out), solver_prompt=sol_prompt,
                           solver_output=join_segments(sol_out))]
        return len(built[0])

    shortened = feedback_fit.fit([gen_out, sol_out], build, budget_tokens)
    build()
    return [{"role": "user", "content": built[0]}], shortened


async def revise(
    doc: Doc,
    candidate: Candidate,
    own: Trajectory,
    solver: Trajectory,
    verdict: Verdict,
    llm: LLM,
    cfg: GeneratorConfig,
    *,
    seed: int | None = None,
    temperature: float = 1.0,
    round: int = 2,
    budget_tokens: int = 0,
) -> Authored:
    """One feedback call, no search: the release's ``question_gen`` on the feedback prompt."""
    messages, shortened = feedback_prompt(candidate, own, solver, verdict, budget_tokens)
    t0 = time.monotonic()
    comp = await llm.complete(messages, max_tokens=cfg.max_turn_tokens, temperature=temperature, seed=seed)
    text = comp.text
    steps = [Step(kind="model", text=text, prompt_tokens=comp.prompt_tokens,
                  completion_tokens=comp.completion_tokens, seconds=comp.seconds or time.monotonic() - t0)]
    messages = [*messages, {"role": "assistant", "content": text}]
    question, answer = tags.last(text, "question"), tags.last(text, "answer")
    plan = tags.last(text, "search steps", allow_unclosed=True) or ""
    if not question or not answer:
        steps.append(Step(kind="event", event="malformed", text="no <question> and <answer> in the reply"))
        traj = Trajectory(agent="reviser", question=question or "", steps=tuple(steps), answer=answer,
                          status="failed", messages=tuple(messages))
        return with_shortening(Authored(None, traj), shortened)
    traj = Trajectory(agent="reviser", question=question, steps=tuple(steps), answer=answer,
                      status="answered", messages=tuple(messages))
    support = dict.fromkeys([doc.id, *candidate.supporting_ids, *solver.retrieved_ids])
    cand = Candidate(question=question, answer=answer, answer_type=candidate.answer_type,
                     target=candidate.target, plan=plan, seed_doc_id=doc.id, round=round,
                     supporting_ids=tuple(support))
    return with_shortening(Authored(cand, traj), shortened)
