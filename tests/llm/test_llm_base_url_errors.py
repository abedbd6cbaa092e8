"""A malformed ``llm.base_url`` is refused as the user wrote it (never its password) with what a valid
one looks like: from the config layer (building the backend) and from ``sagegen generate`` (exit 2, one
line, no traceback, nothing written)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sage_loop_helpers import write_corpus
from sagegen.config import LLMConfig
from sagegen.errors import ConfigError
from sagegen.llm.factory import build_llm

SECRET = "hunter2-" + "9" * 12
VALID = "e.g. http://127.0.0.1:8000/v1"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("://notaurl", "'://notaurl'"),
        ("localhost:8000/v1", "'localhost:8000/v1'"),
        ("ftp://files.example.org/v1", "'ftp://files.example.org/v1'"),
        (f"http//bob:{SECRET}@host:8000/v1", "'http//bob:***@host:8000/v1'"),  # does not parse: no netloc
        (f"http://bob:{SECRET}@/v1", "'http://bob:***@/v1'"),  # parses, but has no host
        (f"bob:{SECRET}@host:8000/v1", "'bob:***@host:8000/v1'"),
    ],
)
def test_the_error_shows_what_was_written_with_the_password_masked(url: str, shown: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_llm(LLMConfig(backend="openai", model="m", base_url=url, api_key_env=None, cache=False))
    text = str(err.value)
    assert text.startswith(f"llm.base_url: {shown} is not an http(s) URL;") and VALID in text, text
    assert SECRET not in text and "\n" not in text


def test_one_bad_replica_in_a_list_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^llm\.base_url: '://b:8001' is not an http"):
        build_llm(
            LLMConfig(
                backend="openai",
                model="m",
                base_url=["http://127.0.0.1:8001/v1", "://b:8001"],
                api_key_env=None,
                cache=False,
            )
        )


def test_generate_refuses_it_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus.jsonl")
    urls = f"[http://127.0.0.1:8001/v1, http://bob:{SECRET}@:8000/v1]"
    sets = [
        "corpus.path=corpus.jsonl",
        "retrieval.index_dir=idx",
        "llm.backend=openai",
        "llm.model=m",
        f"llm.base_url={urls}",
    ]
    cmd = [sys.executable, "-m", "sagegen.cli.main", "generate", "--out", "run", "--no-progress", "-n", "1"]
    for s in sets:
        cmd += ["-s", s]
    res = subprocess.run(
        cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "2000"}
    )  # rich wraps long lines at the terminal width
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and SECRET not in res.stderr + res.stdout
    assert res.stderr.strip().splitlines() == [
        f"error: llm.base_url: 'http://bob:***@:8000/v1' is not an http(s) URL; give the server's API root "
        f"with scheme and host, {VALID}"
    ]
    assert not (tmp_path / "run").exists()
