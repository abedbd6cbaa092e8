"""SIGKILL a real ``sagegen generate`` mid-run, rerun the same command, and compare with an
uninterrupted run: every completed item exactly once, and no completed LLM call made twice.

The model is the package's deterministic scripted fixture (``llm.model=fixture:sage@DELAY``), which
the pipeline wraps in the persistent call cache like any real backend; the number of completed
backend calls is the number of rows in that cache (each distinct call is stored once, on return).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from helpers import sigint_default
from helpers.killrun import N, _cmd, _corpus, _rows
from sagegen.ledger.store import CALL_WINDOW_ROWS


def _outcome(run: Path) -> dict[str, Any]:
    db = run / "ledger.sqlite"
    pairs = _rows(
        db, "SELECT idx, state, final_round, json_extract(qa_json, '$.question') FROM pairs ORDER BY idx"
    )
    attempts = _rows(db, "SELECT pair_idx, round, attempt, seed, correct FROM attempts ORDER BY 1, 2, 3")
    rounds = _rows(db, "SELECT pair_idx, round, kind, label FROM rounds ORDER BY 1, 2")
    files = {}
    for name in ("dataset.jsonl", "too_easy.jsonl", "unsolved.jsonl"):
        lines = (run / name).read_text().splitlines()
        rows = [json.loads(x) for x in lines]  # every line parses: no half-written line survived
        ids = [r["id"].rsplit("-", 1)[1] for r in rows]
        assert len(ids) == len(set(ids)), f"{name} holds a pair twice"
        files[name] = sorted(r["question"] for r in rows)
    return {"pairs": pairs, "attempts": attempts, "rounds": rounds, "files": files}


def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    _corpus(tmp_path / "corpus.jsonl")
    env = dict(os.environ, PYTHONUNBUFFERED="1")

    full = subprocess.run(
        _cmd("runs/full", "full.sqlite"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert full.returncode == 0, full.stderr
    expected = _outcome(tmp_path / "runs" / "full")
    full_calls = _rows(tmp_path / "full.sqlite", "SELECT COUNT(*) FROM calls")[0][0]
    assert {p[1] for p in expected["pairs"]} >= {"pass", "too_easy"}  # the fixture walks several paths
    assert len(expected["attempts"]) >= 2 * N

    # The same run, killed once a third of the attempts are in the ledger.
    proc = subprocess.Popen(
        _cmd("runs/killed", "killed.sqlite"),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ledger = tmp_path / "runs" / "killed" / "ledger.sqlite"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if ledger.exists():
                try:
                    if _rows(ledger, "SELECT COUNT(*) FROM attempts")[0][0] >= len(expected["attempts"]) // 3:
                        break
                except sqlite3.OperationalError:
                    pass  # the schema is being created
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    finished_at_kill = _rows(ledger, "SELECT COUNT(*) FROM pairs WHERE finished IS NOT NULL")[0][0]
    assert len(_rows(ledger, "SELECT * FROM attempts")) > 0 and finished_at_kill < N

    rerun = subprocess.run(
        _cmd("runs/killed", "killed.sqlite"),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed" in rerun.stdout
    got = _outcome(tmp_path / "runs" / "killed")
    assert got["pairs"] == expected["pairs"]
    assert got["rounds"] == expected["rounds"]
    assert got["attempts"] == expected["attempts"]  # same seeds, same judgements, each exactly once
    assert got["files"] == expected["files"]
    # No completed LLM call was made twice: the two sessions together made as many distinct calls as
    # the uninterrupted run, and the rerun's replays of calls completed before the kill were cache hits.
    killed_calls = _rows(tmp_path / "killed.sqlite", "SELECT COUNT(*) FROM calls")[0][0]
    assert killed_calls == full_calls
    paid = _rows(
        ledger, "SELECT session, SUM(1 - cached), SUM(cached) FROM llm_calls GROUP BY session ORDER BY 1"
    )
    assert len(paid) == 2  # one row per session: the killed one and the rerun
    # The ledger books a call just after the cache stores it, in a short write window
    # (sagegen.ledger.store.CALL_WINDOW_S / _ROWS, proven exactly in test_ledger_window.py); a kill can leave
    # the calls of that last window unbooked (then replayed as hits), never one booked twice.
    assert full_calls - CALL_WINDOW_ROWS <= sum(p[1] for p in paid) <= full_calls
    sessions = _rows(ledger, "SELECT status FROM sessions ORDER BY id")
    # The killed session never got to close; the rerun, holding the run's lock, marked it interrupted.
    assert sessions == [("interrupted",), ("completed",)]


def test_ctrl_c_stops_cleanly_and_the_rerun_finishes(tmp_path: Path) -> None:
    _corpus(tmp_path / "corpus.jsonl")
    # Slower calls than the SIGKILL test: on a busy machine a 30 ms run could end between two polls.
    cmd = _cmd("runs/int", "int.sqlite", delay=0.15)
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_default,
    )
    ledger = tmp_path / "runs" / "int" / "ledger.sqlite"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if ledger.exists() and _rows(ledger, "SELECT COUNT(*) FROM attempts")[0][0] >= 4:
                break
        except sqlite3.OperationalError:
            pass
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "rerun the same command to resume" in err and "Traceback" not in err
    assert _rows(ledger, "PRAGMA integrity_check") == [("ok",)]
    assert _rows(ledger, "SELECT status FROM sessions") == [("interrupted",)]
    assert _rows(ledger, "SELECT COUNT(*) FROM pairs WHERE finished IS NOT NULL")[0][0] < N
    rerun = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert _rows(ledger, "SELECT COUNT(*) FROM pairs WHERE finished IS NOT NULL")[0][0] == N
