"""Tolerant parsing of the Search-R1 tag protocol and the generator's output tags.

Models, small ones especially, write ``<Answer>``, ``< search >``, ``<answering steps>`` or
``<answering_steps>``, forget closing tags, or stop on a stop sequence that the backend strips
(OpenAI semantics: the stop string is not in the returned text). Every helper here accepts
those variants so the agent loops can treat them as the same thing.

Used by the solver (``parse_action``, ``format_information``) and the generator/reviser
(``first``/``last``/``find_all`` on ``question``, ``answer``, ``answering_steps``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

from sagegen.prompts import render
from sagegen.records import Hit

#: The stop sequences of one solver turn: the model stops after a query or after its answer.
SOLVER_STOPS: tuple[str, ...] = ("</search>", "</answer>")


def _name_pattern(tag: str) -> str:
    # "answering steps", "answering_steps" and "answering-steps" are one tag.
    parts = [re.escape(p) for p in re.split(r"[\s_\-]+", tag.strip()) if p]
    return r"[\s_\-]+".join(parts)


@cache
def _open_re(tag: str) -> re.Pattern[str]:
    return re.compile(r"<\s*" + _name_pattern(tag) + r"\s*>", re.IGNORECASE)


@cache
def _close_re(tag: str) -> re.Pattern[str]:
    return re.compile(r"<\s*/\s*" + _name_pattern(tag) + r"\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class Block:
    """One occurrence of ``<tag>content</tag>``; ``closed`` is False when the text ends inside it."""

    content: str
    start: int  # index of the opening tag
    end: int  # index just past the closing tag (or len(text) when unclosed)
    closed: bool


def blocks(text: str, tag: str) -> list[Block]:
    """Every ``tag`` block in order; a final opening tag without a close yields an unclosed block."""
    out: list[Block] = []
    pos = 0
    open_re, close_re = _open_re(tag), _close_re(tag)
    while True:
        m = open_re.search(text, pos)
        if m is None:
            return out
        c = close_re.search(text, m.end())
        # A second opening tag before the close means the first one was never closed; the
        # content up to the next opening tag is still the best reading of it.
        nxt = open_re.search(text, m.end())
        if c is not None and (nxt is None or c.start() < nxt.start()):
            out.append(Block(text[m.end() : c.start()].strip(), m.start(), c.end(), True))
            pos = c.end()
        elif nxt is not None:
            out.append(Block(text[m.end() : nxt.start()].strip(), m.start(), nxt.start(), False))
            pos = nxt.start()
        else:
            out.append(Block(text[m.end() :].strip(), m.start(), len(text), False))
            return out


def find_all(text: str, tag: str, *, allow_unclosed: bool = False) -> list[str]:
    """Contents of all closed ``tag`` blocks (plus unclosed ones when ``allow_unclosed``)."""
    return [b.content for b in blocks(text, tag) if b.closed or allow_unclosed]


def first(text: str, tag: str, *, allow_unclosed: bool = False) -> str | None:
    """Content of the first ``tag`` block, stripped; ``None`` when there is none."""
    found = find_all(text, tag, allow_unclosed=allow_unclosed)
    return found[0] if found else None


def last(text: str, tag: str, *, allow_unclosed: bool = False) -> str | None:
    """Content of the last ``tag`` block, stripped; ``None`` when there is none."""
    found = find_all(text, tag, allow_unclosed=allow_unclosed)
    return found[-1] if found else None


def has_tag(text: str, tag: str) -> bool:
    """True when ``text`` contains an opening ``tag`` (closed or not)."""
    return _open_re(tag).search(text) is not None


def strip_tags(text: str, tags: Sequence[str] = ("think", "search", "answer", "information")) -> str:
    """Drop the tag markers themselves (not their content); for display and fallbacks."""
    for tag in tags:
        text = _close_re(tag).sub("", _open_re(tag).sub("", text))
    return text.strip()


ActionKind = Literal["search", "answer", "none"]


@dataclass(frozen=True)
class Action:
    """What one solver turn asks for.

    ``kind`` is the first ``<search>`` or ``<answer>`` in the turn; ``content`` its stripped text;
    ``truncated`` is True when the output hit the token limit inside it (or before any action);
    ``transcript`` is the turn as it should stay in the chat history: cut right after the action
    and with the closing tag restored when the stop sequence removed it.
    """

    kind: ActionKind
    content: str
    truncated: bool
    transcript: str


def parse_action(text: str, finish_reason: str | None = "stop") -> Action:
    """Read one solver turn generated with stop sequences ``SOLVER_STOPS``.

    The first action wins (Search-R1's convention): a backend that ignores stop sequences may
    run on past ``</search>`` and hallucinate its own ``<information>``; that tail is dropped.
    An unclosed final tag counts as closed unless the model ran out of tokens
    (``finish_reason == "length"``), because the stop sequence ate the closing tag.
    """
    length_cut = finish_reason == "length"
    candidates = [(b, tag) for tag in ("search", "answer") for b in blocks(text, tag)[:1]]
    if not candidates:
        return Action("none", "", length_cut, text.strip())
    block, tag = min(candidates, key=lambda bt: bt[0].start)
    kind: ActionKind = "search" if tag == "search" else "answer"
    if block.closed:
        return Action(kind, block.content, False, text[: block.end].strip())
    # Unclosed: either the stop sequence removed the close (fine) or the model was cut off.
    if block.end < len(text):  # a second opening of the same tag came before any close
        return Action(kind, block.content, False, (text[: block.end] + f"</{tag}>").strip())
    return Action(kind, block.content, length_cut, (text + ("" if length_cut else f"</{tag}>")).strip())


def format_information(hits: Sequence[Hit], passage_chars: int = 0) -> str:
    """Search-R1's ``<information>`` block, byte for byte as its rollout client builds it.

    Search-R1 (``llm_agent/generation.py``) splits each served ``contents`` at its first newline
    into title and text, writes ``Doc i(Title: title) text`` per hit, one a line, and strips the
    whole; the title keeps wiki-18's quotes and the text its whitespace. The solver, the generator,
    the SFT export and both training rollouts (TRL tools, the verl tool) all call this one function,
    so what a policy is trained on matches what it meets in Search-R1-style RL. ``passage_chars``
    (0 = off) cuts long texts, an addition of ours.
    """
    docs = []
    for h in hits:
        title, _, text = h.doc.contents.partition("\n")
        if passage_chars and len(text) > passage_chars:
            text = text[:passage_chars].rstrip() + " ..."
        docs.append({"title": title, "text": text})
    return render("solver_information.j2", passages=render("search_r1_passages.j2", docs=docs))
