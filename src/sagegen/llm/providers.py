"""What each OpenAI-compatible provider accepts, known before the first call (docs/models.md).

Named presets, chosen by ``llm.provider`` or, with ``auto``, from the endpoint's host and the model
name; anything the presets do not know is learned from the server itself: a 400 that names an
unsupported parameter drops (or renames) it for that backend and the call is resent at once
(``OpenAIBackend``), so a new model family costs one refused request, never a failed run.

Sources: the OpenAI API reference (reasoning models: ``max_completion_tokens``, no ``temperature``
other than 1, no ``stop``), DeepSeek's (``reasoning_content``; sampling parameters ignored; a tool-call
turn needs its ``reasoning_content`` back), Gemini's OpenAI-compatibility guide (``reasoning_effort``;
``extra_content.google.thought_signature`` on tool calls), Ollama's OpenAI-compatibility page
(``max_tokens`` only, ``reasoning_effort``), vLLM's and SGLang's reasoning-parser docs.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

ProviderName = str  # "openai" | "deepseek" | "gemini" | "ollama" | "server"

#: OpenAI's reasoning models: o1, o3, o4-mini, gpt-5 (not gpt-5-chat, which samples like gpt-4o).
_OPENAI_REASONING = re.compile(r"^(?:openai/)?(?:o\d|gpt-5(?!-chat)|gpt-oss)", re.IGNORECASE)


@dataclass(frozen=True)
class Provider:
    """One provider's request rules; ``OpenAIBackend`` builds every request through them."""

    name: ProviderName
    #: The field carrying the token cap (Ollama ignores ``max_completion_tokens``; OpenAI's
    #: reasoning models refuse ``max_tokens``).
    token_param: str = "max_tokens"
    #: ``temperature`` may be sent (OpenAI's reasoning models refuse any value but 1).
    sampling: bool = True
    #: Stop strings may go on the wire at all; None: learned per endpoint (sent until the model shows
    #: that it thinks, since a server matches them inside the thinking too).
    wire_stops: bool | None = None
    #: The request field ``llm.reasoning_effort`` goes into ("" = the provider has none).
    effort_field: str = "reasoning_effort"
    #: An assistant tool-call turn must carry its ``reasoning_content`` back (DeepSeek).
    return_reasoning: bool = False


def _host(url: str) -> str:
    return (urllib.parse.urlsplit(url).hostname or "").lower()


def detect(name: str, base_url: str, model: str) -> Provider:
    """The preset for ``llm.provider`` (``auto``: from the host and the model name)."""
    if name == "auto":
        host, port = _host(base_url), urllib.parse.urlsplit(base_url).port
        if host.endswith("api.openai.com"):
            name = "openai"
        elif host.endswith("deepseek.com"):
            name = "deepseek"
        elif host.endswith("generativelanguage.googleapis.com"):
            name = "gemini"
        elif port == 11434 or "ollama" in host:
            name = "ollama"
        else:
            name = "server"
    if name == "openai":
        reasoning = bool(_OPENAI_REASONING.match(model))
        # Every OpenAI model takes max_completion_tokens; the reasoning ones take nothing else.
        return Provider(
            "openai",
            token_param="max_completion_tokens",
            sampling=not reasoning,
            wire_stops=False if reasoning else None,
        )
    if name == "deepseek":
        return Provider("deepseek", effort_field="", return_reasoning=True)
    if name == "gemini":
        return Provider("gemini")
    if name == "ollama":
        return Provider("ollama")
    return Provider("server")
