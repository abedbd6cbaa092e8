"""A ledger cut short by a full disk is recovered, not called damaged (issue 25).

The campaign's case: the disk filled up while SQLite copied the WAL's pages into the main file (a
checkpoint writes page 1, whose header gives the new page count, then the rest in page order), the
run said "the disk is full ... nothing finished is lost", and once space was freed ``status`` and
``generate`` said "damaged (truncated ...) ... or pass --force", although SQLite opened the files
with integrity_check ok and every row intact: the WAL still held the pages.

Reproduced here for real: a process writes to a finished run's ledger with automatic checkpoints
off (so the new pages are only in the WAL), then checkpoints under a file-size limit
(``RLIMIT_FSIZE``: a write past it fails as a write on a full disk does), and exits without
closing. What is left on disk is what a full disk leaves.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sage_loop_helpers import SCRIPTED_RUN_SETS, cli_env, run_cli, write_corpus
from sagegen.ledger.damage import LedgerError
from sagegen.ledger.store import RunStore, _check_file

NOTES = 600  # events written after the run, each ~1 KB: ~150 pages beyond the main file


def _generate(cwd: Path, n: int) -> subprocess.CompletedProcess[str]:
    return run_cli("generate", "--out", "run", "--no-progress", "-n", str(n), *SCRIPTED_RUN_SETS, cwd=cwd)


_CUT_CHECKPOINT = """
import os, resource, signal, sys
from sagegen.ledger.store import RunStore
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing us
run, notes = sys.argv[1], int(sys.argv[2])
store = RunStore.open(run, readonly=False)
store.conn.execute("PRAGMA wal_autocheckpoint=0")  # every new page stays in the WAL
for i in range(notes):
    store.event("note", f"note {i} " + "x" * 1000)
size = os.path.getsize(os.path.join(run, "ledger.sqlite"))
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 8 * 4096, resource.RLIM_INFINITY))
try:
    store.conn.execute("PRAGMA wal_checkpoint(FULL)")
    print("checkpoint completed")
except Exception as e:
    print("checkpoint failed:", e)
os._exit(0)  # no close: the WAL stays as the failed checkpoint left it
"""


@pytest.fixture
def cut_run(tmp_path: Path) -> Path:
    """A finished run whose ledger a checkpoint on a full disk left short, with its WAL intact."""
    write_corpus(tmp_path / "corpus.jsonl")
    first = _generate(tmp_path, 2)
    assert first.returncode == 0, first.stderr
    run = tmp_path / "run"
    p = subprocess.run(
        [sys.executable, "-c", _CUT_CHECKPOINT, str(run), str(NOTES)],
        capture_output=True,
        text=True,
        env=cli_env(),
    )
    assert "checkpoint failed" in p.stdout, p.stdout + p.stderr
    ledger = run / "ledger.sqlite"
    head = ledger.read_bytes()[:100]
    pages, page_size = int.from_bytes(head[28:32], "big"), int.from_bytes(head[16:18], "big")
    assert ledger.stat().st_size < pages * page_size  # the main file is short of what its header says
    assert (run / "ledger.sqlite-wal").stat().st_size > NOTES * 1000  # the WAL holds the rest
    return run


def test_a_checkpoint_cut_by_a_full_disk_is_recovered_with_nothing_lost(cut_run: Path) -> None:
    cwd = cut_run.parent
    status = run_cli("status", "run", cwd=cwd)
    assert status.returncode == 0, status.stderr
    assert "damaged" not in status.stderr and "--force" not in status.stderr + status.stdout

    with RunStore.open(cut_run) as store:  # read-only, beside the WAL: every note is there
        assert sum(e.kind == "note" for e in store.events()) == NOTES
        dataset_before = store.counts()

    again = _generate(cwd, 3)  # the writer resumes: SQLite completes the checkpoint
    assert again.returncode == 0, again.stderr
    ledger = cut_run / "ledger.sqlite"
    with sqlite3.connect(ledger) as c:
        assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert c.execute("SELECT COUNT(*) FROM events WHERE kind='note'").fetchone() == (NOTES,)
    with RunStore.open(cut_run) as store:
        after = store.counts()
    assert after["pairs"] == 3 and dataset_before["pairs"] == 2


def test_a_short_ledger_whose_wal_lacks_the_pages_is_damage_and_keeps_the_finished_pairs(
    cut_run: Path,
) -> None:
    wal = cut_run / "ledger.sqlite-wal"
    data = bytearray(wal.read_bytes())
    data[32 + 24 + 100] ^= 0xFF  # one flipped byte in the first frame: it and every frame after fail
    wal.write_bytes(bytes(data))
    (cut_run / "ledger.sqlite-shm").unlink(missing_ok=True)
    finished = sum(1 for line in (cut_run / "dataset.jsonl").read_text().splitlines() if line.strip())
    finished += sum(1 for line in (cut_run / "too_easy.jsonl").read_text().splitlines() if line.strip())
    assert finished > 0

    res = run_cli("status", "run", cwd=cut_run.parent)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    line = lines[0]
    assert "ledger.sqlite: damaged (truncated: " in line and "its WAL does not hold the missing pages" in line
    assert "its finished pairs are kept in " in line and "move the run directory aside" in line
    assert "--force" not in line  # something can be saved: never advise deleting it


def test_force_is_advised_only_when_nothing_finished_is_kept(cut_run: Path) -> None:
    (cut_run / "ledger.sqlite-wal").unlink()
    for name in ("dataset.jsonl", "too_easy.jsonl", "unsolved.jsonl", "ambiguous.jsonl"):
        (cut_run / name).write_text("")
    with pytest.raises(LedgerError) as e:
        _check_file(cut_run / "ledger.sqlite")
    msg = str(e.value)
    assert "no finished pair is kept outside it: pass --force to start over" in msg
    assert "deletes this ledger and the unfinished pairs in it" in msg
