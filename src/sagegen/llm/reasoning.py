"""Thinking and answer, told apart wherever a backend puts the thinking (docs/models.md).

Reasoning models reach sagegen in four shapes (vLLM's "reasoning outputs" docs and its
``qwen3_reasoning_parser.py``, SGLang's reasoning parser, the DeepSeek, Ollama and OpenAI API references):

- a separate message field: ``reasoning`` (vLLM >= 0.11, Ollama, gpt-oss) or ``reasoning_content``
  (vLLM before 0.11, SGLang, DeepSeek); ``content`` is then the answer alone;
- ``<think>…</think>`` at the start of ``content`` (a server without a reasoning parser);
- text ending in a lone ``</think>`` (Qwen3-2507 thinking templates open ``<think>`` in the prompt);
- hidden (OpenAI o-series / GPT-5, Gemini): only ``usage.completion_tokens_details.reasoning_tokens``.

Thinking restates the protocol's markers while it plans ("I'll write <search> query </search>",
"correct: yes"), so every parser in sagegen reads :attr:`Completion.text`, the answer, and never the
thinking. A ``<think>`` left open (the cap, or a stop string, fired inside it) is all thinking: the
answer is empty, which the caller sees as an empty reply.
"""

from __future__ import annotations

import re

_OPEN = re.compile(r"<\s*think\s*>", re.IGNORECASE)
_CLOSE = re.compile(r"<\s*/\s*think\s*>", re.IGNORECASE)


def split_reasoning(text: str) -> tuple[str, str]:
    """``(reasoning, answer)`` of raw model text.

    Every ``<think>`` block is reasoning, wherever it stands; text before a ``</think>`` with no
    opening tag is reasoning too (a template opened the block in the prompt); an unclosed ``<think>``
    runs to the end. Text with neither marker is all answer.
    """
    if "think" not in text.lower():  # the common case, no regex
        return "", text
    thoughts: list[str] = []
    close = _lone_close(text)
    if close is not None:
        thoughts.append(text[: close.start()].strip())  # the block opened in the prompt
        text = text[close.end() :]
    out: list[str] = []
    pos = 0
    while (m := _OPEN.search(text, pos)) is not None:
        out.append(text[pos : m.start()])
        c = _CLOSE.search(text, m.end())
        if c is None:  # open to the end: cut inside its thinking
            thoughts.append(text[m.end() :].strip())
            pos = len(text)
            break
        thoughts.append(text[m.end() : c.start()].strip())
        pos = c.end()
    out.append(text[pos:])
    return "\n\n".join(t for t in thoughts if t), "".join(out).strip()


def lone_close(text: str) -> bool:
    """A ``</think>`` before any ``<think>``: the block opened in the prompt, as a thinking model's
    template does. (A closed ``<think>`` block alone is no proof of a thinking model: Search-R1's own
    protocol asks every model to reason inside ``<think>``.)"""
    return _lone_close(text) is not None


def _lone_close(text: str) -> re.Match[str] | None:
    close = _CLOSE.search(text)
    if close is None:
        return None
    opening = _OPEN.search(text)
    return close if opening is None or close.start() < opening.start() else None
