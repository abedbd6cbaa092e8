"""The LLM protocol every backend implements."""

from __future__ import annotations

import contextlib
import contextvars
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

from sagegen.errors import scrub
from sagegen.records import Completion

Message = dict[str, Any]  # {"role": "system"|"user"|"assistant"|"tool", "content": str, ...}


@dataclass(frozen=True)
class CallOptions:
    """The knobs of one completion call, frozen once per call; their defaults live here and only here."""

    max_tokens: int = 512
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    tools: tuple[dict[str, Any], ...] = ()

    def as_kwargs(self) -> dict[str, Any]:
        """``inner.complete(messages, **options.as_kwargs())``: a wrapper passing the call on unchanged."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


_DEFAULTS = CallOptions()


@runtime_checkable
class LLM(Protocol):
    """Callers call ``complete``; a backend subclasses ``LLM`` and writes only ``_complete``, so the
    public keyword signature and its defaults are written once (here and in :class:`CallOptions`)."""

    #: "backend:model", used in cache keys and run accounting.
    name: str

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = _DEFAULTS.max_tokens,
        temperature: float = _DEFAULTS.temperature,
        stop: Sequence[str] | None = None,
        seed: int | None = _DEFAULTS.seed,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> Completion:
        """One chat completion. Raises ``sagegen.errors.LLMError`` once retries are spent."""
        options = CallOptions(max_tokens, temperature, tuple(stop or ()), seed, tuple(tools or ()))
        return await self._complete(messages, options)

    async def _complete(self, messages: Sequence[Message], options: CallOptions) -> Completion:
        """The backend's one call, its options already defaulted and frozen."""
        raise NotImplementedError


def apply_stop(text: str, stop: Sequence[str] | None) -> str:
    """Cut before the first stop sequence, which is dropped: the OpenAI semantics every backend follows."""
    if not stop:
        return text
    cut = min((text.find(s) for s in stop if s in text), default=-1)
    return text[:cut] if cut >= 0 else text


def tool_arguments(raw: Any) -> dict[str, Any] | str:
    """Tool arguments as a dict when they are a JSON object, else the raw string (malformed calls
    are the caller's to record, not ours to hide)."""
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
        except ValueError:
            return raw
        return parsed if isinstance(parsed, dict) else raw
    return ""


# ---------------------------------------------------------------------------- tries of one call


@dataclass(frozen=True)
class Try:
    """One request of a call: its HTTP status (None: no response), error text, seconds, wait after it."""

    status: int | None
    seconds: float
    wait: float = 0.0
    error: str = ""


#: The tries of the call in progress, set by whoever accounts for calls (the run's ledger wrapper).
#: A context variable so concurrent calls on one backend (asyncio tasks) never mix their tries.
_TRIES: contextvars.ContextVar[list[Try] | None] = contextvars.ContextVar("sagegen_llm_tries", default=None)


def note_try(status: int | None, seconds: float, wait: float = 0.0, error: str = "") -> None:
    """Backends call this once per request they send (retries included); a no-op when nobody listens."""
    tries = _TRIES.get()
    if tries is not None:
        tries.append(Try(status, seconds, wait, scrub(error)[:300]))


@contextlib.contextmanager
def collect_tries() -> Iterator[list[Try]]:
    """``with collect_tries() as tries: await llm.complete(...)`` — the requests that call made."""
    tries: list[Try] = []
    token = _TRIES.set(tries)
    try:
        yield tries
    finally:
        _TRIES.reset(token)


def endpoint_source(llm: Any) -> Any | None:
    """The backend under ``llm``'s wrappers (call cache, accounting: each keeps it as ``inner``) that
    counts requests per endpoint (``endpoint_counts()``, the OpenAI-compatible one), if any."""
    seen = 0
    while llm is not None and seen < 16:
        if callable(getattr(llm, "endpoint_counts", None)):
            return llm
        llm, seen = getattr(llm, "inner", None), seen + 1
    return None
