"""The shortcut pre-check (docs/design.md §5.4): too-easy pairs found by the retriever alone, no solver call.

The paper's analysis of too-easy pairs: 35% had everything in one document and 31% were specific
enough to search for the answer directly. Both show up without a model: search the corpus for the
question itself (and for the plan's first sub-question, which a solver can ask knowing only the
question), and look for the normalised answer in the top-k passages a solver would see. If it is
there, one search would have handed the solver its answer, so the pair is too easy for any target
S ≥ 2 and the K solver attempts are not paid for.

When is it safe (``pipeline.precheck=auto``, the default)?

- only for targets S ≥ 2 (with S = 1 one search is a pass, and passing needs a solver to be right);
- only for answers that cannot turn up by chance: whole-token matches of the normalised answer,
  never bare numbers of one or two digits (``3`` occurs in half the passages of any corpus).

Later sub-questions of the plan are not used by default (``pipeline.precheck_subquestions=first``):
they name intermediate answers a solver learns only from earlier searches, so finding the final
answer from them proves no one-search shortcut. ``all`` checks every one of them, as the strictest
reading of "several hops answered by one query".

The verdict of a pre-checked pair has ``source="precheck"``, ``difficulty`` 1, ``num_attempts`` 0 and
``avg_at_k`` 1.0 (the shortcut solved it); the passage that gave the answer away is the evidence of a
synthetic trace (agent ``precheck``) that feedback shows the reviser as the solver's trace.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from sagegen.prompts import render
from sagegen.records import Candidate, Hit, Step, Trajectory
from sagegen.retrieval.base import Retriever
from sagegen.verdict.judge import normalize_answer

_STEP = re.compile(r"(?:^|\s)\d{1,2}[.)]\s+")


def sub_questions(plan: str) -> list[str]:
    """The sub-questions of an answering plan ``1. Who built X? Eiffel (X). 2. ...``, in order."""
    out = []
    for part in _STEP.split(plan or ""):
        q, mark, _ = part.partition("?")
        if mark and q.strip():
            out.append(q.strip() + "?")
    return out


def answer_pattern(answer: str, *, safe_only: bool = True) -> re.Pattern[str] | None:
    """A whole-token pattern of the normalised answer; None for an empty answer and, with
    ``safe_only``, for one or two bare digits, whose match would prove nothing."""
    norm = normalize_answer(answer)
    if not norm or (safe_only and norm.isdigit() and len(norm) <= 2):
        return None
    return re.compile(r"(?:^|\s)" + re.escape(norm) + r"(?:\s|$)")


def applies(cand: Candidate, mode: str) -> bool:
    """Whether the pre-check may decide this candidate (see the module notes on safety)."""
    if mode == "off":
        return False
    if cand.target < 2:
        return False
    return answer_pattern(cand.answer, safe_only=mode != "on") is not None


@dataclass(frozen=True)
class Shortcut:
    """The query whose top-k passages hold the answer, and the first such passage."""

    query: str
    hits: tuple[Hit, ...]
    evidence: Hit


async def find_shortcut(
    cand: Candidate, retriever: Retriever, topk: int, subquestions: str = "first"
) -> Shortcut | None:
    """Search the question (and its sub-questions per ``subquestions``); the first query whose top-k
    passages contain the normalised answer, or None."""
    pattern = answer_pattern(cand.answer, safe_only=False)  # applies() already refused unsafe answers
    if pattern is None:
        return None
    queries = [cand.question]
    subs = sub_questions(cand.plan)
    if subquestions == "first":
        queries += subs[:1]
    elif subquestions == "all":
        queries += subs
    # Retrievers are synchronous; keep the event loop free for the other pairs in flight.
    results = await asyncio.to_thread(retriever.search, queries, topk)
    for query, hits in zip(queries, results, strict=True):
        for h in hits[:topk]:
            if pattern.search(normalize_answer(h.doc.contents)):
                return Shortcut(query=query, hits=tuple(hits[:topk]), evidence=h)
    return None


def shortcut_trajectory(cand: Candidate, shortcut: Shortcut, passage_chars: int = 0) -> Trajectory:
    """A solver-shaped trace of the shortcut (one search, its passages, the answer) for feedback.

    The giving-away passage comes first, so the reviser sees the evidence it must hide."""
    from sagegen.agents import tags

    ordered = [shortcut.evidence, *(h for h in shortcut.hits if h.doc.id != shortcut.evidence.doc.id)]
    messages = (
        {"role": "system", "content": ""},
        {"role": "user", "content": cand.question},
        {"role": "assistant", "content": render("precheck_search.j2", query=shortcut.query)},
        {"role": "user", "content": tags.format_information(ordered, passage_chars)},
        {
            "role": "assistant",
            "content": render("precheck_answer.j2", title=shortcut.evidence.doc.title, answer=cand.answer),
        },
    )
    step = Step(
        kind="search",
        query=shortcut.query,
        hit_ids=tuple(h.doc.id for h in ordered),
        text=" | ".join(h.doc.title for h in ordered),
    )
    return Trajectory(
        agent="precheck",
        question=cand.question,
        steps=(step,),
        answer=cand.answer,
        status="answered",
        messages=messages,
    )
