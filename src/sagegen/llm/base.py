"""The LLM protocol every backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from sagegen.records import Completion

Message = dict[str, Any]  # {"role": "system"|"user"|"assistant"|"tool", "content": str, ...}


@runtime_checkable
class LLM(Protocol):
    #: "backend:model", used in cache keys and run accounting.
    name: str

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 512,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> Completion:
        """One chat completion. Raises ``sagegen.errors.LLMError`` once retries are spent."""
        ...
