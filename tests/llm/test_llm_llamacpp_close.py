"""The embedded model is freed while llama_cpp is still whole: by the last backend's ``close()`` when a run
ends, and at interpreter exit for whatever is still loaded. Left to module teardown, ``Llama.__del__``
ran after llama_cpp's globals were cleared and printed "TypeError: 'NoneType' object is not callable".
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sage_loop_helpers import write_corpus
from sagegen.config import Config, LLMConfig

pytestmark = [pytest.mark.slow, pytest.mark.ci]

SAY_HI = [{"role": "user", "content": "Say hi."}]


@pytest.fixture(scope="module", autouse=True)
def _smollm2() -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")
    from sagegen.errors import ConfigError
    from sagegen.llm.llamacpp import default_gguf

    try:
        default_gguf()
    except ConfigError as e:
        pytest.skip(str(e))


def test_a_model_still_loaded_at_exit_is_freed_before_teardown(tmp_path: Path) -> None:
    # A thread still alive at exit (a server thread, a pool's worker) keeps the module holding the model
    # alive past the garbage collection of interpreter shutdown: the model then met module teardown,
    # after llama_cpp's own globals. The run never closes its backend here, as a library user might not.
    script = textwrap.dedent("""
        import asyncio, threading, time
        from sagegen.config import LLMConfig
        from sagegen.llm.factory import build_llm

        llm = build_llm(LLMConfig(cache=False, n_ctx=1024))
        comp = asyncio.run(llm.complete([{"role": "user", "content": "Say hi."}], max_tokens=4, seed=1))
        print("completed", comp.completion_tokens)

        def linger():
            import sagegen.llm.llamacpp as held  # noqa: F401
            time.sleep(3600)

        threading.Thread(target=linger, daemon=True).start()
        time.sleep(0.1)
    """)
    res = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert res.returncode == 0 and res.stdout.startswith("completed "), res.stderr
    assert "Exception ignored in" not in res.stderr and "TypeError" not in res.stderr, res.stderr


async def test_the_last_backend_to_close_frees_the_shared_model() -> None:
    from sagegen.llm import llamacpp
    from sagegen.llm.llamacpp import LlamaCppBackend

    cfg = LLMConfig(n_ctx=1024, cache=False)
    a, b = LlamaCppBackend(cfg), LlamaCppBackend(cfg)
    first = await a.complete(SAY_HI, max_tokens=4, seed=1)
    await b.complete(SAY_HI, max_tokens=4, seed=1)
    model = a.load()
    assert b.load() is model and model.users == 2  # one hold per backend, however many calls
    a.close()
    a.close()  # idempotent: a second close is no second release
    assert not model.closed and model in llamacpp._MODELS.values()
    b.close()
    assert model.closed and model not in llamacpp._MODELS.values()
    # A backend used again after close loads the model afresh and answers as before.
    again = await a.complete(SAY_HI, max_tokens=4, seed=1)
    assert again.text == first.text and a.load() is not model
    a.close()
    assert model.key not in llamacpp._MODELS  # (another test module may hold a model of its own)


async def test_a_run_s_components_free_the_model_when_closed(tmp_path: Path) -> None:
    from sagegen.llm import llamacpp
    from sagegen.loop.components import Components

    write_corpus(tmp_path / "corpus.jsonl")
    cfg = Config(
        corpus={"path": str(tmp_path / "corpus.jsonl")},
        retrieval={"index_dir": str(tmp_path / "idx")},
        llm={"n_ctx": 1536, "cache_path": str(tmp_path / "cache.sqlite")},
    )  # cached, as in a run
    parts = Components.from_config(cfg)
    await parts.generator.complete(SAY_HI, max_tokens=4, seed=1)
    await parts.solver.complete(SAY_HI, max_tokens=4, seed=2)
    [model] = [m for m in llamacpp._MODELS.values() if m.key[1] == 1536]  # one model for every role
    assert model.users == 1
    parts.close()  # what sagegen.loop.session does when a run ends, however it ends
    assert model.closed and model.key not in llamacpp._MODELS
