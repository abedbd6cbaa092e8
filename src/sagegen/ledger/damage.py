"""Damaged or unwritable state, said in one line: which file, what is wrong, what to do.

SQLite and the OS report such problems as exceptions deep inside whatever was reading or writing
(``file is not a database``, ``no such column``, ``attempt to write a readonly database``,
``database or disk is full``, ``OSError: [Errno 30]``). These helpers turn them into a
``SagegenError`` the CLI prints without a traceback (``--debug`` or ``SAGEGEN_DEBUG=1`` shows it).
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path

from sagegen.errors import SagegenError


class LedgerError(SagegenError):
    """A run ledger that cannot be read or written as it is."""


def keep_or_force(ledger: str | Path) -> str:
    """What to do with a run whose ledger nothing can repair: keep what can be kept, and advise
    ``--force`` only where nothing can, naming what it deletes."""
    from sagegen.ledger.outcomes import OUTPUT_FILES

    run = Path(ledger).parent
    kept = [(name, n) for name in OUTPUT_FILES.values() if (n := _lines(run / name))]
    if kept:
        listing = ", ".join(f"{name} ({n} pair{'s' if n != 1 else ''})" for name, n in kept)
        return (
            f"its finished pairs are kept in {listing}: move the run directory aside to keep them, "
            "then rerun (a new run starts there)"
        )
    return (
        "no finished pair is kept outside it: pass --force to start over (it deletes this ledger and "
        "the unfinished pairs in it)"
    )


def _lines(path: Path) -> int:
    """Non-empty lines of a JSONL file; 0 when it is missing or unreadable."""
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return 0


#: What to do about a damaged LLM call cache, the one SQLite file sagegen keeps besides run ledgers.
CACHE_ADVICE = "delete it and rerun (the call cache only saves paying twice for a call; no result is lost)"


def ledger_error(path: str | Path, exc: sqlite3.Error, *, if_damaged: str | None = None) -> LedgerError:
    """The one-line explanation of a SQLite error on the database at ``path``: a run ledger (what to
    do when it is damaged: keep_or_force) or the LLM call cache (CACHE_ADVICE); ``if_damaged``
    overrides that advice."""

    def advice() -> str:  # only where it is said: keep_or_force reads the run's JSONL files
        if if_damaged is not None:
            return if_damaged
        return keep_or_force(path) if Path(path).name == "ledger.sqlite" else CACHE_ADVICE

    text = str(exc)
    low = text.lower()
    if "disk is full" in low or ("disk i/o error" in low and _nearly_full(path)):
        # SQLITE_FULL says so; a WAL or its index that cannot grow on a full disk is a bare SQLITE_IOERR.
        what = "the disk is full; free some space and rerun the same command (nothing finished is lost)"
    elif "disk i/o error" in low:
        what = (
            "the disk reported an I/O error; check the device (dmesg), then rerun the same command; "
            f"if it persists, {advice()}"
        )
    elif "readonly" in low or "read-only" in low or ("unable to open" in low and _read_only(path)):
        what = (
            "cannot write here (read-only file or directory); copy the run to a writable place and "
            "rerun there, or use another --out"
        )
    elif "unable to open" in low:
        what = "cannot open it (missing directory or no permission); check the path and its permissions"
    elif "locked" in low:
        what = "another process holds it locked; wait for it to finish"
    elif "no such column" in low or "no such table" in low or "has no column" in low:
        what = (
            f"its tables do not match this sagegen's ({text}); it was written by another version or "
            f"altered: {advice()}"
        )
    else:  # not a database, malformed, truncated
        what = f"damaged ({text}): {advice()}"
    return LedgerError(f"{path}: {what}")


def _existing_dir(path: str | Path) -> Path:
    """``path``'s folder, or the nearest folder above it that exists."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p if p.is_dir() else p.parent


def _nearly_full(path: str | Path, margin: int = 64 << 10) -> bool:
    """Less than ``margin`` bytes free where ``path`` lives."""
    try:
        return shutil.disk_usage(_existing_dir(path)).free < margin
    except OSError:
        return False


def _read_only(path: str | Path) -> bool:
    """``path`` lives on a file system mounted read-only (SQLite then says only "unable to open")."""
    try:
        return bool(os.statvfs(_existing_dir(path)).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def os_error(exc: OSError) -> SagegenError:
    """The one-line explanation of an OS error while reading or writing a file."""
    where = exc.filename or "a file"
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return SagegenError(f"{where}: the disk is full; free some space and rerun the same command")
    if exc.errno == errno.EROFS:
        return SagegenError(
            f"{where}: cannot write (read-only file system); copy the run to a writable "
            "place and rerun there, or use another --out"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return SagegenError(
            f"{where}: cannot write (permission denied); fix the permissions, or copy the "
            "run to a writable place and rerun there"
        )
    return SagegenError(f"{where}: {exc.strerror or exc}")
