"""The one keyword signature of ``LLM.complete``: defaults from ``CallOptions``, kept through wrappers."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Sequence

import pytest

from sagegen.llm.accounting import AccountingLLM
from sagegen.llm.base import LLM, CallOptions, Message, tool_arguments
from sagegen.llm.cache import CachedLLM
from sagegen.llm.scripted import ScriptedLLM
from sagegen.records import Completion


def test_signature_defaults_are_the_call_options_defaults() -> None:
    params = inspect.signature(LLM.complete).parameters
    keywords = [p for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert [p.name for p in keywords] == [f.name for f in dataclasses.fields(CallOptions)]
    defaults = CallOptions()
    for p in keywords:
        # stop/tools default to None in the signature (an empty tuple in the record)
        want = getattr(defaults, p.name)
        assert p.default == want or (p.default is None and want == ())


class _Recorder(LLM):
    """A backend that writes only ``_complete`` and keeps the options it was given."""

    name = "rec:test"

    def __init__(self) -> None:
        self.seen: list[CallOptions] = []

    async def _complete(self, messages: Sequence[Message], options: CallOptions) -> Completion:
        self.seen.append(options)
        return Completion(text=f"{options.max_tokens}", model=self.name)


def test_a_backend_gets_one_frozen_record_with_defaults_filled_in() -> None:
    rec = _Recorder()
    asyncio.run(rec.complete([{"role": "user", "content": "q"}], stop=["</a>"], seed=4))
    (o,) = rec.seen
    assert o == CallOptions(max_tokens=512, temperature=0.0, stop=("</a>",), seed=4, tools=())
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.seed = 5  # type: ignore[misc]


def test_wrappers_pass_every_option_through_to_the_backend(tmp_path) -> None:
    inner = ScriptedLLM(["ok"])
    tools = [{"type": "function", "function": {"name": "search", "parameters": {}}}]
    llm = AccountingLLM(CachedLLM(inner, tmp_path / "c.sqlite"), "solver")
    comp = asyncio.run(
        llm.complete(
            [{"role": "user", "content": "q"}],
            max_tokens=33,
            temperature=0.3,
            stop=("X", "Y"),
            seed=7,
            tools=tools,
        )
    )
    assert comp.text == "ok" and llm.calls == 1
    (call,) = inner.calls
    assert (call["max_tokens"], call["temperature"], call["stop"], call["seed"], call["tools"]) == (
        33,
        0.3,
        ["X", "Y"],
        7,
        tools,
    )


def test_cache_key_is_the_same_for_a_defaulted_and_an_explicit_call(tmp_path) -> None:
    inner = ScriptedLLM(["first", "second"])
    llm = CachedLLM(inner, tmp_path / "c.sqlite")
    msgs = [{"role": "user", "content": "q"}]
    a = asyncio.run(llm.complete(msgs))
    b = asyncio.run(llm.complete(msgs, max_tokens=512, temperature=0.0, stop=[], seed=None, tools=[]))
    assert (a.text, b.text, b.cached, len(inner.calls)) == ("first", "first", True, 1)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"q": 1}, {"q": 1}),
        ('{"q": "x"}', {"q": "x"}),
        ("[1]", "[1]"),
        ("not json", "not json"),
        (None, ""),
    ],
)
def test_tool_arguments(raw, expected) -> None:
    assert tool_arguments(raw) == expected
