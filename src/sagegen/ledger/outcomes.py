"""Where each pair of a run ended: the one count behind ``status``, the end-of-run summary and the funnel.

A pair's *state* is its verdict (pass / too_easy / incorrect / failed); its *output* is the file it
was written to. The two differ on purpose: a pass below the training floor goes to ``too_easy.jsonl``,
a relaxed last-round too-easy pair to ``dataset.jsonl``, an ambiguous pass to ``ambiguous.jsonl``, and
a question already written to the same file is recorded as ``duplicate`` whatever its verdict (the
store deduplicates every output, not only the dataset). Counting by state therefore disagreed with
the files (a summary saying "too easy 7" over a six-line ``too_easy.jsonl``, a funnel with
"duplicate 0" where ``status`` said 1); every screen now counts by outcome, here.

Names. Each outcome has one key (``OUTCOMES``) and one name a person reads (:data:`NAMES`, through
:func:`name`), the same on every screen: ``generate``'s live line and summary, ``status``, the
``analyze``/``report`` tables. Two older spellings stay where they are stored, for runs already on
disk, and are mapped here and nowhere else (:data:`STORED`): the file ``unsolved.jsonl`` holds the
*incorrect* pairs, and ``gen_failed`` (a key of the per-round counts in ``analysis.json`` and
``status``) is *generator failed*, as is the ledger state ``failed``.
"""

from __future__ import annotations

from collections.abc import Iterable

#: A run's output files by name (the run ledger writes them: sagegen.ledger.store).
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
#: What a person reads for each outcome, and for the verdicts of one round (``pass`` is a round's
#: verdict; ``accepted`` the pair's outcome: a pass that reached dataset.jsonl).
NAMES = {
    "accepted": "accepted",
    "ambiguous": "ambiguous",
    "duplicate": "duplicate",
    "too_easy": "too easy",
    "incorrect": "incorrect",
    "failed": "generator failed",
    "unfinished": "unfinished",
    "pass": "pass",
    "generated": "generated",
    "unverified": "unverified",
}
#: What each outcome means (the docs and ``--help`` say the same).
MEANING = {
    "accepted": "verified at its target difficulty; written to dataset.jsonl",
    "ambiguous": "verified, but the judge model found another answer that fits; ambiguous.jsonl",
    "duplicate": "a question already written to the same file; skipped",
    "too_easy": "solved in fewer searches than its target (or below the training floor); too_easy.jsonl",
    "incorrect": "no solver attempt answered it correctly in the last round; unsolved.jsonl",
    "failed": "the generator wrote no usable question-answer pair; no file",
    "unfinished": "not finished yet (or left by an error): the next run of the same command retries it",
}
#: Older spellings kept where they are stored (file names, ``analysis.json`` keys), and what they mean.
STORED = {"unsolved": "incorrect", "gen_failed": "failed"}


def name(key: str) -> str:
    """The name a person reads for an outcome or verdict key (a stored spelling included)."""
    key = STORED.get(key, key)
    return NAMES.get(key, key.replace("_", " "))


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
