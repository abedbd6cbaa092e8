"""The generator and the reviser (DESIGN §1 steps 1 and 3): one short authoring loop, two openings.

The loop is the solver's tag protocol turned around: the model reads a seed passage, searches the
same corpus (``<search>`` → ``<information>``), and finally writes ``<question>``, ``<answer>`` and
``<answering_steps>``. The generator opens with the seed passage (``generator_user.j2``); the
reviser opens with execution feedback (``feedback_too_easy.j2`` / ``feedback_incorrect.j2``)
carrying its own earlier trace and one solver trace. Both share the rules:

- at most ``cfg.max_searches`` searches; a search asked beyond that is not run, the model is told
  to finish from what it has (forced finalisation, trajectory status ``forced``);
- a turn with neither a search nor a usable final pair (missing tags, an over-long answer, a
  how/why question, a question that points at "the passage") is recorded as an ``event`` step and
  answered with a correction prompt, up to ``cfg.max_format_retries`` times; after that the
  trajectory ends ``failed`` with no candidate;
- small models often write the question alone or as plain text: such a question is taken (event
  ``untagged_question``) and the model is asked for its answer once (``generator_answer.j2``); a
  plain-text reply is accepted as the answer only if it looks like one of the asked type;
- every call passes the same ``seed`` (derived by the pipeline from run seed, pair and round), so
  the LLM call cache replays an interrupted trajectory exactly on resume.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sagegen.agents import feedback_fit, tags
from sagegen.agents.feedback_fit import Shortening
from sagegen.config import GeneratorConfig
from sagegen.llm.base import LLM, Message
from sagegen.prompts import render
from sagegen.records import Candidate, Doc, Step, Trajectory, Verdict
from sagegen.retrieval.base import Retriever

#: Stop after a query (the loop runs it) or after the plan (the pair is complete).
SEARCH_STOPS = ("</search>",)
FINAL_STOPS = ("</answering_steps>", "</answering steps>")

_HOW_WHY = re.compile(
    r"^\s*(why\b|how\b(?!\s+(many|much|old|long|far|tall|large|big|high|often|deep)\b))", re.IGNORECASE
)
#: Template text a small model may copy instead of filling in.
_PLACEHOLDERS = {"the question", "question", "the answer", "the short answer", "answer", "the date",
                 "the number", "the entity", "a date", "a number", "an entity"}
_YES_NO = re.compile(r"^\s*(is|are|was|were|do|does|did|can|could|has|have|had|will|would|should)\b",
                     re.IGNORECASE)
_POINTS_AT_SOURCE = re.compile(
    r"\b(the|this|that|given|above|seed)\s+(passage|text|document|article)\b", re.IGNORECASE
)


@dataclass(frozen=True)
class Authored:
    """What one authoring loop produced: a candidate (``None`` when it failed) and its trajectory."""

    candidate: Candidate | None
    trajectory: Trajectory


def check_pair(question: str | None, answer: str | None, cfg: GeneratorConfig) -> str | None:
    """Why a final pair is unusable (a message for the model), or ``None`` when it is fine."""
    if not question:
        return "there was no <question> ... </question>."
    if not answer:
        return "there was no <answer> ... </answer>."
    if len(question.split()) < 4 or question.lower().strip(" ?.") in _PLACEHOLDERS:
        return "the question must be a full sentence of your own, not a placeholder."
    if answer.lower().strip(" .") in _PLACEHOLDERS:
        return "the answer must be the actual short answer, not a placeholder."
    if len(answer.split()) > cfg.max_answer_words:
        return (
            f"the answer has {len(answer.split())} words; it must be short (at most {cfg.max_answer_words})."
        )
    if _YES_NO.match(question):
        return "yes/no questions are not allowed; ask for a short fact (a number, a date or an entity)."
    if _HOW_WHY.match(question):
        return "how/why questions are not allowed; ask for a short fact (a number, a date or an entity)."
    if _POINTS_AT_SOURCE.search(question):
        return "the question mentions the passage/text/document; it must stand alone."
    if re.search(r"(?<!\w)" + re.escape(answer.strip()) + r"(?!\w)", question, re.IGNORECASE):
        return "the question contains its own answer."
    return None


def seed_messages(doc: Doc, target: int, answer_type: str, cfg: GeneratorConfig) -> list[Message]:
    """The generator's opening: system rules plus the seed passage, target S and answer type."""
    return [
        {
            "role": "system",
            "content": render(
                "generator_system.j2", cfg.prompt_set, target=target, answer_type=answer_type,
                max_searches=cfg.max_searches
            ),
        },
        {
            "role": "user",
            "content": render(
                "generator_user.j2",
                cfg.prompt_set,
                title=doc.title,
                text=_clip(doc.text, cfg.seed_chars),
                target=target,
                answer_type=answer_type,
            ),
        },
    ]


def feedback_prompt(
    doc: Doc,
    candidate: Candidate,
    own: Trajectory,
    solver: Trajectory,
    verdict: Verdict,
    cfg: GeneratorConfig,
    budget_tokens: int = 0,
) -> tuple[list[Message], Shortening]:
    """The feedback opening with whole traces; shortened only past ``budget_tokens`` (``feedback_fit``)."""
    own_entries, solver_entries = trace_entries(own, cfg), trace_entries(solver, cfg)
    built: list[list[Message]] = []

    def build() -> int:
        built[:] = [_feedback_messages(doc, candidate, own_entries, solver_entries, solver, verdict, cfg)]
        return sum(len(str(m["content"])) for m in built[0])

    shortened = feedback_fit.fit([own_entries, solver_entries], build, budget_tokens)
    build()
    return built[0], shortened


def _feedback_messages(
    doc: Doc,
    candidate: Candidate,
    own_entries: list[dict[str, Any]],
    solver_entries: list[dict[str, Any]],
    solver: Trajectory,
    verdict: Verdict,
    cfg: GeneratorConfig,
) -> list[Message]:
    common: dict[str, Any] = dict(
        title=doc.title,
        text=_clip(doc.text, cfg.seed_chars),
        question=candidate.question,
        answer=candidate.answer,
        plan=candidate.plan,
        target=candidate.target,
        answer_type=candidate.answer_type,
        own_trace=render("feedback_trace.j2", entries=own_entries),
        solver_trace=render("feedback_trace.j2", entries=solver_entries),
    )
    if verdict.label == "too_easy":
        user = render(
            "feedback_too_easy.j2",
            difficulty=verdict.difficulty or 0,
            solver_searches=solver.num_searches,
            **common,
        )
    else:
        user = render(
            "feedback_incorrect.j2", num_attempts=verdict.num_attempts, solver_answer=solver.answer, **common
        )
    system = render(
        "generator_system.j2",
        target=candidate.target,
        answer_type=candidate.answer_type,
        max_searches=cfg.max_searches,
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def render_trace(traj: Trajectory, cfg: GeneratorConfig) -> str:
    """A trajectory as text for a feedback prompt: model turns, queries and results (whole by default)."""
    return render("feedback_trace.j2", entries=trace_entries(traj, cfg))


def trace_entries(traj: Trajectory, cfg: GeneratorConfig) -> list[dict[str, Any]]:
    """The entries of :func:`render_trace`; clipped only by ``feedback_message_chars`` and
    ``feedback_max_entries`` (both off by default)."""
    entries: list[dict[str, Any]] = []
    if cfg.nest_previous_prompt and traj.agent == "reviser" and len(traj.messages) > 1:
        # Its own opening was the previous feedback prompt: show it whole, nesting the earlier rounds.
        entries.append({"kind": "prompt", "text": str(traj.messages[1].get("content") or "")})
    n = 0
    # The chat transcript has the retrieved text; the first two messages (system, opening) are context
    # the reviser already has or does not need.
    for m in traj.messages[2:]:
        content = str(m.get("content") or "")
        if m.get("role") == "assistant":
            query = tags.last(content, "search", allow_unclosed=True)
            body = tags.strip_tags(content, ("search",)) if query is None else content
            if query is not None:
                n += 1
                pre = (
                    content[: content.lower().rfind("<search")].strip()
                    if "<search" in content.lower()
                    else ""
                )
                if pre:
                    entries.append({"kind": "model", "text": _clip(pre, cfg.feedback_message_chars)})
                entries.append({"kind": "search", "n": n, "text": query})
            else:
                entries.append({"kind": "model", "text": _clip(body, cfg.feedback_message_chars)})
        elif "<information>" in content:
            entries.append(
                {"kind": "information", "text": _clip(" ".join(content.split()), cfg.feedback_message_chars)}
            )
    if cfg.feedback_max_entries and len(entries) > cfg.feedback_max_entries:
        entries = entries[-cfg.feedback_max_entries :]
    return entries


async def generate(
    doc: Doc,
    target: int,
    answer_type: str,
    llm: LLM,
    retriever: Retriever,
    cfg: GeneratorConfig,
    *,
    seed: int | None = None,
    temperature: float = 0.7,
    round: int = 1,
) -> Authored:
    """Write a fresh candidate from seed passage ``doc`` (DESIGN §1 step 1)."""
    return await author(
        seed_messages(doc, target, answer_type, cfg),
        doc,
        target,
        answer_type,
        llm,
        retriever,
        cfg,
        seed=seed,
        temperature=temperature,
        round=round,
        agent="generator",
    )


async def revise(
    doc: Doc,
    candidate: Candidate,
    own: Trajectory,
    solver: Trajectory,
    verdict: Verdict,
    llm: LLM,
    retriever: Retriever,
    cfg: GeneratorConfig,
    *,
    seed: int | None = None,
    temperature: float = 0.7,
    round: int = 2,
    budget_tokens: int = 0,
) -> Authored:
    """Rewrite a non-passing candidate from execution feedback (DESIGN §1 step 3)."""
    messages, shortened = feedback_prompt(doc, candidate, own, solver, verdict, cfg, budget_tokens)
    out = await author(
        messages,
        doc,
        candidate.target,
        candidate.answer_type,
        llm,
        retriever,
        cfg,
        seed=seed,
        temperature=temperature,
        round=round,
        agent="reviser",
        inherited_ids=candidate.supporting_ids,
    )
    return with_shortening(out, shortened)


def with_shortening(out: Authored, shortened: Shortening) -> Authored:
    """Record on the reviser's trajectory that its feedback prompt was shortened to fit (if it was)."""
    if not shortened:
        return out
    event = Step(kind="event", event="feedback_shortened", text=shortened.describe())
    traj = out.trajectory.model_copy(update={"steps": (event, *out.trajectory.steps)})
    return Authored(out.candidate, traj)


async def author(
    messages: list[Message],
    doc: Doc,
    target: int,
    answer_type: str,
    llm: LLM,
    retriever: Retriever,
    cfg: GeneratorConfig,
    *,
    seed: int | None,
    temperature: float,
    round: int,
    agent: str,
    inherited_ids: Sequence[str] = (),
) -> Authored:
    """The authoring loop shared by generator and reviser: search until a usable pair, or give up.

    It always ends: searches are capped (then the model is forced to finish), one ask for a pending
    question's answer is free, and every other turn that is neither a run search nor a usable pair
    spends one of ``max_format_retries`` — at most max_searches + max_format_retries + 4 turns.
    """
    messages = list(messages)
    steps: list[Step] = []
    searches = problems = 0
    forced = False
    pending: str | None = None  # a question written without its answer, waiting for it
    asked = False  # the first ask for a pending question's answer costs no retry

    def force_prompt(reason: str, extra: str = "") -> Message:
        text = render("generator_force.j2", cfg.prompt_set, reason=reason, max_searches=cfg.max_searches,
                      answer_type=answer_type)
        return {"role": "user", "content": text + (f"\n{extra}" if extra else "")}

    def ask_answer(question: str, problem: str | None = None) -> Message:
        return {"role": "user", "content": render("generator_answer.j2", question=question, problem=problem,
                                                  answer_type=answer_type)}

    def trajectory(status: str, question: str | None, answer: str | None) -> Trajectory:
        return Trajectory(agent=agent, question=question or "", steps=tuple(steps), answer=answer,
                          status=status, messages=tuple(messages))  # type: ignore[arg-type]

    while True:
        t0 = time.monotonic()
        stops = FINAL_STOPS if forced else SEARCH_STOPS + FINAL_STOPS
        comp = await llm.complete(messages, max_tokens=cfg.max_turn_tokens, temperature=temperature,
                                  stop=list(stops), seed=seed)
        text = comp.text
        steps.append(Step(kind="model", text=text, prompt_tokens=comp.prompt_tokens,
                          completion_tokens=comp.completion_tokens,
                          seconds=comp.seconds or time.monotonic() - t0))
        question, answer = tags.first(text, "question") or unclosed_question(text), tags.first(text, "answer")
        plan = tags.first(text, "answering_steps", allow_unclosed=True) or ""
        search = tags.blocks(text, "search")[:1]
        is_final = question is not None or answer is not None
        # A search written before any final tag is a search; when forced, a usable final wins.
        if search and not (is_final and (forced or _final_start(text) < search[0].start)):
            block = search[0]
            messages.append({"role": "assistant",
                             "content": text[: block.end].rstrip() + ("" if block.closed else "</search>")})
            if forced:
                problem = "you must not search any more; write the final output now."
            elif not block.content:
                problem = "the <search></search> was empty."
            elif searches >= cfg.max_searches:
                steps.append(Step(kind="event", event="search_budget_exhausted", text=block.content))
                forced = True
                messages.append(force_prompt("search_budget_exhausted"))
                continue
            else:
                searches += 1
                hits = (await asyncio.to_thread(retriever.search, [block.content], cfg.topk))[0]
                steps.append(Step(kind="search", query=block.content, hit_ids=tuple(h.doc.id for h in hits)))
                messages.append({"role": "user", "content": tags.format_information(hits, cfg.passage_chars)})
                continue
        else:
            messages.append({"role": "assistant", "content": _final_transcript(text, plan)})
            # Small models often write the question alone, or as plain text: take it, ask for its answer.
            # Only the first such ask is free; every later one spends a retry, so the loop still ends.
            fresh = untagged_question(text) if question is None and answer is None else None
            if fresh or (pending is None and answer is None and _plausible(question)):
                pending = fresh or question  # a new question replaces a pending one
            if pending is not None and question in (None, pending):
                answer = answer or untagged_answer(text, cfg.max_answer_words, answer_type)
                if answer is not None:
                    question, is_final = pending, True
                    steps.append(Step(kind="event", event="untagged_answer", text=answer))
                elif not asked:
                    asked = True
                    steps.append(Step(kind="event", event="untagged_question", text=pending))
                    messages.append(ask_answer(pending))
                    continue
            if is_final:
                problem = check_pair(question, answer, cfg)
            elif tags.has_tag(text, "question"):
                problem = "the <question> was never closed with </question>; keep it to one sentence."
            else:
                problem = "the reply had neither a <search> nor a final <question>/<answer>."
            if problem is None and question is not None and answer is not None:
                if forced:
                    steps.append(Step(kind="event", event="forced_final"))
                traj = trajectory("forced" if forced else "answered", question, answer)
                support = dict.fromkeys([doc.id, *inherited_ids, *traj.retrieved_ids])
                cand = Candidate(question=question, answer=answer, answer_type=answer_type,  # type: ignore[arg-type]
                                 target=target, plan=plan, seed_doc_id=doc.id, round=round,
                                 supporting_ids=tuple(support))
                return Authored(cand, traj)
        # A malformed turn: record it, tell the model what was wrong, give up after the retry budget.
        if is_final:
            pending = None  # that pair was refused: the next one starts from scratch
        problems += 1
        steps.append(Step(kind="event", event="malformed", text=problem))
        if problems > cfg.max_format_retries:
            steps.append(Step(kind="event", event="gave_up", text=f"{problems} malformed replies"))
            return Authored(None, trajectory("failed", question, answer))
        if pending is not None:
            messages.append(ask_answer(pending, problem))
        elif forced:
            messages.append(force_prompt("retry", problem or ""))
        else:
            messages.append({"role": "user", "content": render("generator_retry.j2", problem=problem,
                                                               answer_type=answer_type)})


_KNOWN_TAGS = ("think", "search", "question", "answer", "answering_steps", "information")
_LABEL = re.compile(r"^\W*(?:the\s+)?(?:final\s+|short\s+)?(?:question|answer)\s*(?:is\b|[:：])\W*",
                    re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def untagged_question(text: str) -> str | None:
    """A question written without tags (no tag of the protocol at all): its first sentence ending in '?'."""
    if any(tags.has_tag(text, t) for t in _KNOWN_TAGS):
        return None
    for line in text.splitlines():
        m = re.search(r"[A-Z][^?]{8,300}\?", _LABEL.sub("", line.strip()))
        if m:
            return m.group(0).strip()
    return None


def _plausible(question: str | None) -> bool:
    """Worth asking an answer for: a sentence of a few words that is not the prompt's placeholder."""
    if not question:
        return False
    return len(question.split()) >= 4 and question.lower().strip(" ?.") not in _PLACEHOLDERS


def unclosed_question(text: str) -> str | None:
    """``<question> ...?`` never closed (the model rambled on): the text up to its first '?'."""
    block = next((b for b in tags.blocks(text, "question") if not b.closed), None)
    if block is None or "?" not in block.content:
        return None
    return block.content[: block.content.index("?") + 1].strip() or None


def untagged_answer(text: str, max_words: int, answer_type: str) -> str | None:
    """A short plain-text answer: an ``Answer:`` line if any, else the first line that is no question.

    Plain text is only trusted when it looks like an answer of the asked type: a number or a date
    must contain a digit, an entity must start with a capital or a digit; at most six words.
    """
    if any(tags.has_tag(text, t) for t in _KNOWN_TAGS):
        return None
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    labelled = [x for x in lines if _ANSWER_LABEL.match(x)]
    plain = [x for x in lines if not x.endswith("?") and not _QUESTION_LABEL.match(x)]
    line = (labelled or plain or [""])[0]
    line = _LABEL.sub("", line).strip().rstrip(".").strip().strip("\"'*").strip()
    words = line.split()
    if not words or len(words) > min(6, max_words) or line.endswith("?"):
        return None
    if answer_type == "number":
        numbers = _NUMBER.findall(line)
        return numbers[-1].rstrip(",") if numbers else None
    if answer_type == "date":
        return line if any(ch.isdigit() for ch in line) else None
    if words[0] in _NOT_AN_ENTITY or not (line[0].isupper() or line[0].isdigit()):
        return None
    return line


_ANSWER_LABEL = re.compile(r"^\W*(?:the\s+)?(?:final\s+|short\s+)?answer\s*(?:is\b|[:：])", re.IGNORECASE)
_QUESTION_LABEL = re.compile(r"^\W*(?:the\s+)?question\s*(?:is\b|[:：])", re.IGNORECASE)
_NOT_AN_ENTITY = {"I", "I'm", "The", "This", "It", "Sorry", "Yes", "No", "Sure", "Answer", "Okay", "OK"}


def _final_start(text: str) -> int:
    starts = [b.start for tag in ("question", "answer") for b in tags.blocks(text, tag)[:1]]
    return min(starts) if starts else len(text)


def _final_transcript(text: str, plan: str) -> str:
    # The stop sequence ate the plan's closing tag; restore it so the history stays well-formed.
    if plan and tags.has_tag(text, "answering_steps") and not tags.find_all(text, "answering_steps"):
        return text.rstrip() + "\n</answering_steps>"
    return text


def _clip(text: str, n: int) -> str:
    text = text.strip()
    return text if not n or len(text) <= n else text[:n].rstrip() + " ..."
