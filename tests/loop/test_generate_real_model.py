"""``sagegen generate`` with the real SmolLM2-135M: embedded (llama.cpp) and over a real
OpenAI-compatible server on loopback (llama-cpp-python's own server).

Assertions are on what a run must always do — finish, account every call, write its files, keep
the ledger consistent — never on the tiny model producing accepted pairs.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.llama_server import running_llama_server

# Small enough for a loaded 2-core machine: two seeds, one round, one attempt, short turns.
TINY = [
    "-n",
    "2",
    "--rounds",
    "1",
    "--k",
    "1",
    "--target",
    "2",
    "--concurrency",
    "1",
    "--no-progress",
    "-s",
    "corpus.limit=1500",
    "-s",
    "generator.max_searches=2",
    "-s",
    "generator.max_turn_tokens=96",
    "-s",
    "generator.max_format_retries=1",
    "-s",
    "solver.max_searches=2",
    "-s",
    "solver.max_turn_tokens=64",
    "-s",
    "solver.passage_chars=300",
    "-s",
    "generator.passage_chars=300",
    "-s",
    "judge.method=em",
    "-s",
    "llm.n_ctx=4096",
]


def _needs_smollm2() -> Path:
    pytest.importorskip("llama_cpp")
    from sagegen.errors import ConfigError
    from sagegen.llm.llamacpp import default_gguf

    try:
        return default_gguf()
    except ConfigError as e:
        pytest.skip(str(e))


def _check_run(run: Path, stdout: str, backend_prefix: str) -> None:
    assert "pairs      2 finished of 2" in stdout and "LLM calls" in stdout and "dataset.jsonl" in stdout
    for name in ("dataset.jsonl", "too_easy.jsonl", "unsolved.jsonl", "config.yaml"):
        assert (run / name).is_file()
    for name in ("dataset.jsonl", "too_easy.jsonl", "unsolved.jsonl"):
        for line in (run / name).read_text().splitlines():
            row = json.loads(line)
            assert row["question"] and row["answer"] and row["target"] == 2
    con = sqlite3.connect(f"file:{run / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        states = [r[0] for r in con.execute("SELECT state FROM pairs")]
        assert len(states) == 2 and set(states) <= {"pass", "too_easy", "incorrect", "failed"}
        calls = con.execute(
            "SELECT role, model, prompt_tokens, completion_tokens, error FROM llm_calls"
        ).fetchall()
        assert calls and all(
            m.startswith(backend_prefix) and p > 0 and err is None for _, m, p, _, err in calls
        )
        assert {"generator"} <= {r for r, *_ in calls}
        # Every stored attempt belongs to a round with a candidate, and its trajectory is stored.
        orphans = con.execute(
            "SELECT COUNT(*) FROM attempts a LEFT JOIN trajectories t ON t.id = a.trace_id WHERE t.id IS NULL"
        ).fetchone()[0]
        assert orphans == 0
    finally:
        con.close()


@pytest.mark.slow
@pytest.mark.ci
def test_generate_with_the_embedded_model(tmp_path: Path) -> None:
    _needs_smollm2()
    cmd = [
        sys.executable,
        "-m",
        "sagegen.cli.main",
        "generate",
        "--out",
        "runs/real",
        *TINY,
        "-s",
        f"retrieval.index_dir={tmp_path / 'idx'}",
        "-s",
        f"llm.cache_path={tmp_path / 'cache.sqlite'}",
    ]
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Exception ignored in" not in p.stderr, p.stderr[-3000:]  # the model is freed when the run ends
    _check_run(tmp_path / "runs" / "real", p.stdout, "llamacpp:")
    # The same command again resumes a finished run: nothing to do, no new call.
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert (
        again.returncode == 0
        and "resumed" in again.stdout
        and "this session 0 (0 cache hits)" in again.stdout
    )


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_llama_server(tmp_path_factory.mktemp("llama_server"), n_ctx=4096, startup_s=120) as url:
        yield url


@pytest.mark.slow
def test_generate_against_a_real_openai_compatible_server(tmp_path: Path, llama_server: str) -> None:
    cmd = [
        sys.executable,
        "-m",
        "sagegen.cli.main",
        "generate",
        "--out",
        "runs/remote",
        *TINY,
        "-s",
        "llm.backend=openai",
        "-s",
        f"llm.base_url={llama_server}",
        "-s",
        "llm.model=smollm2",
        "-s",
        f"retrieval.index_dir={tmp_path / 'idx'}",
        "-s",
        f"llm.cache_path={tmp_path / 'cache.sqlite'}",
    ]
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    _check_run(tmp_path / "runs" / "remote", p.stdout, "openai:smollm2")
