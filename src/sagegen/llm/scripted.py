"""A scripted LLM for tests of control flow: a queue of responses or a function of the prompt.

It never touches the network. Each call is recorded in ``calls`` so tests can assert
on what the agent sent and how many calls were made.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sagegen.errors import LLMError
from sagegen.llm.base import Message
from sagegen.records import Completion

Responder = Callable[[Sequence[Message]], "str | Completion"]


class ScriptedLLM:
    """Answers from ``responses`` in order (strings or Completions), or by calling ``responder``.

    A response that is an ``Exception`` instance is raised instead, to script failures.
    """

    def __init__(
        self,
        responses: Iterable[str | Completion | Exception] = (),
        *,
        responder: Responder | None = None,
        name: str = "scripted:test",
    ):
        self.queue: deque[str | Completion | Exception] = deque(responses)
        self.responder = responder
        self.name = name
        self.calls: list[dict[str, Any]] = []

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
        self.calls.append(
            {"messages": [dict(m) for m in messages], "max_tokens": max_tokens, "stop": list(stop or []),
             "temperature": temperature, "seed": seed, "tools": tools}
        )
        if self.queue:
            item = self.queue.popleft()
        elif self.responder is not None:
            item = self.responder(messages)
        else:
            raise LLMError(f"{self.name}: script exhausted after {len(self.calls) - 1} calls")
        if isinstance(item, Exception):
            raise item
        if isinstance(item, Completion):
            return item
        text = _apply_stop(item, stop)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        return Completion(
            text=text, model=self.name, prompt_tokens=prompt_tokens,
            completion_tokens=len(text.split()), finish_reason="stop",
        )


def _apply_stop(text: str, stop: Sequence[str] | None) -> str:
    """Cut before the first stop sequence, which is dropped: the OpenAI semantics every backend follows."""
    if not stop:
        return text
    cut = min((text.find(s) for s in stop if s in text), default=-1)
    return text[:cut] if cut >= 0 else text
