"""The one accounting wrapper every command puts around its LLMs (generate, eval, estimate pilots).

It counts one role's calls, tokens and model seconds, writes each call to a run ledger when given
one (anything with ``record_call``: :class:`sagegen.ledger.store.RunStore`), and reports each finished call
as an :class:`sagegen.events.LLMCallFinished` event, so a live display moves with every call and not
only when a pair finishes. Failed calls count as calls (they cost) and as errors.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sagegen.errors import SagegenError
from sagegen.events import EventSink, LLMCallFinished
from sagegen.llm.base import LLM, CallOptions, Message, collect_tries, endpoint_source
from sagegen.records import Completion


@dataclass(frozen=True)
class ReplyFacts:
    """What the ledger keeps of a reply besides its tokens (table ``llm_replies``)."""

    finish_reason: str | None
    reasoning_tokens: int
    reasoning_chars: int
    #: No answer text and no tool call: the caller got nothing to parse.
    empty: bool


def reply_facts(comp: Completion) -> ReplyFacts:
    return ReplyFacts(
        comp.finish_reason,
        comp.reasoning_tokens,
        len(comp.reasoning),
        not comp.text.strip() and not comp.tool_calls,
    )


class AccountingLLM(LLM):
    """``inner`` as an LLM of ``role``, counting (and recording, and reporting) every call."""

    def __init__(self, inner: LLM, role: str, *, ledger: Any = None, on_event: EventSink | None = None):
        self.inner, self.role, self.ledger, self.on_event = inner, role, ledger, on_event
        if ledger is not None and (counted := endpoint_source(inner)) is not None:
            ledger.watch_endpoints(inner.name, counted)  # per-endpoint counts booked with the calls
        self.name = inner.name
        self.calls = self.cached = self.errors = self.prompt_tokens = self.completion_tokens = 0
        # What the replies were like (docs/models.md): cut at the cap, empty, thinking.
        self.cut = self.empty = self.thinking = self.reasoning_tokens = 0
        self.seconds = 0.0  # model time of fresh (uncached) calls, failed tries and waits included

    async def _complete(self, messages: Sequence[Message], options: CallOptions) -> Completion:
        t0 = time.monotonic()
        with collect_tries() as tries:  # every request the backend sends for this call, retries included
            try:
                comp = await self.inner.complete(messages, **options.as_kwargs())
            except SagegenError as e:
                secs = time.monotonic() - t0
                self.calls, self.errors = self.calls + 1, self.errors + 1
                if self.ledger is not None:
                    self.ledger.record_call(
                        self.role, self.name, 0, 0, secs, False, str(e)[:500], tries=tries
                    )
                self._emit(LLMCallFinished(self.role, seconds=secs, error=str(e)[:300]))
                raise
        # Model time of a call counts its failed tries and the waits between them, not just the last try.
        secs = sum(t.seconds + t.wait for t in tries) if tries else (comp.seconds or (time.monotonic() - t0))
        secs = 0.0 if comp.cached else secs
        self.calls += 1
        self.cached += int(comp.cached)
        self.prompt_tokens += comp.prompt_tokens
        self.completion_tokens += comp.completion_tokens
        self.seconds += secs
        reply = reply_facts(comp)
        self.cut += int(reply.finish_reason == "length")
        self.empty += int(reply.empty)
        self.thinking += int(reply.reasoning_chars > 0 or reply.reasoning_tokens > 0)
        self.reasoning_tokens += reply.reasoning_tokens
        if self.ledger is not None:
            self.ledger.record_call(
                self.role,
                self.name,
                comp.prompt_tokens,
                comp.completion_tokens,
                secs,
                comp.cached,
                tries=tries,
                reply=reply,
            )
        self._emit(LLMCallFinished(self.role, comp.prompt_tokens, comp.completion_tokens, comp.cached, secs))
        return comp

    def reply_counts(self) -> dict[str, int]:
        """Calls, and among them: cut at the cap, empty answers, calls that thought; reasoning tokens."""
        return {
            "calls": self.calls,
            "cut": self.cut,
            "empty": self.empty,
            "thinking": self.thinking,
            "reasoning_tokens": self.reasoning_tokens,
        }

    def _emit(self, event: LLMCallFinished) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def cost(self, prefix: str) -> dict[str, float]:
        """The counts as ``{prefix}_calls`` ... (the per-question cost columns of ``sagegen eval``)."""
        return {
            f"{prefix}_calls": self.calls,
            f"{prefix}_cached": self.cached,
            f"{prefix}_prompt_tokens": self.prompt_tokens,
            f"{prefix}_completion_tokens": self.completion_tokens,
            f"{prefix}_llm_seconds": round(self.seconds, 3),
            f"{prefix}_cut": self.cut,
            f"{prefix}_empty": self.empty,
            f"{prefix}_thinking": self.thinking,
        }
