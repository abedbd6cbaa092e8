"""Fitting a feedback prompt into the generator model's context (the one policy, documented here).

Feedback shows whole traces: the reviser is asked to build on evidence, so it must see all of it.
Only when the rendered prompt would not fit the model's context is it shortened, by this rule:

1. only retrieved text (``information`` entries) is ever shortened — never a query, never the
   model's own reasoning or output, never the question/answer under revision;
2. the oldest retrieved text goes first: entries are taken in turn order, the two traces
   interleaved turn by turn (turn 1 of each trace, then turn 2, ...), since late evidence is what
   the final pair was built on;
3. each shortened entry keeps its first ``KEEP_CHARS`` characters and says how much was omitted
   (``feedback_omitted.j2``), so the reviser knows text is missing;
4. it stops as soon as the prompt fits; what it did is returned (``Shortening``) and the reviser's
   trajectory records it as an event ``feedback_shortened``.

Token counts are estimated as characters / ``CHARS_PER_TOKEN`` (no tokenizer is assumed; 3 is on the
safe side for English passages, which run ~4 characters per token).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sagegen.llm.base import Message
from sagegen.prompts import render

CHARS_PER_TOKEN = 3
KEEP_CHARS = 200


@dataclass(frozen=True)
class Shortening:
    entries: int = 0  # information entries shortened
    chars: int = 0  # characters of retrieved text omitted

    def __bool__(self) -> bool:
        return self.entries > 0

    def describe(self) -> str:
        return (
            f"{self.entries} retrieved-text entries shortened, {self.chars} characters omitted "
            "to fit the context"
        )


def context_budget_tokens(cfg: Any) -> int:
    """The feedback prompt's token budget for a full ``Config``: the explicit setting, else the embedded
    model's context less the room llama.cpp keeps to answer (remote backends: 0, unbounded)."""
    g = cfg.generator
    if g.feedback_max_prompt_tokens:
        return int(g.feedback_max_prompt_tokens)
    if cfg.llm.backend == "llamacpp":
        return int(cfg.llm.n_ctx - min(g.max_turn_tokens, cfg.llm.n_ctx // 4))
    return 0


def fit(
    traces: list[list[dict[str, Any]]],
    render_prompt: Callable[[], int],
    budget_tokens: int,
) -> Shortening:
    """Shorten ``information`` entries of ``traces`` (in place) until ``render_prompt()`` — the prompt's
    length in characters, rendered from the current entries — fits ``budget_tokens`` (0 = no limit)."""
    if budget_tokens <= 0:
        return Shortening()
    limit = budget_tokens * CHARS_PER_TOKEN
    size = render_prompt()
    if size <= limit:
        return Shortening()
    order: list[dict[str, Any]] = []
    infos = [[e for e in t if e.get("kind") == "information"] for t in traces]
    for turn in range(max((len(t) for t in infos), default=0)):
        order.extend(t[turn] for t in infos if turn < len(t))
    done, omitted = 0, 0
    for entry in order:
        text = str(entry["text"])
        if len(text) <= KEEP_CHARS:
            continue
        cut = len(text) - KEEP_CHARS
        entry["text"] = text[:KEEP_CHARS].rstrip() + " " + render("feedback_omitted.j2", chars=cut)
        done, omitted = done + 1, omitted + cut
        size -= cut  # cheap running estimate; re-rendered below before deciding
        if size <= limit and render_prompt() <= limit:
            break
    return Shortening(done, omitted)


def fit_messages(
    traces: list[list[dict[str, Any]]],
    build: Callable[[], list[Message]],
    budget_tokens: int,
) -> tuple[list[Message], Shortening]:
    """The prompt ``build()`` renders from ``traces``' entries, shortened by :func:`fit` to the budget."""
    shortened = fit(traces, lambda: sum(len(str(m["content"])) for m in build()), budget_tokens)
    return build(), shortened
