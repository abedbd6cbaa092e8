"""One writer per directory: an OS-level exclusive lock on ``<dir>/.sagegen.lock``.

``fcntl.flock`` is held by the open file, so the kernel releases it the moment the holder exits,
however it exits (SIGKILL, OOM, power loss of the process): there is no stale lock to clean up and
no pid file to trust. The file's content (pid, host, since when, command) is only there to tell a
refused second writer who holds the lock. The file is never deleted: unlinking a lock file while
another process waits on it would let two writers lock two different inodes.

Readers (``status``, ``analyze``, ``report``, ``export``) never take the lock; SQLite's WAL lets
them read a consistent snapshot beside the live writer. Every writer of a run folder takes it:
``RunStore.create_or_resume`` takes it unless this process already holds it (``generate`` takes it
first, so that nothing is written before a second writer is refused), so ``import``, ``--force``
and any later command that writes a run cannot delete or overwrite a live one.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from sagegen.errors import SagegenError, scrub

LOCK_FILE = ".sagegen.lock"
#: Directories this process holds the lock of. A second ``flock`` from this same process (another
#: open file) would be refused like a stranger's, so a writer asks here before taking it again.
_HELD: set[Path] = set()


def holds(directory: str | Path) -> bool:
    """Whether this process holds the lock of ``directory``."""
    return Path(directory).resolve() in _HELD


class LockedError(SagegenError):
    """Another live process writes to this directory."""


class DirLock:
    """``with DirLock(path, "run"):`` — exclusive, non-blocking; a second writer is refused at once."""

    def __init__(self, directory: str | Path, what: str = "run"):
        self.directory = Path(directory)
        self.what = what
        self.path = self.directory / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> DirLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockedError(
                f"{self.directory}: this {self.what} is being written by another sagegen process "
                f"({_describe(holder)}); wait for it to finish or stop it, or use another --out "
                f"(status/analyze/report/export can read it meanwhile)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # Shown to a refused second writer: never with a secret of this process or a URL's credentials.
        command = scrub(" ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]))[:300] if sys.argv else ""
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "command": command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        _HELD.add(self.directory.resolve())
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            _HELD.discard(self.directory.resolve())
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> DirLock:
        return self.acquire() if self._fd is None else self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 4096, 0)
        data = json.loads(raw.decode("utf-8", "replace") or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "holder unknown: it has only just started"
    since = holder.get("since")
    when = "?"
    if isinstance(since, (int, float)):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
    who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {when}"
    return f"{who}: {holder['command']}" if holder.get("command") else who
