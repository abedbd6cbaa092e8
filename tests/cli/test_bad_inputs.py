"""Damaged state and bad input found by the second hostile campaign (issue 25): each is one line on
stderr naming the file (and row or line) and what to do, exit 2, no traceback; and secrets of any
length, or in a URL, never reach a file or the terminal.

Every case drives the real command in a fresh process against real files (a scripted run, a real
BM25 index, a real SQLite ledger), as tests/cli/test_operations.py does for the first campaign.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest

from helpers.fault_server import FaultServer, status
from helpers.overlap import LIMITS, WordOverlap
from sage_loop_helpers import SCRIPTED_RUN_SETS, run_cli, write_corpus
from sagegen.errors import IndexError_, register_secret, scrub
from sagegen.retrieval.index import open_index
from sagegen.server import create_app, running_server


def one_line(res: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a refused command (exit 2, no traceback; notices such as generate's demo
    budgets may come before it)."""
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and res.stderr.rstrip().endswith(lines[0]), res.stderr
    return lines[0]


def _generate(cwd: Path, n: int = 3, *extra: str, env: dict[str, str] | None = None):
    return run_cli(
        "generate",
        "--out",
        "run",
        "--no-progress",
        "-n",
        str(n),
        *SCRIPTED_RUN_SETS,
        *extra,
        cwd=cwd,
        env=env,
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished scripted run (3 pairs) and its BM25 index, copied by each test that damages them."""
    cwd = tmp_path_factory.mktemp("finished")
    write_corpus(cwd / "corpus.jsonl")
    res = _generate(cwd)
    assert res.returncode == 0, res.stderr
    return cwd


@pytest.fixture
def cwd(finished: Path, tmp_path: Path) -> Path:
    shutil.copytree(finished, tmp_path / "w")
    return tmp_path / "w"


# ---------------------------------------------------------------------------- the ledger


def test_a_ledger_row_with_invalid_json_is_one_line_for_every_command(cwd: Path) -> None:
    with sqlite3.connect(cwd / "run" / "ledger.sqlite") as c:
        c.execute("""UPDATE rounds SET verdict_json='{"label": ' WHERE pair_idx=0 AND round=1""")
    commands = [
        ("generate", "--out", "run", "--no-progress", "-n", "3", *SCRIPTED_RUN_SETS),
        ("analyze", "run"),
        ("report", "run"),
        ("export", "run", "--format", "flashrag", "--out", "x.jsonl"),
    ]
    for args in commands:
        line = one_line(run_cli(*args, cwd=cwd))
        assert (
            "run/ledger.sqlite: table rounds, pair 0 round 1, column verdict_json: not valid (Invalid JSON"
            in line
        )
        assert "move the run directory aside to keep them" in line and "--force" not in line, line


def test_a_dropped_table_is_refused_not_silently_re_created_empty(cwd: Path) -> None:
    with sqlite3.connect(cwd / "run" / "ledger.sqlite") as c:
        c.execute("DROP TABLE attempts")
    for res in (_generate(cwd, 4), run_cli("status", "run", cwd=cwd)):
        assert "ledger.sqlite: table(s) attempts missing" in one_line(res)
    with sqlite3.connect(cwd / "run" / "ledger.sqlite") as c:  # the writer did not create it again
        assert not c.execute("SELECT name FROM sqlite_master WHERE name='attempts'").fetchall()


def test_a_damaged_call_cache_says_it_is_the_cache_and_only_costs_repeat_calls(cwd: Path) -> None:
    sets = ("-s", "llm.cache=true", "-s", "llm.cache_path=c/cache.sqlite")
    assert _generate(cwd, 3, *sets).returncode == 0
    cache = cwd / "c" / "cache.sqlite"
    for side in ("-wal", "-shm"):
        Path(f"{cache}{side}").unlink(missing_ok=True)
    data = bytearray(cache.read_bytes())
    data[2 * 4096 : 2 * 4096 + 100] = b"\0" * 100  # a page of its table, zeroed
    cache.write_bytes(bytes(data))
    shutil.rmtree(cwd / "run")
    line = one_line(_generate(cwd, 3, *sets))
    assert "LLM call cache" in line and "damaged" in line and "delete it and rerun" in line, line
    assert "c/cache.sqlite" in line  # the file itself is named
    assert "run directory" not in line and "finished pairs" not in line  # not a run's advice


# ---------------------------------------------------------------------------- index files


def test_each_truncated_index_file_is_named(cwd: Path) -> None:
    (index,) = (cwd / "idx").iterdir()
    files = sorted(p for p in index.rglob("*") if p.is_file() and p.name != "manifest.json")
    # passages.jsonl and its offsets, bm25's three arrays, its two JSON files and term_max.npy (the
    # pruned top-k's bound per term)
    assert len(files) == 8
    for f in files:
        kept = f.read_bytes()
        f.write_bytes(kept[: len(kept) // 2])
        with pytest.raises(IndexError_) as e:
            open_index(index)
        assert str(e.value).startswith(f"{f}: damaged index file ("), str(e.value)
        assert "sagegen index --force" in str(e.value)
        f.write_bytes(kept)
    open_index(index)  # whole again: it loads

    f = index / "bm25" / "data.csc.index.npy"
    f.write_bytes(f.read_bytes()[:100])
    line = one_line(
        run_cli("search", "Seine", "-s", "corpus.path=corpus.jsonl", "-s", "retrieval.index_dir=idx", cwd=cwd)
    )
    assert f"{f.relative_to(cwd)}: damaged index file" in line


# ---------------------------------------------------------------------------- input files


def test_corpus_bom_accepted_and_a_bad_byte_named_on_its_own_line(tmp_path: Path) -> None:
    rows = [
        json.dumps({"id": f"d{i}", "title": f"T{i}", "text": f"passage number {i} about rivers"})
        for i in range(600)
    ]
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + "\n".join(rows).encode() + b"\n")
    ok = run_cli(
        "search",
        "passage number 0",
        "--json",
        "-s",
        "corpus.path=bom.jsonl",
        "-s",
        "retrieval.index_dir=i1",
        cwd=tmp_path,
    )
    assert ok.returncode == 0 and '"d0"' in ok.stdout, ok.stderr

    data = bytearray("\n".join(rows).encode() + b"\n")
    data[sum(len(r) + 1 for r in rows[:499]) + 20] = 0xFF  # line 500, far past the first 8 KB block
    (tmp_path / "bad.jsonl").write_bytes(bytes(data))
    line = one_line(
        run_cli("search", "x", "-s", "corpus.path=bad.jsonl", "-s", "retrieval.index_dir=i2", cwd=tmp_path)
    )
    assert "bad.jsonl, line 500: not valid UTF-8 (byte 0xff at column 21)" in line


def test_a_non_utf8_import_file_is_one_line_and_a_bom_is_accepted(release: Path, tmp_path: Path) -> None:
    first = next(release.rglob("initial_questions/*.jsonl"))
    text = first.read_bytes()
    first.write_bytes(b"\xef\xbb\xbf" + text)  # a BOM (a Windows editor's save) is accepted
    assert run_cli("import", str(release), "--out", "ok", cwd=tmp_path).returncode == 0
    lines = text.split(b"\n")
    lines[1] = lines[1].replace(b'"Q1 first?"', b'"Q1 \xe9t\xe9?"')  # latin-1 bytes on line 2
    first.write_bytes(b"\n".join(lines))
    line = one_line(run_cli("import", str(release), "--out", "bad", cwd=tmp_path))
    assert f"{first}, line 2: not valid UTF-8 (byte 0xe9" in line
    assert not (tmp_path / "bad").exists()


def test_a_config_folder_is_named_as_a_folder(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    assert "config file conf is a folder; pass the YAML file itself" in one_line(
        run_cli("generate", "-c", "conf", cwd=tmp_path)
    )


# ---------------------------------------------------------------------------- secrets


def test_scrub_masks_a_key_of_any_length_as_a_whole_token() -> None:
    register_secret("k3y-abc")
    register_secret("zq")
    assert scrub("Bearer k3y-abc refused; key=k3y-abc.") == "Bearer *** refused; key=***."
    assert scrub("zq, zqx and x_zq") == "***, zqx and x_zq"  # only where it stands alone


def test_a_short_key_echoed_by_the_server_is_never_printed_or_stored(tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus.jsonl")
    secret = "k3y-abc"  # 7 characters: below the old masking threshold of 8
    echo = json.dumps({"error": {"message": f"rate limited for key {secret}"}})
    with FaultServer([status(429, echo) for _ in range(3)]) as server:
        sets: list[str] = []
        for s in (
            "corpus.path=corpus.jsonl",
            "retrieval.index_dir=idx",
            "llm.backend=openai",
            "llm.model=m",
            f"llm.base_url={server.url}",
            "llm.max_retries=3",
            "llm.retry_backoff=0.01",
            "llm.cache=false",
            "judge.method=em",
            "solver.max_searches=1",
            "pipeline.concurrency=1",
        ):
            sets += ["-s", s]
        res = run_cli(
            "generate",
            "--out",
            "run",
            "--no-progress",
            "-n",
            "1",
            *sets,
            cwd=tmp_path,
            env={"OPENAI_API_KEY": secret},
        )
        assert server.requests[0]["headers"]["authorization"] == f"Bearer {secret}"
    assert "rate limited for key ***" in res.stderr, res.stderr
    assert secret not in res.stderr + res.stdout
    for f in (tmp_path / "run").iterdir():
        assert secret.encode() not in f.read_bytes(), f


def test_credentials_in_a_url_are_never_stored(cwd: Path) -> None:
    password = "PASS9876word"
    url = f"http://user:{password}@127.0.0.1:9/v1"
    shutil.rmtree(cwd / "run")
    assert _generate(cwd, 2, "-s", f"llm.base_url={url}").returncode == 0
    assert run_cli("analyze", "run", cwd=cwd).returncode == 0
    again = _generate(cwd, 3, "-s", f"llm.base_url={url}")  # a resume with the same command line
    assert again.returncode == 0 and "resum" in again.stdout, again.stdout + again.stderr
    stored = {f.name: f.read_bytes() for f in (cwd / "run").iterdir() if f.is_file()}
    assert {"config.yaml", ".sagegen.lock", "ledger.sqlite", "analysis.json"} <= set(stored)
    assert [name for name, data in stored.items() if password.encode() in data] == []
    assert b"http://user:***@127.0.0.1:9/v1" in stored["config.yaml"]


# ---------------------------------------------------------------------------- the retrieval server


def test_the_server_answers_405_for_a_wrong_method_and_takes_a_whole_float_topk() -> None:
    with (
        running_server(create_app(WordOverlap(), LIMITS)) as base,
        httpx.Client(base_url=base, timeout=10) as c,
    ):
        assert c.put("/health", content=b"x", headers={"content-type": "text/plain"}).status_code == 405
        assert c.post("/health", json={}).status_code == 405
        r = c.post("/retrieve", json={"queries": ["capital of France"], "topk": 3.0})
        assert r.status_code == 200 and len(r.json()["result"][0]) == 3
        r = c.post("/retrieve", json={"queries": ["a"], "topk": 2.5})
        assert r.status_code == 422 and "fractional part" in r.text
