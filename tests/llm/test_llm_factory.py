"""``build_llm``: backend choice by name, lazy imports, scripted replays, the transformers backend."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sagegen.config import LLMConfig, load_config
from sagegen.errors import ConfigError, LLMError
from sagegen.llm.factory import build_llm
from sagegen.llm.scripted import ScriptedLLM

MSGS = [{"role": "user", "content": "hi"}]


def test_core_import_stays_light() -> None:
    code = (
        "import sys, sagegen.llm.factory, sagegen.llm.cache; "
        "print(any(m in sys.modules for m in ('openai', 'llama_cpp', 'torch', 'transformers')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_scripted_replays_a_jsonl_file(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text(json.dumps("first") + "\n\n" + json.dumps({"text": "second</search>tail"}) + "\n")
    llm = build_llm(LLMConfig(backend="scripted", model=str(path)))  # never cached, even with cache=True
    assert isinstance(llm, ScriptedLLM) and llm.name == "scripted:answers.jsonl"
    assert (await llm.complete(MSGS)).text == "first"
    assert (await llm.complete(MSGS, stop=["</search>"])).text == "second"
    with pytest.raises(LLMError, match="exhausted"):
        await llm.complete(MSGS)


async def test_scripted_json_list_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "a.json"
    good.write_text(json.dumps(["x", "y"]))
    llm = build_llm(LLMConfig(backend="scripted", model=str(good)))
    assert [(await llm.complete(MSGS)).text for _ in range(2)] == ["x", "y"]
    bad = tmp_path / "b.jsonl"
    bad.write_text('"ok"\n{"nope": 1}\n')
    with pytest.raises(ConfigError, match=r"b\.jsonl: item 2"):
        build_llm(LLMConfig(backend="scripted", model=str(bad)))
    with pytest.raises(ConfigError, match="does not exist"):
        build_llm(LLMConfig(backend="scripted", model=str(tmp_path / "missing.jsonl")))
    with pytest.raises(LLMError, match="exhausted"):
        await build_llm(LLMConfig(backend="scripted")).complete(MSGS)


async def test_scripted_fixture_by_name_is_cached_like_a_backend(tmp_path: Path) -> None:
    assert build_llm(LLMConfig(backend="scripted", model="fixture:sage", cache=False)).name == (
        "scripted:fixture-sage"
    )
    cached = build_llm(LLMConfig(backend="scripted", model="fixture:sage", cache_path=str(tmp_path / "c.db")))
    assert cached.name == "scripted:fixture-sage"
    first = await cached.complete(MSGS, seed=1)
    again = await cached.complete(MSGS, seed=1)
    assert not first.cached and again.cached and again.text == first.text
    with pytest.raises(ConfigError, match="unknown scripted fixture"):
        build_llm(LLMConfig(backend="scripted", model="fixture:nope", cache=False))


def test_unknown_backend_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"llm\.backend"):
        load_config(overrides=["llm.backend=claude"])


@pytest.mark.slow
async def test_transformers_backend_on_a_tiny_random_llama(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    try:
        from sagegen.llm.hf_models import smollm2_gguf_path

        smollm2_gguf_path()
    except Exception as e:  # the tokenizer comes from SmolLM2's GGUF
        pytest.skip(f"SmolLM2 not available: {e}")
    llm = build_llm(
        LLMConfig(
            backend="transformers", model="tiny-llama", cache=True, cache_path=str(tmp_path / "c.sqlite")
        )
    )
    assert llm.name == "transformers:tiny-llama"
    a = await llm.complete(MSGS, max_tokens=6, temperature=1.0, seed=3)
    assert a.completion_tokens == 6 and a.prompt_tokens > 0 and a.finish_reason == "length"
    assert (await llm.complete(MSGS, max_tokens=6, temperature=1.0, seed=3)).cached
    inner = llm.inner  # type: ignore[attr-defined]
    b = await inner.complete(MSGS, max_tokens=6, temperature=1.0, seed=3)
    assert b.text == a.text  # the seed decides the sample
