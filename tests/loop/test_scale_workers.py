"""``sagegen generate --workers 2``: real processes on one run directory, against one process.

The runs are real ``sagegen generate`` commands on the package's scripted fixture (the SIGKILL test's
setup, sagegen.loop.scale). The fixture sleeps (blocking) in each call, so one process runs one call at a
time and two workers really share the pairs. Completed backend calls are the rows of the call cache.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import sigint_default
from helpers.killrun import N, _cmd, _corpus, _outcome, _rows

DELAY = 0.05


def _run(tmp: Path, name: str, *extra: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    cmd = _cmd(f"{name}/run", f"{name}.sqlite", delay=DELAY) + list(extra)
    return subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=300, **kw)


def _calls(tmp: Path, name: str) -> int:
    return _rows(tmp / f"{name}.sqlite", "SELECT COUNT(*) FROM calls")[0][0]


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # exited; a zombie waits only for its new parent to reap it


def _all_gone(pids: list[int], within: float = 20.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and not all(_gone(p) for p in pids):
        time.sleep(0.05)
    return all(_gone(p) for p in pids)


def _wait_for_attempts(proc: subprocess.Popen[Any], ledger: Path, at_least: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if ledger.exists() and _rows(ledger, "SELECT COUNT(*) FROM attempts")[0][0] >= at_least:
                return
        except sqlite3.OperationalError:
            pass  # the schema is being created
        time.sleep(0.02)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], int]:
    """The corpus, and the outcome and completed-call count of an uninterrupted one-process run."""
    tmp = tmp_path_factory.mktemp("workers")
    _corpus(tmp / "corpus.jsonl")
    res = _run(tmp, "one")
    assert res.returncode == 0, res.stderr
    outcome = _outcome(tmp / "one" / "run")
    assert {p[4] for p in outcome["pairs"]} >= {"pass", "too_easy"}
    return tmp, outcome, _calls(tmp, "one")


def test_two_workers_make_the_same_dataset_as_one_process(
    one_process: tuple[Path, dict[str, Any], int],
) -> None:
    tmp, expected, calls = one_process
    res = _run(tmp, "two", "--workers", "2")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    run = tmp / "two" / "run"
    assert _outcome(run) == expected
    assert _calls(tmp, "two") == calls  # the same distinct calls, each made once
    ledger = run / "ledger.sqlite"
    paid = _rows(ledger, "SELECT SUM(1 - cached), COUNT(DISTINCT session) FROM llm_calls")
    assert paid == [(calls, 1)]  # every call booked once, in the parent's session
    assert _rows(ledger, "SELECT status FROM sessions") == [("completed",)]
    workers = [json.loads(m) for (m,) in _rows(ledger, "SELECT message FROM events WHERE kind='worker'")]
    assert sorted(w["worker"] for w in workers) == [0, 1]
    assert len({w["where"] for w in workers}) == 2  # two processes
    assert sum(w["pairs"] for w in workers) == N and all(w["pairs"] > 0 for w in workers)
    assert "16 finished of 16" in res.stdout and f"{calls} total" in res.stdout  # counted in the parent
    # The files are the ledger's view in finishing order, as one process writes them.
    order = [
        q
        for (q,) in _rows(
            ledger,
            "SELECT json_extract(qa_json, '$.question') FROM pairs "
            "WHERE output='dataset' ORDER BY finish_seq",
        )
    ]
    assert [json.loads(x)["question"] for x in (run / "dataset.jsonl").read_text().splitlines()] == order


def test_sigkill_of_the_parent_kills_the_workers_and_the_rerun_repeats_nothing(
    one_process: tuple[Path, dict[str, Any], int],
) -> None:
    tmp, expected, calls = one_process
    cmd = [*_cmd("killed/run", "killed.sqlite", delay=DELAY), "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ledger = tmp / "killed" / "run" / "ledger.sqlite"
    try:
        _wait_for_attempts(proc, ledger, len(expected["attempts"]) // 3)
        assert proc.poll() is None, "the run finished before it could be killed"
        children = _children(proc.pid)
        assert len(children) >= 2  # the two workers (spawn may add a resource tracker)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert _all_gone(children), "a worker outlived its killed parent"
    assert _rows(ledger, "SELECT COUNT(*) FROM pairs WHERE finished IS NOT NULL")[0][0] < N

    rerun = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed" in rerun.stdout
    assert _outcome(tmp / "killed" / "run") == expected  # no finished pair repeated or changed
    assert _calls(tmp, "killed") == calls
    paid = _rows(ledger, "SELECT session, SUM(1 - cached) FROM llm_calls GROUP BY session ORDER BY 1")
    assert len(paid) == 2
    # No completed call paid twice. The ledger books a call just after the cache stores it, so a kill
    # can leave a call unbooked (replayed as a hit) in each worker: at most one each, the fixture
    # blocking its process's loop.
    assert calls - 2 <= sum(p[1] for p in paid) <= calls
    assert _rows(ledger, "SELECT status FROM sessions ORDER BY id") == [("interrupted",), ("completed",)]


def test_a_worker_that_dies_is_reported_and_its_pairs_wait_for_the_rerun(
    one_process: tuple[Path, dict[str, Any], int],
) -> None:
    tmp, expected, calls = one_process
    cmd = [*_cmd("lost/run", "lost.sqlite", delay=DELAY), "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ledger = tmp / "lost" / "run" / "ledger.sqlite"
    _wait_for_attempts(proc, ledger, len(expected["attempts"]) // 4)
    assert proc.poll() is None, "the run finished before a worker could be killed"
    workers = [c for c in _children(proc.pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert len(workers) == 2
    # The OOM killer's way: one worker gone at once, no clean-up.
    victim = max(workers)
    os.kill(victim, signal.SIGKILL)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "died (killed by SIGKILL)" in err and "rerun the same command" in err and "Traceback" not in err
    assert _rows(ledger, "PRAGMA integrity_check") == [("ok",)]
    assert _rows(ledger, "SELECT status FROM sessions") == [("failed",)]

    rerun = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert _outcome(tmp / "lost" / "run") == expected
    assert _calls(tmp, "lost") == calls


def test_ctrl_c_stops_every_worker_cleanly_and_the_rerun_finishes(
    one_process: tuple[Path, dict[str, Any], int],
) -> None:
    tmp, expected, _ = one_process
    cmd = [*_cmd("int/run", "int.sqlite", delay=0.15), "--workers", "2"]
    proc = subprocess.Popen(
        cmd, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default
    )
    ledger = tmp / "int" / "run" / "ledger.sqlite"
    _wait_for_attempts(proc, ledger, 4)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    children = _children(proc.pid)
    proc.send_signal(signal.SIGINT)  # to the parent alone: it must stop its workers itself
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    assert "rerun the same command to resume" in err and "Traceback" not in err
    assert _all_gone(children)
    assert _rows(ledger, "PRAGMA integrity_check") == [("ok",)]
    assert _rows(ledger, "SELECT status FROM sessions") == [("interrupted",)]
    stopped = [json.loads(m) for (m,) in _rows(ledger, "SELECT message FROM events WHERE kind='worker'")]
    assert [w["status"] for w in stopped] == ["stopped", "stopped"]  # each cancelled its pairs and closed
    assert _rows(ledger, "SELECT COUNT(*) FROM pairs WHERE finished IS NOT NULL")[0][0] < N
    rerun = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert _outcome(tmp / "int" / "run") == expected


def test_the_worker_count_may_change_on_resume_and_is_no_part_of_the_config_hash() -> None:
    from sagegen.config import load_config
    from sagegen.ledger.store import config_hash

    one = load_config(None, [])
    many = load_config(None, ["pipeline.workers=4", "pipeline.executor=ray", "pipeline.ray_address=auto"])
    assert many.pipeline.workers == 4
    assert config_hash(one.model_dump(mode="json")) == config_hash(many.model_dump(mode="json"))
    # ...while a setting that changes the data still counts.
    other = load_config(None, ["pipeline.seed=1"])
    assert config_hash(one.model_dump(mode="json")) != config_hash(other.model_dump(mode="json"))


def test_ray_executor_without_ray_installed_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sagegen.config import load_config
    from sagegen.errors import ConfigError
    from sagegen.loop.scale import run_pairs

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where it is not installed
    cfg = load_config(None, ["pipeline.executor=ray"])
    with pytest.raises(ConfigError, match=r"needs Ray: pip install 'sagegen\[ray\]'"):
        run_pairs(cfg, tmp_path, [0], lambda r: None)


def test_a_worker_error_comes_back_as_one_line_and_stops_the_other_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sagegen.config import load_config
    from sagegen.loop.scale import WorkerError, run_pairs
    from sagegen.loop.session import Components

    _corpus(tmp_path / "corpus.jsonl")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        None,
        [
            "corpus.path=corpus.jsonl",
            "retrieval.index_dir=idx",
            "llm.backend=scripted",
            "llm.model=fixture:sage",
            "llm.cache_path=c.sqlite",
            "pipeline.workers=2",
        ],
    )
    Components.from_config(cfg).close()  # the index is built here, once, not by two workers at once
    seen: list[Any] = []
    # The workers open the run's ledger, which is not there: each fails while the parent waits for them.
    with pytest.raises(WorkerError, match=r"^worker [01]: .*not a sagegen run directory") as err:
        run_pairs(cfg, tmp_path / "missing", [0, 1, 2, 3], seen.append)
    assert "Traceback" not in str(err.value) and "\n" not in str(err.value)
    assert seen == []
    assert [
        c
        for c in _children(os.getpid())
        if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes() and not _gone(c)
    ] == []  # every worker was stopped and reaped
