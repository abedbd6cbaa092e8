"""What the core tells whoever watches a run: small typed events, handed to one callback.

The core (pipeline, session, evaluate, the accounting wrapper) knows no screen: it calls an
:data:`EventSink` with these records as things happen, and the command line (``sagegen.cli.display``)
draws them. An LLM call reports when it finishes, so calls and tokens move while a pair is in flight.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunStarted:
    """The run is open: ``already_done`` of ``total`` pairs were finished by earlier sessions."""

    total: int
    already_done: int
    labels: dict[str, int] = field(default_factory=dict)
    #: The finished pairs per outcome (``sagegen.ledger.outcomes``), as ``labels`` per verdict.
    outcomes: dict[str, int] = field(default_factory=dict)
    #: Rounds R of the run and pairs in flight at once (0: not said, e.g. by an older caller).
    rounds: int = 0
    concurrency: int = 0


@dataclass(frozen=True)
class PairStarted:
    index: int


#: The stages of a pair, in the order a round runs them.
STAGES = ("generator", "solver", "judge")


@dataclass(frozen=True)
class PairStage:
    """Pair ``index`` is in round ``round`` and waits on ``stage``: the generator writing (or
    revising) its question, a solver attempt, or the judge (an answer's grade, the ambiguity check)."""

    index: int
    round: int
    stage: str


@dataclass(frozen=True)
class RoundFinished:
    """One round of a pair is verified (``label``), or its generation wrote no pair (``label`` None)."""

    index: int
    round: int
    label: str | None


@dataclass(frozen=True)
class PairFinished:
    """Pair ``index`` is finished: ``label`` is its final verdict (the ledger state), ``outcome``
    where it ended as the files hold it (``sagegen.ledger.outcomes``: a pass can end as a duplicate)."""

    index: int
    label: str
    outcome: str = ""


@dataclass(frozen=True)
class PairFailed:
    """An LLM or retrieval failure after retries left the pair unfinished (the next run retries it)."""

    index: int
    error: str


@dataclass(frozen=True)
class LLMCallFinished:
    """One model call of a role, retries included; ``error`` set when it failed after them."""

    role: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    seconds: float = 0.0
    error: str | None = None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class CallsCounted:
    """Calls another process made (a ``--workers``/Ray worker), reported as they happen (every
    ``sagegen.loop.scale.COUNTS_EVERY`` seconds) and with each pair it finishes."""

    calls: int
    cached: int = 0
    tokens: int = 0


@dataclass(frozen=True)
class RunWarning:
    message: str


Event = (
    RunStarted
    | PairStarted
    | PairStage
    | RoundFinished
    | PairFinished
    | PairFailed
    | LLMCallFinished
    | CallsCounted
    | RunWarning
)
EventSink = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The sink of a run nobody watches."""
