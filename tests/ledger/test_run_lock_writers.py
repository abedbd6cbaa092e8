"""Every command that writes a run folder takes its run lock first (sagegen.ledger.lock).

The campaign's case: with ``generate`` writing to a run, ``import ... --out RUN --force`` exited 0,
deleted the live ledger, and the generator wrote on into deleted files. The live writer here is
another process holding the lock exactly as ``generate`` does (``DirLock(run, "run")`` before it
writes anything); what is checked is that the import is refused and the run is left as it was.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sage_loop_helpers import cli_env, run_cli
from sagegen.ledger.lock import DirLock, LockedError, holds
from sagegen.ledger.store import RunStore


class LiveWriter:
    """Another process holding the lock of ``run``, as a running ``generate`` does."""

    def __init__(self, run: Path) -> None:
        code = (
            "import sys; from sagegen.ledger.lock import DirLock; "
            f"lock = DirLock({str(run)!r}, 'run').acquire(); print('locked', flush=True); sys.stdin.read()"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "locked"
        self.pid = self.proc.pid

    def finish(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(10)


@pytest.fixture
def writers() -> Iterator[list[LiveWriter]]:
    started: list[LiveWriter] = []
    yield started
    for w in started:
        w.finish()


def _files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".sagegen.lock"}


def test_import_force_beside_a_live_writer_is_refused_and_deletes_nothing(
    release: Path,
    tmp_path: Path,
    writers: list[LiveWriter],
) -> None:
    run = tmp_path / "run"
    first = run_cli("import", str(release), "--out", str(run), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = _files(run)
    writers.append(LiveWriter(run))  # a generate resuming this run, live

    p = run_cli("import", str(release), "--out", str(run), "--force", cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert f"{run}: this run is being written by another sagegen process (pid {writers[0].pid} " in lines[0]
    assert _files(run) == before  # not one byte of the live run changed

    writers.pop().finish()  # once the writer is gone, --force replaces the run as asked
    again = run_cli("import", str(release), "--out", str(run), "--force", cwd=tmp_path)
    assert again.returncode == 0, again.stderr


def test_import_into_a_folder_a_live_writer_just_took_is_refused(
    release: Path,
    tmp_path: Path,
    writers: list[LiveWriter],
) -> None:
    run = tmp_path / "run"
    writers.append(LiveWriter(run))  # a generate that has taken the lock and not written its ledger yet
    p = run_cli("import", str(release), "--out", str(run), cwd=tmp_path)
    assert p.returncode == 2 and "being written by another sagegen process" in p.stderr
    assert sorted(x.name for x in run.iterdir()) == [".sagegen.lock"]


def test_the_store_takes_the_lock_for_any_writer_and_gives_it_back_on_close(tmp_path: Path) -> None:
    run = tmp_path / "run"
    store, resumed = RunStore.create_or_resume(run, {"x": 1}, "x: 1\n")
    assert not resumed and holds(run)
    with pytest.raises(LockedError):  # a second writer, even in this process, through another lock
        DirLock(run, "eval").acquire()
    store.close()
    assert not holds(run)
    with DirLock(run, "run"):  # what generate does: lock first, then the store writes under it
        store, resumed = RunStore.create_or_resume(run, {"x": 1}, "x: 1\n", force=True)
        store.close()
        assert holds(run)  # the store did not take (or give back) the lock it found held
    assert not resumed
