"""The typed records every stage passes on.

Records are immutable pydantic models; each serialises to one JSON line carrying
``FORMAT_VERSION`` so files written by one release can be read (or refused) by another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FORMAT_VERSION = 1

AnswerType = Literal["number", "date", "entity"]


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_json(self) -> str:
        return self.model_dump_json()


def contents_of(title: str, text: str, raw: str | None) -> str:
    """:attr:`Doc.contents` from a Doc's fields (the retrieval server serves stored passages by it)."""
    if raw is not None:
        return raw
    return f"{title}\n{text}" if title else text


class Doc(Record):
    """A passage of a corpus. ``contents`` is the Search-R1 wire form: title, newline, text."""

    id: str
    title: str = ""
    text: str
    #: ``contents`` exactly as a Search-R1-format corpus holds it, kept only when it differs from
    #: ``title\ntext`` (wiki-18 writes titles in quotes): the server serves these bytes, so
    #: Search-R1's client formats the same passages as against Search-R1's own server.
    raw: str | None = None

    @property
    def contents(self) -> str:
        return contents_of(self.title, self.text, self.raw)

    @classmethod
    def from_contents(cls, id: str, contents: str) -> Doc:
        """Title = the first line without its quotes, text = the rest; ``contents`` stays byte-exact."""
        title, sep, text = contents.partition("\n")
        if not sep:  # no title line: the whole thing is text
            title, text = "", contents
        title = title.strip()
        if len(title) >= 2 and title[0] == title[-1] == '"':
            title = title[1:-1].strip()
        text = text.strip()
        plain = f"{title}\n{text}" if title else text
        return cls(id=id, title=title, text=text, raw=None if plain == contents else contents)


class Hit(Record):
    doc: Doc
    score: float


class Completion(Record):
    """One LLM call's result plus its accounting."""

    text: str
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    seconds: float = 0.0
    cached: bool = False
    # Native tool calls for backends that support them: [{"id", "name", "arguments"}], plus any
    # per-call state the provider needs back verbatim (Gemini's ``extra_content`` thought signature).
    tool_calls: tuple[dict[str, Any], ...] = ()
    #: The model's thinking, wherever the backend put it (a ``reasoning``/``reasoning_content`` field,
    #: a ``<think>`` block, or text before a lone ``</think>``); ``text`` is the answer alone, the only
    #: part agents parse (sagegen.llm.reasoning).
    reasoning: str = ""
    #: Reasoning tokens the server reported (``usage.completion_tokens_details.reasoning_tokens``).
    reasoning_tokens: int = 0
    #: Fields of the assistant message the provider requires back verbatim in the next request of
    #: the same turn (DeepSeek's ``reasoning_content`` on a tool-call turn); empty for most servers.
    assistant_extra: dict[str, Any] = Field(default_factory=dict)


StepKind = Literal["model", "search", "event"]


class Step(Record):
    """One step of an agent trajectory.

    ``model``: raw model output of one turn; ``search``: one search call with the ids of
    the passages it returned; ``event``: something the loop noticed and handled
    (malformed output, a nudge, a forced answer, an LLM error), named in ``event``.
    """

    kind: StepKind
    text: str = ""
    query: str | None = None
    hit_ids: tuple[str, ...] = ()
    event: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    #: A ``model`` step's thinking (kept for ``solve``, the ledger and counts; never re-sent).
    reasoning: str = ""
    finish_reason: str | None = None


TrajectoryStatus = Literal["answered", "forced", "failed"]


class Trajectory(Record):
    """A whole agent run: the steps in order and how it ended."""

    format_version: int = FORMAT_VERSION
    agent: str  # "solver", "generator", "reviser"
    question: str = ""
    steps: tuple[Step, ...] = ()
    answer: str | None = None
    status: TrajectoryStatus = "answered"
    # Full chat transcript (role/content dicts) as the model saw it, for SFT export and feedback.
    messages: tuple[dict[str, Any], ...] = ()

    @property
    def backend_error(self) -> str | None:
        """The first LLM failure (after the backend's retries) that cut this run short, if any."""
        return next((s.text for s in self.steps if s.kind == "event" and s.event == "llm_error"), None)

    @property
    def num_searches(self) -> int:
        return sum(1 for s in self.steps if s.kind == "search")

    @property
    def prompt_tokens(self) -> int:
        return sum(s.prompt_tokens for s in self.steps)

    @property
    def completion_tokens(self) -> int:
        return sum(s.completion_tokens for s in self.steps)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.steps)

    @property
    def retrieved_ids(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for s in self.steps:
            for h in s.hit_ids:
                seen.setdefault(h, None)
        return tuple(seen)


class Judgement(Record):
    """The judge's mark on one predicted answer."""

    correct: bool
    em: float = 0.0
    f1: float = 0.0
    extracted: str | None = None
    reason: str = ""
    method: str = "llm"  # "llm", "em", "f1"
    #: The judge's LLM failed (after retries) on some try, so this is no real judgement
    #: (sagegen.agents.outage).
    llm_failed: bool = False


class Attempt(Record):
    index: int
    trajectory: Trajectory
    judgement: Judgement

    @property
    def num_searches(self) -> int:
        return self.trajectory.num_searches


VerdictLabel = Literal["pass", "too_easy", "incorrect"]
#: A pair's final label: its verdict's, or ``ambiguous`` for a pass the ambiguity check flagged.
PairLabel = Literal["pass", "too_easy", "incorrect", "ambiguous"]


class Verdict(Record):
    """The outcome of verifying one candidate with K attempts (docs/design.md §1.2)."""

    correct: bool
    difficulty: int | None  # fewest searches among correct attempts
    passed: bool
    avg_at_k: float
    label: VerdictLabel
    num_attempts: int
    #: What decided it: the solver attempts, or the retriever-only shortcut pre-check
    #: (sagegen.verdict.precheck).
    source: Literal["solver", "precheck"] = "solver"
    #: With several solvers: how many of them answered right at least once (sagegen.verdict.agreement).
    solvers_agree: int | None = None

    @classmethod
    def decide(
        cls,
        per_solver: Sequence[Sequence[Attempt]],
        target: int,
        min_agree: int = 1,
        *,
        source: Literal["solver", "precheck"] = "solver",
    ) -> Verdict:
        """The one verdict rule (docs/design.md §1.2; several solvers: :mod:`sagegen.verdict.agreement`).

        ``per_solver`` holds each solver's attempts, strongest first (one list for one solver). Correct:
        at least ``min_agree`` solvers answered right at least once. Difficulty: the fewest searches among
        the right attempts of the strongest solver that solved it. Passed: correct and difficulty >= S.
        Avg@K is the first (reference) solver's. The retriever-only pre-check decides with its one
        shortcut attempt (``source="precheck"``), which is no solver attempt: ``num_attempts`` is 0.
        """
        fewest = [_fewest_right(atts) for atts in per_solver]  # None: that solver never answered right
        agree = sum(f is not None for f in fewest)
        correct = agree >= max(min_agree, 1)
        difficulty = next((f for f in fewest if f is not None), None) if correct else None
        passed = difficulty is not None and difficulty >= target
        return cls(
            correct=correct,
            difficulty=difficulty,
            passed=passed,
            avg_at_k=_right_share(per_solver[0] if per_solver else ()),
            label=_label(passed, correct),
            num_attempts=0 if source == "precheck" else sum(map(len, per_solver)),
            source=source,
            solvers_agree=agree if len(per_solver) > 1 else None,
        )


def _fewest_right(attempts: Sequence[Attempt]) -> int | None:
    """The fewest searches among the right attempts, None when none is right."""
    return min((a.num_searches for a in attempts if a.judgement.correct), default=None)


def _label(passed: bool, correct: bool) -> VerdictLabel:
    return "pass" if passed else ("too_easy" if correct else "incorrect")


def _right_share(attempts: Sequence[Attempt]) -> float:
    return sum(a.judgement.correct for a in attempts) / len(attempts) if attempts else 0.0


class Candidate(Record):
    """A question/answer pair as the generator (or reviser) wrote it."""

    question: str
    answer: str
    answer_type: AnswerType
    target: int
    plan: str = ""
    seed_doc_id: str
    round: int = 1
    supporting_ids: tuple[str, ...] = ()
    #: The type the answer reads as (``sagegen.agents.answer_types``); differs from ``answer_type`` on a
    #: mismatch, which keeps the pair; ``None``: not checked (older runs, imported pairs).
    answer_type_found: AnswerType | None = None


class QAPair(Record):
    """A row of the output dataset."""

    format_version: int = FORMAT_VERSION
    id: str
    question: str
    answer: str
    answer_type: AnswerType
    target: int
    difficulty: int | None
    #: ``None`` only for pairs imported from a source that does not record it (``sagegen import``).
    avg_at_k: float | None
    label: PairLabel
    round: int
    seed_doc_id: str
    supporting_ids: tuple[str, ...] = ()
    plan: str = ""
    trace_ids: dict[str, Any] = Field(default_factory=dict)
    run_id: str = ""
    #: ``strict``: passed (correct and difficulty >= target); ``relaxed``: kept by a final-round
    #: relaxation although too easy (``pipeline.final_round_relaxed``, the release's last-round filter);
    #: ``unknown``: imported as accepted from a source that does not say which (``sagegen import``).
    acceptance: Literal["strict", "relaxed", "unknown"] = "strict"
    #: The type the answer reads as (``Candidate.answer_type_found``); ``None``: not checked.
    answer_type_found: AnswerType | None = None
