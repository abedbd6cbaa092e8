"""The generator and the reviser (docs/design.md §1.1 and §1.3): one short authoring loop, two openings.

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
  the LLM call cache replays an interrupted trajectory exactly on resume;
- every candidate records the type its answer reads as (``answer_type_found``,
  ``sagegen.agents.answer_types``); a mismatch keeps the pair, and the feedback prompt tells the reviser
  (``feedback_answer_type.j2``).

The loop (:meth:`_Authoring.loop`) reads like the solver's: one call, then a named turn function
(``search_turn`` / ``final_turn``, a malformed turn goes to ``refuse``). It runs on the solver's
machinery (``sagegen.agents.conversation``: call, search, record); every sentence the model reads
is a template (the problems in ``generator_problem.j2``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sagegen.agents import answer_types, feedback_fit, release, tags
from sagegen.agents.conversation import Conversation
from sagegen.agents.feedback_fit import Shortening
from sagegen.config import GeneratorConfig
from sagegen.llm.base import LLM, Message
from sagegen.records import AnswerType, Candidate, Doc, Step, Trajectory, Verdict
from sagegen.retrieval.base import Retriever

#: Stop after a query (the loop runs it) or after the plan (the pair is complete).
SEARCH_STOPS = ("</search>",)
FINAL_STOPS = ("</answering_steps>", "</answering steps>")

_HOW_WHY = re.compile(
    r"^\s*(why\b|how\b(?!\s+(many|much|old|long|far|tall|large|big|high|often|deep)\b))", re.IGNORECASE
)
#: Template text a small model may copy instead of filling in.
_PLACEHOLDERS = {
    "the question",
    "question",
    "the answer",
    "the short answer",
    "answer",
    "the date",
    "the number",
    "the entity",
    "a date",
    "a number",
    "an entity",
}
_YES_NO = re.compile(
    r"^\s*(is|are|was|were|do|does|did|can|could|has|have|had|will|would|should)\b", re.IGNORECASE
)
_POINTS_AT_SOURCE = re.compile(
    r"\b(the|this|that|given|above|seed)\s+(passage|text|document|article)\b", re.IGNORECASE
)

#: The candidate's fields a feedback prompt shows the reviser.
_SHOWN_FIELDS = {"question", "answer", "plan", "target", "answer_type", "answer_type_found"}


@dataclass(frozen=True)
class Authored:
    """What one authoring loop produced: a candidate (``None`` when it failed) and its trajectory."""

    candidate: Candidate | None
    trajectory: Trajectory


def check_pair(question: str | None, answer: str | None, cfg: GeneratorConfig) -> str | None:
    """Why a final pair is unusable (a message for the model, ``generator_problem.j2``), or ``None``."""
    code = _pair_problem(question, answer, cfg)
    return None if code is None else problem_text(code, cfg, words=len((answer or "").split()))


def problem_text(code: str, cfg: GeneratorConfig, words: int = 0) -> str:
    """The sentence that tells the model what was wrong with its turn (problem ``code``)."""
    return cfg.prompts("generator_problem.j2", problem=code, words=words, max_words=cfg.max_answer_words)


def _pair_problem(question: str | None, answer: str | None, cfg: GeneratorConfig) -> str | None:
    if not question:
        return "no_question"
    if not answer:
        return "no_answer"
    if cfg.pair_checks == "release":
        return None
    if len(question.split()) < 4 or question.lower().strip(" ?.") in _PLACEHOLDERS:
        return "placeholder_question"
    if answer.lower().strip(" .") in _PLACEHOLDERS:
        return "placeholder_answer"
    if len(answer.split()) > cfg.max_answer_words:
        return "long_answer"
    if _YES_NO.match(question):
        return "yes_no"
    if _HOW_WHY.match(question):
        return "how_why"
    if _POINTS_AT_SOURCE.search(question):
        return "points_at_source"
    if re.search(r"(?<!\w)" + re.escape(answer.strip()) + r"(?!\w)", question, re.IGNORECASE):
        return "contains_answer"
    return None


def make_candidate(
    question: str,
    answer: str,
    answer_type: AnswerType,
    target: int,
    *,
    plan: str,
    doc_id: str,
    round: int,
    support: Sequence[str],
) -> Candidate:
    """A candidate as written, labelled with the type its answer reads as (``sagegen.agents.answer_types``:
    a mismatch keeps the pair and is told to the reviser in the feedback round)."""
    return Candidate(
        question=question,
        answer=answer,
        answer_type=answer_type,
        target=target,
        plan=plan,
        seed_doc_id=doc_id,
        round=round,
        supporting_ids=tuple(dict.fromkeys(support)),
        answer_type_found=answer_types.classify(answer, answer_type),
    )


def seed_messages(doc: Doc, target: int, answer_type: AnswerType, cfg: GeneratorConfig) -> list[Message]:
    """The generator's opening: system rules plus the seed passage, target S and answer type."""
    return [
        {
            "role": "system",
            "content": cfg.prompts(
                "generator_system.j2",
                target=target,
                answer_type=answer_type,
                max_searches=cfg.max_searches,
            ),
        },
        {
            "role": "user",
            "content": cfg.prompts(
                "generator_user.j2",
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
    """The feedback opening with whole traces — ours, or with ``feedback_prompt: release`` the release's
    flat prompt (:mod:`sagegen.agents.release`) — shortened only past ``budget_tokens`` (``feedback_fit``).
    A reviser that may search (``feedback_search``) is also given its role's rules as a system message."""
    if cfg.feedback_prompt == "release":
        traces, user = release.feedback_opening(candidate, own, solver, verdict, cfg.prompts)
        system = _generator_rules(candidate, cfg) if cfg.feedback_search else []
        return feedback_fit.fit_messages(traces, lambda: [*system, *user()], budget_tokens)
    own_entries, solver_entries = trace_entries(own, cfg), trace_entries(solver, cfg)
    return feedback_fit.fit_messages(
        [own_entries, solver_entries],
        lambda: _feedback_messages(doc, candidate, own_entries, solver_entries, solver, verdict, cfg),
        budget_tokens,
    )


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
        candidate.model_dump(include=_SHOWN_FIELDS),
        title=doc.title,
        text=_clip(doc.text, cfg.seed_chars),
        own_trace=cfg.prompts("feedback_trace.j2", entries=own_entries),
        solver_trace=cfg.prompts("feedback_trace.j2", entries=solver_entries),
    )
    if verdict.label == "too_easy":
        user = cfg.prompts(
            "feedback_too_easy.j2",
            difficulty=verdict.difficulty or 0,
            solver_searches=solver.num_searches,
            **common,
        )
    else:
        user = cfg.prompts(
            "feedback_incorrect.j2", num_attempts=verdict.num_attempts, solver_answer=solver.answer, **common
        )
    return [*_generator_rules(candidate, cfg), {"role": "user", "content": user}]


def _generator_rules(candidate: Candidate, cfg: GeneratorConfig) -> list[Message]:
    """The generator's system rules for a reviser (the same as round 1's, for the pair's target)."""
    rules = cfg.prompts(
        "generator_system.j2",
        target=candidate.target,
        answer_type=candidate.answer_type,
        max_searches=cfg.max_searches,
    )
    return [{"role": "system", "content": rules}]


def render_trace(traj: Trajectory, cfg: GeneratorConfig) -> str:
    """A trajectory as text for a feedback prompt: model turns, queries and results (whole by default)."""
    return cfg.prompts("feedback_trace.j2", entries=trace_entries(traj, cfg))


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
    answer_type: AnswerType,
    llm: LLM,
    retriever: Retriever,
    cfg: GeneratorConfig,
    *,
    seed: int | None = None,
    temperature: float = 0.7,
    round: int = 1,
) -> Authored:
    """Write a fresh candidate from seed passage ``doc`` (docs/design.md §1.1)."""
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
    retriever: Retriever | None,
    cfg: GeneratorConfig,
    *,
    seed: int | None = None,
    temperature: float = 0.7,
    round: int = 2,
    budget_tokens: int = 0,
) -> Authored:
    """Rewrite a non-passing candidate from execution feedback (docs/design.md §1.3): the authoring loop
    on a feedback opening, or with ``feedback_search`` off one call without search, read as the release
    reads it (:func:`sagegen.agents.release.read_revision`)."""
    messages, shortened = feedback_prompt(doc, candidate, own, solver, verdict, cfg, budget_tokens)
    if cfg.feedback_search:
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
    else:
        out = await _revise_once(
            messages, doc, candidate, solver, llm, cfg, seed=seed, temperature=temperature, round=round
        )
    return with_shortening(out, shortened)


async def _revise_once(
    messages: list[Message],
    doc: Doc,
    candidate: Candidate,
    solver: Trajectory,
    llm: LLM,
    cfg: GeneratorConfig,
    *,
    seed: int | None,
    temperature: float,
    round: int,
) -> Authored:
    """A reviser without search (the release's): one call with no stop; the pair is read as the release
    reads it."""
    talk = Conversation(
        "reviser",
        llm,
        None,
        max_turn_tokens=cfg.max_turn_tokens,
        temperature=temperature,
        seed=seed,
        messages=messages,
    )
    c = await talk.call()
    assert c is not None  # LLM errors propagate
    # Appended as is, even empty: the next round's transcript (release.split_trace) shows the release's turns.
    talk.messages.append({"role": "assistant", "content": c.text})
    text = c.text
    question, answer, plan = release.read_revision(text)
    if not question or not answer:
        talk.event("malformed", "no <question> and <answer> in the reply")
        return Authored(None, talk.trajectory("failed", question or "", answer))
    cand = make_candidate(
        question,
        answer,
        candidate.answer_type,
        candidate.target,
        plan=plan,
        doc_id=doc.id,
        round=round,
        support=(doc.id, *candidate.supporting_ids, *solver.retrieved_ids),
    )
    return Authored(cand, talk.trajectory("answered", question, answer))


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
    answer_type: AnswerType,
    llm: LLM,
    retriever: Retriever | None,
    cfg: GeneratorConfig,
    *,
    seed: int | None,
    temperature: float,
    round: int,
    agent: str,
    inherited_ids: Sequence[str] = (),
) -> Authored:
    """The authoring loop shared by generator and reviser: search until a usable pair, or give up."""
    return await _Authoring(
        messages,
        doc,
        target,
        answer_type,
        llm,
        retriever,
        cfg,
        seed=seed,
        temperature=temperature,
        round=round,
        agent=agent,
        inherited_ids=inherited_ids,
    ).loop()


@dataclass(frozen=True)
class _Turn:
    """One model turn as read: its final tags (if any) and its first search."""

    text: str
    question: str | None
    answer: str | None
    plan: str
    search: tags.Block | None

    @classmethod
    def read(cls, text: str) -> _Turn:
        return cls(
            text,
            tags.first(text, "question") or unclosed_question(text),
            tags.first(text, "answer"),
            tags.first(text, "answering_steps", allow_unclosed=True) or "",
            next(iter(tags.blocks(text, "search")), None),
        )

    @property
    def is_final(self) -> bool:
        return self.question is not None or self.answer is not None

    def is_search(self, forced: bool) -> bool:
        """A search written before any final tag is a search; when forced, a usable final wins."""
        return self.search is not None and not (
            self.is_final and (forced or _final_start(self.text) < self.search.start)
        )


@dataclass(frozen=True)
class _Refused:
    """A turn that could not be used: what to tell the model, and the pair as it was read."""

    problem: str
    question: str | None
    answer: str | None
    was_pair: bool  # a final pair was refused: a pending question is forgotten


class _Authoring(Conversation):
    """One authoring run; its turn functions return ``Authored`` (done), ``_Refused`` (a malformed
    turn, see :meth:`refuse`) or ``None`` (the next prompt is in place).

    It always ends: searches are capped (then the model is forced to finish), one ask for a pending
    question's answer is free, and every other turn that is neither a run search nor a usable pair
    spends one of ``max_format_retries`` — at most max_searches + max_format_retries + 4 turns.
    """

    def __init__(
        self,
        messages: Sequence[Message],
        doc: Doc,
        target: int,
        answer_type: AnswerType,
        llm: LLM,
        retriever: Retriever | None,
        cfg: GeneratorConfig,
        *,
        seed: int | None,
        temperature: float,
        round: int,
        agent: str,
        inherited_ids: Sequence[str],
    ):
        super().__init__(
            agent,
            llm,
            retriever,
            max_turn_tokens=cfg.max_turn_tokens,
            temperature=temperature,
            seed=seed,
            topk=cfg.topk,
            passage_chars=cfg.passage_chars,
            messages=messages,
        )
        self.doc, self.target, self.answer_type, self.cfg = doc, target, answer_type, cfg
        self.round, self.inherited_ids = round, tuple(inherited_ids)
        self.forced = False  # the search budget is spent: only a final pair is taken
        self.pending: str | None = None  # a question written without its answer, waiting for it
        self.asked = False  # the first ask for a pending question's answer costs no retry
        self.problems = 0

    async def loop(self) -> Authored:
        while True:
            c = await self.call(stop=FINAL_STOPS if self.forced else SEARCH_STOPS + FINAL_STOPS)
            assert c is not None  # LLM errors propagate: the pipeline leaves the pair for a rerun
            turn = _Turn.read(c.text)
            result = await self.search_turn(turn) if turn.is_search(self.forced) else self.final_turn(turn)
            if isinstance(result, _Refused):
                result = self.refuse(result)
            if result is not None:
                return result

    async def search_turn(self, turn: _Turn) -> _Refused | None:
        """Run the turn's query; past the budget, force the finish instead."""
        assert turn.search is not None
        block = turn.search
        self.push("assistant", turn.text[: block.end].rstrip() + ("" if block.closed else "</search>"))
        if self.forced or not block.content:
            code = "searched_when_forced" if self.forced else "empty_search"
            return _Refused(problem_text(code, self.cfg), turn.question, turn.answer, turn.is_final)
        if self.searches >= self.cfg.max_searches:
            self.event("search_budget_exhausted", block.content)
            self.forced = True
            self.push("user", self.force_prompt("search_budget_exhausted"))
        else:
            self.push("user", await self.search(block.content))
        return None

    def final_turn(self, turn: _Turn) -> Authored | _Refused | None:
        """Take the turn's pair, complete a pending question with it, or say what is wrong."""
        self.push("assistant", _final_transcript(turn.text, turn.plan))
        read = self.complete_pending(turn)
        if read is None:
            return None
        question, answer, is_final = read
        if is_final:
            problem = check_pair(question, answer, self.cfg)
        else:
            code = "unclosed_question" if tags.has_tag(turn.text, "question") else "no_action"
            problem = problem_text(code, self.cfg)
        if problem is None and question and answer:
            return self.finish(question, answer, turn.plan)
        return _Refused(problem or "", question, answer, is_final)

    def complete_pending(self, turn: _Turn) -> tuple[str | None, str | None, bool] | None:
        """Small models often write the question alone, or as plain text: take it and find its answer
        in this turn, or ask for it (``None``). Only the first ask is free; later ones spend a retry."""
        question, answer, is_final = turn.question, turn.answer, turn.is_final
        fresh = None if is_final else untagged_question(turn.text)
        if fresh or (self.pending is None and answer is None and _plausible(question)):
            self.pending = fresh or question  # a new question replaces a pending one
        if self.pending is not None and question in (None, self.pending):
            answer = answer or untagged_answer(turn.text, self.cfg.max_answer_words, self.answer_type)
            if answer is not None:
                self.event("untagged_answer", answer)
                return self.pending, answer, True
            if not self.asked:
                self.asked = True
                self.event("untagged_question", self.pending)
                self.push("user", self.ask_answer(self.pending))
                return None
        return question, answer, is_final

    def refuse(self, refused: _Refused) -> Authored | None:
        """Record a malformed turn and tell the model what was wrong; give up after the retry budget."""
        if refused.was_pair:
            self.pending = None  # that pair was refused: the next one starts from scratch
        self.problems += 1
        self.event("malformed", refused.problem)
        if self.problems > self.cfg.max_format_retries:
            self.event("gave_up", f"{self.problems} malformed replies")
            return Authored(None, self.trajectory("failed", refused.question or "", refused.answer))
        if self.pending is not None:
            self.push("user", self.ask_answer(self.pending, refused.problem))
        elif self.forced:
            self.push("user", self.force_prompt("retry", refused.problem))
        else:
            self.push(
                "user",
                self.cfg.prompts("generator_retry.j2", problem=refused.problem, answer_type=self.answer_type),
            )
        return None

    def finish(self, question: str, answer: str, plan: str) -> Authored:
        if self.forced:
            self.event("forced_final")
        traj = self.trajectory("forced" if self.forced else "answered", question, answer)
        support = (self.doc.id, *self.inherited_ids, *traj.retrieved_ids)
        cand = make_candidate(
            question,
            answer,
            self.answer_type,
            self.target,
            plan=plan,
            doc_id=self.doc.id,
            round=self.round,
            support=support,
        )
        return Authored(cand, traj)

    def force_prompt(self, reason: str, problem: str = "") -> str:
        return self.cfg.prompts(
            "generator_force.j2",
            reason=reason,
            problem=problem,
            max_searches=self.cfg.max_searches,
            answer_type=self.answer_type,
        )

    def ask_answer(self, question: str, problem: str | None = None) -> str:
        return self.cfg.prompts(
            "generator_answer.j2", question=question, problem=problem, answer_type=self.answer_type
        )


_KNOWN_TAGS = ("think", "search", "question", "answer", "answering_steps", "information")
_LABEL = re.compile(
    r"^\W*(?:the\s+)?(?:final\s+|short\s+)?(?:question|answer)\s*(?:is\b|[:：])\W*", re.IGNORECASE
)
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


def untagged_answer(text: str, max_words: int, answer_type: AnswerType) -> str | None:
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
