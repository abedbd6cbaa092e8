"""Where each pair of a run ended: the one count behind ``status``, the end-of-run summary and the funnel.

A pair's *state* is its verdict (pass / too_easy / incorrect / failed); its *output* is the file it
was written to. The two differ on purpose: a pass below the training floor goes to ``too_easy.jsonl``,
a relaxed last-round too-easy pair to ``dataset.jsonl``, an ambiguous pass to ``ambiguous.jsonl``, and
a question already written to the same file is recorded as ``duplicate`` whatever its verdict (the
store deduplicates every output, not only the dataset). Counting by state therefore disagreed with
the files (a summary saying "too easy 7" over a six-line ``too_easy.jsonl``, a funnel with
"duplicate 0" where ``status`` said 1); every screen now counts by outcome, here.
"""

from __future__ import annotations

from collections.abc import Iterable

#: A run's output files by name (the run ledger writes them: sagegen.store).
OUTPUT_FILES = {
    "dataset": "dataset.jsonl",
    "too_easy": "too_easy.jsonl",
    "unsolved": "unsolved.jsonl",
    "ambiguous": "ambiguous.jsonl",
}
#: Outcome of each output file (``OUTPUT_FILES`` keys, plus the ``duplicate`` marker).
OUTCOME_OF_OUTPUT = {
    "dataset": "accepted",
    "ambiguous": "ambiguous",
    "too_easy": "too_easy",
    "unsolved": "incorrect",
    "duplicate": "duplicate",
}
#: Every outcome, in funnel order.
OUTCOMES = ("accepted", "ambiguous", "duplicate", "too_easy", "incorrect", "failed", "unfinished")
#: A finished pair written nowhere (an import that kept no file) counts by its verdict.
_OUTCOME_OF_STATE = {"pass": "accepted", "too_easy": "too_easy", "incorrect": "incorrect", "failed": "failed"}


def outcome(state: str, output: str | None) -> str:
    """The outcome of one pair from its ledger state and output."""
    if output in OUTCOME_OF_OUTPUT:
        return OUTCOME_OF_OUTPUT[output]
    return _OUTCOME_OF_STATE.get(state, "unfinished")


def outcome_counts(pairs: Iterable[tuple[str, str | None]]) -> dict[str, int]:
    """``seeds`` and one count per outcome (all keys present) over ``(state, output)`` of each pair."""
    out = {"seeds": 0, **dict.fromkeys(OUTCOMES, 0)}
    for state, output in pairs:
        out["seeds"] += 1
        out[outcome(state, output)] += 1
    return out
