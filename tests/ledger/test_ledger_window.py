"""The ledger's write window for LLM call bookings, against a real SIGKILL.

A child process books calls inside an event loop the way the pipeline does (``record_call`` per
call, now and then another write such as an event) and prints each booking once it has returned;
the parent kills it with SIGKILL and reads the ledger. What the kill may lose is exactly what
sagegen.ledger.store promises: only the bookings after the last commit, a suffix of at most
``CALL_WINDOW_ROWS`` calls; never a booking made before another write returned, and nothing at
all once the window's timer has had its time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sagegen.ledger.store import CALL_WINDOW_ROWS, CALL_WINDOW_S, RunStore

CHILD = r"""
import asyncio, sys
from sagegen.ledger.store import RunStore

async def main(run, total, every, idle):
    store, _ = RunStore.create_or_resume(run, {"x": 1}, "x: 1\n")
    store.begin_session()
    for i in range(total):
        store.record_call("solver", "m", i, 1, 0.01, False)
        line = f"booked {i}"
        if every and i % every == every - 1:
            store.event("progress", str(i))  # another write: it commits the queued bookings with it
            line += " event"
        print(line, flush=True)
        await asyncio.sleep(0.002)
    print("idle", flush=True)
    await asyncio.sleep(idle)  # nothing booked now: only the window's timer can commit the last ones
    print("done", flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
"""


def _child(run: Path, total: int, every: int, idle: float) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(Path(__file__).parents[2] / "src"), env.get("PYTHONPATH", "")] if p
    )
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(run), str(total), str(every), str(idle)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def _booked(run: Path) -> list[int]:
    con = sqlite3.connect(run / "ledger.sqlite")
    try:
        return [r[0] for r in con.execute("SELECT prompt_tokens FROM llm_calls ORDER BY id")]
    finally:
        con.close()


def _kill_after(proc: subprocess.Popen[str], until: str) -> list[str]:
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.strip())
        if line.startswith(until):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return lines


@pytest.mark.parametrize("kill_at", [37, 150, 299])
def test_sigkill_loses_at_most_the_window_and_nothing_before_another_write(
    tmp_path: Path, kill_at: int
) -> None:
    run = tmp_path / "run"
    lines = _kill_after(_child(run, 400, 10, 5.0), f"booked {kill_at}")
    printed = [int(x.split()[1]) for x in lines if x.startswith("booked")]
    got = _booked(run)
    assert got == list(range(len(got)))  # in order, none twice, no hole: what is lost is a suffix
    lost = [i for i in printed if i not in got]
    assert len(lost) <= CALL_WINDOW_ROWS
    last_write = max(int(x.split()[1]) for x in lines if x.endswith("event"))
    assert len(got) > last_write  # every booking up to the last other write survived the kill


def test_sigkill_after_the_window_has_passed_loses_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _child(run, 25, 0, 30.0)  # no other write at all: only the window's timer commits
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("idle"):
            break
    time.sleep(CALL_WINDOW_S * 10)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert _booked(run) == list(range(25))


def test_window_commits_with_other_writes_and_on_close(tmp_path: Path) -> None:
    store, _ = RunStore.create_or_resume(tmp_path / "run", {"x": 1}, "x: 1\n")
    store.begin_session()

    async def run() -> None:
        store.record_call("solver", "m", 1, 1, 0.1, False)  # nothing booked a window before it: at once
        assert _booked(tmp_path / "run") == [1]
        store.record_call("judge", "m", 2, 1, 0.1, False)
        store.record_call("judge", "m", 3, 1, 0.1, False)
        assert _booked(tmp_path / "run") == [1]  # queued: a call was booked within the window
        store.event("x", "y")  # another write carries them in its own transaction
        assert _booked(tmp_path / "run") == [1, 2, 3]
        store.record_call("solver", "m", 4, 1, 0.1, False)
        assert _booked(tmp_path / "run") == [1, 2, 3]
        await asyncio.sleep(CALL_WINDOW_S * 4)  # the timer commits it
        assert _booked(tmp_path / "run") == [1, 2, 3, 4]
        store.record_call("solver", "m", 5, 1, 0.1, False)  # a window after the one before: at once
        assert _booked(tmp_path / "run") == [1, 2, 3, 4, 5]
        for i in range(CALL_WINDOW_ROWS):  # a full window commits at once, without waiting
            store.record_call("solver", "m", 10 + i, 1, 0.1, False)
        assert len(_booked(tmp_path / "run")) == 5 + CALL_WINDOW_ROWS
        store.record_call("solver", "m", 99, 1, 0.1, False)
        assert _booked(tmp_path / "run")[-1] != 99

    asyncio.run(run())
    store.close()  # the last window, its timer never fired (the loop is gone)
    assert _booked(tmp_path / "run")[-1] == 99
    store2, resumed = RunStore.create_or_resume(tmp_path / "run", {"x": 1}, "x: 1\n")
    assert resumed
    store2.record_call("solver", "m", 100, 1, 0.1, False)  # outside a loop: written at once
    assert _booked(tmp_path / "run")[-1] == 100
    store2.close()
