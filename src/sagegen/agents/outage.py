"""An attempt cut short by a failing backend is an outage, not an answer.

The solver survives LLM errors (it forces an answer or gives up) and the LLM judge falls back to F1
when its calls fail, so both always return *something*. When that something was caused by a
backend that failed after its own retries (connection refused, 5xx until the retries ran out), it
says nothing about the question: storing it would record the outage as a wrong answer, and a rerun
would then skip it. ``generate``, ``eval`` and ``solve`` all pass their attempts through these two
checks, which raise ``LLMError`` instead; the caller leaves the unit unfinished for the next run.
"""

from __future__ import annotations

from sagegen.errors import LLMError
from sagegen.records import Judgement, Trajectory


def check_solver(traj: Trajectory, where: str) -> None:
    """Raise when a backend failure cut the solver's trajectory short."""
    if traj.backend_error is not None:
        raise LLMError(f"{where}: the solver's LLM failed: {traj.backend_error[:300]}")


def check_judge(judgement: Judgement, where: str) -> None:
    """Raise when the judgement is only the F1 fallback taken because the judge's LLM failed."""
    if judgement.llm_failed:
        raise LLMError(f"{where}: the judge's LLM failed: {judgement.reason[:300]}")
