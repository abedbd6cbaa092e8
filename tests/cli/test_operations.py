"""Trust under operations (issue 11): one writer per run, outages never stored as answers, no secret
on stderr, one clear line for damaged state, nothing written before the input is checked.

Every case drives the real command in a fresh process (``python -m sagegen.cli.main``), against real
files, a real SQLite ledger and real loopback sockets.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.fault_server import FaultServer, status
from sage_loop_helpers import SCRIPTED_RUN_SETS, write_corpus

WIDE = {"COLUMNS": "2000"}  # rich wraps long lines at the terminal width


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180):
    return subprocess.run(
        [sys.executable, "-m", "sagegen.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **WIDE, **(env or {})},
    )


def _one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.fixture
def run_cwd(tmp_path: Path) -> Path:
    write_corpus(tmp_path / "corpus.jsonl")
    return tmp_path


def _generate(cwd: Path, *extra: str, env: dict[str, str] | None = None):
    return _cli(
        "generate", "--out", "run", "--no-progress", "-n", "2", *SCRIPTED_RUN_SETS, *extra, cwd=cwd, env=env
    )


# ---------------------------------------------------------------------------- 1. one writer


def _wait_for(pred, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_second_writer_refused_readers_work_and_a_killed_holder_frees_the_run(run_cwd: Path) -> None:
    slow = [*SCRIPTED_RUN_SETS]
    slow[slow.index("llm.model=fixture:sage")] = "llm.model=fixture:sage@0.3"
    cmd = [
        sys.executable,
        "-m",
        "sagegen.cli.main",
        "generate",
        "--out",
        "run",
        "--no-progress",
        "-n",
        "6",
        *slow,
    ]
    writer = subprocess.Popen(cmd, cwd=run_cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ledger = run_cwd / "run" / "ledger.sqlite"

        def some_calls() -> bool:
            if not ledger.is_file():
                return False
            try:
                with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as c:
                    return c.execute("SELECT COUNT(*) FROM llm_calls").fetchone()[0] >= 2
            except sqlite3.Error:
                return False

        _wait_for(some_calls, "the writer's first LLM calls")
        second = _cli("generate", "--out", "run", "--no-progress", "-n", "6", *slow, cwd=run_cwd)
        line = _one_line_error(second)
        assert f"pid {writer.pid} on {socket.gethostname()} since " in line, line
        # Readers work beside the live writer.
        st = _cli("status", "run", cwd=run_cwd)
        assert st.returncode == 0 and "session 1: running" in st.stdout, st.stderr
        an = _cli("analyze", "run", "--json", cwd=run_cwd)
        assert an.returncode == 0 and json.loads(an.stdout), an.stderr
        assert writer.poll() is None, "the writer should still be running"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(30)
    # The kernel released the lock with the process: the same command resumes and finishes.
    again = _cli("generate", "--out", "run", "--no-progress", "-n", "6", *slow, cwd=run_cwd)
    assert again.returncode == 0, again.stderr
    st = _cli("status", "run", cwd=run_cwd).stdout
    assert "session 1: interrupted" in st and "session 2: completed" in st, st
    lines = (run_cwd / "run" / "dataset.jsonl").read_text().splitlines()
    assert len({json.loads(x)["id"] for x in lines}) == len(lines)  # no pair written twice


def test_a_second_eval_on_the_same_out_is_refused(run_cwd: Path) -> None:
    from sagegen.ledger.lock import DirLock

    bench = run_cwd / "b.jsonl"
    row = {"id": "1", "question": "Capital of France?", "golden_answers": ["Paris"]}
    bench.write_text(json.dumps(row) + "\n")
    with DirLock(run_cwd / "ev", "eval"):
        res = _cli("eval", "b.jsonl", "--out", "ev", *SCRIPTED_RUN_SETS, cwd=run_cwd)
        line = _one_line_error(res)
        assert f"pid {os.getpid()}" in line and "eval" in line
    assert not (run_cwd / "ev" / "results.jsonl").exists()
    assert _cli("eval", "b.jsonl", "--out", "ev", *SCRIPTED_RUN_SETS, cwd=run_cwd).returncode == 0


# ---------------------------------------------------------------------------- 2. outages


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now: connections are refused
    return port


def _openai_sets(url: str, *more: str) -> list[str]:
    out = []
    for s in (
        "corpus.path=corpus.jsonl",
        "retrieval.index_dir=idx",
        "llm.backend=openai",
        "llm.model=m",
        f"llm.base_url={url}",
        "llm.max_retries=1",
        "llm.retry_backoff=0.01",
        "llm.cache=false",
        "judge.method=em",
        "solver.max_searches=1",
        *more,
    ):
        out += ["-s", s]
    return out


def _bench(cwd: Path, n: int) -> Path:
    path = cwd / "b.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "question": f"Where is the Seine {i}?", "golden_answers": ["France"]})
            + "\n"
            for i in range(n)
        )
    )
    return path


def test_eval_and_solve_against_a_closed_port_store_nothing_and_fail(run_cwd: Path) -> None:
    """The pre-flight probe (sagegen.doctor) finds the dead server before any index or call: one line."""
    _bench(run_cwd, 3)
    port = _closed_port()
    sets = _openai_sets(f"http://127.0.0.1:{port}/v1")
    for cmd in (["eval", "b.jsonl", "--out", "ev"], ["solve", "Where is the Seine?"]):
        res = _cli(*cmd, *sets, cwd=run_cwd)
        assert res.returncode == 2, res.stderr
        line = _one_line_error(res)
        assert f"llm server http://127.0.0.1:{port}/v1 is not reachable" in line and "llm.base_url" in line
    assert not (run_cwd / "ev").exists() and not (run_cwd / "idx").exists()


def test_eval_after_an_outage_retries_what_it_left(run_cwd: Path) -> None:
    _bench(run_cwd, 2)
    with FaultServer([status(503) for _ in range(200)]) as server:
        sets = _openai_sets(server.url, "pipeline.concurrency=1")
        res = _cli("eval", "b.jsonl", "--out", "ev", "--concurrency", "1", *sets, cwd=run_cwd)
        assert res.returncode == 1 and "unfinished by errors" in res.stderr, res.stderr
        results = run_cwd / "ev" / "results.jsonl"
        assert not results.exists() or not results.read_text()
        server.faults.clear()  # the server is back
        seen = len(server.requests)
        res = _cli("eval", "b.jsonl", "--out", "ev", "--concurrency", "1", "--json", *sets, cwd=run_cwd)
        assert res.returncode == 0, res.stderr
        assert len(server.requests) > seen  # the rerun asked the model again
    summary = json.loads(res.stdout)
    assert summary["questions"] == 2 and summary["new_questions"] == 2 and summary["unfinished"] == 0
    assert len((run_cwd / "ev" / "results.jsonl").read_text().splitlines()) == 2


# ---------------------------------------------------------------------------- 3. secrets


def test_a_key_echoed_by_the_server_never_reaches_stderr_or_the_ledger(run_cwd: Path) -> None:
    secret = "sk-test-" + "7" * 24
    echo = json.dumps({"error": {"message": f"rate limited for key {secret}"}})
    with FaultServer([status(429, echo) for _ in range(4)]) as server:  # the first call fails after 4 tries
        sets = _openai_sets(server.url, "llm.max_retries=3", "pipeline.concurrency=1")
        res = _generate(run_cwd, *sets, env={"OPENAI_API_KEY": secret})
        assert server.requests and server.requests[0]["headers"]["authorization"] == f"Bearer {secret}"
    assert "retry" in res.stderr and "***" in res.stderr, res.stderr
    assert secret not in res.stderr and secret not in res.stdout
    with sqlite3.connect(run_cwd / "run" / "ledger.sqlite") as c:
        rows = (
            " ".join(str(r) for r in c.execute("SELECT * FROM llm_calls"))
            + " ".join(str(r) for r in c.execute("SELECT * FROM events"))
            + " ".join(str(r) for r in c.execute("SELECT * FROM llm_tries"))
        )
    assert "rate limited for key ***" in rows and secret not in rows


# ---------------------------------------------------------------------------- 4. damaged state


def _finished_run(cwd: Path) -> Path:
    res = _generate(cwd)
    assert res.returncode == 0, res.stderr
    return cwd / "run" / "ledger.sqlite"


def test_binary_config_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    line = _one_line_error(_cli("generate", "-c", "c.yaml", cwd=tmp_path))
    assert "c.yaml: not a text file" in line


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_ledger_is_one_line_for_writers_and_readers(run_cwd: Path, damage: str) -> None:
    ledger = _finished_run(run_cwd)
    data = ledger.read_bytes()
    for side in (ledger.with_name("ledger.sqlite-wal"), ledger.with_name("ledger.sqlite-shm")):
        side.unlink(missing_ok=True)
    ledger.write_bytes(os.urandom(len(data)) if damage == "garbage" else data[: 4096 + 100])
    damaged = ledger.read_bytes()
    writer = ("generate", "--out", "run", "--no-progress", "-n", "2", *SCRIPTED_RUN_SETS)
    for args in (writer, ("status", "run"), ("export", "run", "--format", "flashrag")):
        line = _one_line_error(_cli(*args, cwd=run_cwd))
        assert "ledger.sqlite" in line and ("damaged" in line or "do not match" in line), line
    assert ledger.read_bytes() == damaged  # refused before any write: nothing made worse
    debug = _cli("status", "run", cwd=run_cwd, env={"SAGEGEN_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_ledger_missing_a_column_and_a_newer_schema_are_refused(run_cwd: Path) -> None:
    ledger = _finished_run(run_cwd)
    with sqlite3.connect(ledger) as c:
        c.execute("ALTER TABLE attempts DROP COLUMN num_searches")
    line = _one_line_error(_cli("status", "run", cwd=run_cwd))
    assert "table attempts lacks column(s) num_searches" in line
    line = _one_line_error(_generate(run_cwd))
    assert "table attempts lacks column(s) num_searches" in line

    shutil.rmtree(run_cwd / "run")
    ledger = _finished_run(run_cwd)
    with sqlite3.connect(ledger) as c:
        c.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    for res in (_cli("status", "run", cwd=run_cwd), _generate(run_cwd)):
        assert "schema version 99 is newer than this sagegen's (2)" in _one_line_error(res)


def test_a_zero_byte_ledger(run_cwd: Path) -> None:
    (run_cwd / "run").mkdir()
    (run_cwd / "run" / "ledger.sqlite").write_bytes(b"")
    assert "holds no run" in _one_line_error(_cli("status", "run", cwd=run_cwd))
    res = _generate(run_cwd)  # nothing in it to lose: started as a new run, no 100-line config diff
    assert res.returncode == 0 and "(new;" in res.stdout, res.stderr


@pytest.fixture
def small_fs(tmp_path: Path):
    """A real 1 MiB tmpfs mounted at tmp/fs (needs the right to mount; skipped elsewhere)."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_read_only_run_dir_and_full_disk(run_cwd: Path, small_fs: Path) -> None:
    write_corpus(small_fs / "corpus.jsonl")
    sets = [*SCRIPTED_RUN_SETS]
    sets[sets.index("retrieval.index_dir=idx")] = f"retrieval.index_dir={run_cwd / 'idx'}"
    sets += ["-s", f"llm.cache_path={run_cwd / 'cache.sqlite'}"]  # only the run lives on the small disk
    no_cache_override = sets[:-2]  # the call cache in the cwd, on the small disk too
    assert (
        _cli(
            "generate", "--out", "run", "--no-progress", "-n", "1", *no_cache_override, cwd=small_fs
        ).returncode
        == 0
    )
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    line = _one_line_error(_cli("generate", "--out", "run", "--no-progress", "-n", "2", *sets, cwd=small_fs))
    assert "run" in line and "read-only" in line, line
    line = _one_line_error(_cli("analyze", "run", cwd=small_fs))
    assert "analysis.json" in line and "cannot write" in line, line
    line = _one_line_error(
        _cli("generate", "--out", "run", "--no-progress", "-n", "2", *no_cache_override, cwd=small_fs)
    )
    assert "llm_cache.sqlite" in line and "read-only" in line and "delete it" not in line, line
    subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    # Fill the disk, then ask for more pairs: the writes fail with a clear line, and what was written stays.
    before = (small_fs / "run" / "dataset.jsonl").read_bytes()
    # Unbuffered: a buffered file would raise ENOSPC again from close(), flushing what the disk refused.
    with open(small_fs / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    res = _cli("generate", "--out", "run", "--no-progress", "-n", "40", *sets, cwd=small_fs)
    line = _one_line_error(res)
    assert "disk is full" in line, line
    assert (small_fs / "run" / "dataset.jsonl").read_bytes().startswith(before)
    (small_fs / "filler").unlink()
    assert _cli("status", "run", cwd=small_fs).returncode == 0


# ---------------------------------------------------------------------------- 5./6. input first


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--target", "abc"), "pipeline.target: 'abc' is not a number"),
        (("-s", "generator.answer_types=[]"), "generator.answer_types"),
        (("-s", "corpus.path=corpus.jsnl"), "corpus.jsnl"),
        (("-s", "pipeline=3"), "override 'pipeline=3': 'pipeline' is a section"),
    ],
)
def test_bad_input_leaves_no_run_behind(run_cwd: Path, args: tuple[str, ...], expected: str) -> None:
    res = _generate(run_cwd, *args)
    _one_line_error(res)
    assert expected in res.stderr and "pipeline.num_seeds" not in res.stderr, res.stderr
    assert not (run_cwd / "run").exists()
    assert _generate(run_cwd).returncode == 0  # the corrected command is not refused


# ---------------------------------------------------------------------------- 8. ledger truth


def test_every_try_is_recorded_and_status_shows_retries_and_waits(run_cwd: Path) -> None:
    with FaultServer([status(503), status(429, retry_after="0.3"), status(500)]) as server:
        res = _generate(
            run_cwd,
            *_openai_sets(server.url, "llm.max_retries=4", "llm.retry_backoff=0.2", "pipeline.concurrency=1"),
        )
        sent = len(server.requests)
    assert res.returncode in (0, 1), res.stderr
    with sqlite3.connect(run_cwd / "run" / "ledger.sqlite") as c:
        tries = c.execute("SELECT call_id, try, status, wait, seconds FROM llm_tries ORDER BY id").fetchall()
        first = c.execute("SELECT id, seconds FROM llm_calls ORDER BY id LIMIT 1").fetchone()
    assert len(tries) == sent  # one row per request the server saw
    assert [t[2] for t in tries[:4]] == [503, 429, 500, 200] and {t[0] for t in tries[:4]} == {first[0]}
    waits = [t[3] for t in tries[:3]]
    assert waits[1] >= 0.3 and all(w > 0 for w in waits) and tries[3][3] == 0
    assert first[1] >= sum(waits)  # model time includes the retries and the waits between them
    st = _cli("status", "run", cwd=run_cwd).stdout
    assert f"requests {sent} (3 retries, " in st and "429: 1" in st and "503: 1" in st and "500: 1" in st, st


# ---------------------------------------------------------------------------- 9. caches


def test_the_suite_never_uses_the_users_caches() -> None:
    datasets = pytest.importorskip("datasets")
    home_cache = Path.home() / ".cache"
    for var in ("HF_HOME", "HF_DATASETS_CACHE", "TORCH_HOME", "XDG_CACHE_HOME"):
        assert "sagegen-test-caches-" in os.environ[var]
        assert not Path(os.environ[var]).is_relative_to(home_cache)
    assert Path(datasets.config.HF_DATASETS_CACHE) == Path(os.environ["HF_DATASETS_CACHE"])
    torch = pytest.importorskip("torch")
    assert Path(torch.hub.get_dir()).is_relative_to(Path(os.environ["TORCH_HOME"]))
