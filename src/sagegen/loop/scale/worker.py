"""What every worker runs, whatever carries it (a local process, a Ray actor): pairs from the todo list
through ``Pipeline.run_pair``, with ``concurrency`` in flight, each reported as soon as it is done."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sagegen.errors import SagegenError
from sagegen.events import CallsCounted
from sagegen.ledger.damage import LedgerError
from sagegen.ledger.store import RunStore
from sagegen.loop.pipeline import run_lanes
from sagegen.loop.scale import COUNTS_EVERY, PairResult


class SharedStore(RunStore):
    """The run's ledger opened by a worker beside other writers, under the lock its parent holds."""

    def append_output(self, key: str, qa: Any) -> None:
        # Several processes append to one file: one O_APPEND write of the whole line cannot interleave
        # with another's (a buffered text write of a long line may be split into several).
        from sagegen.ledger.store import OUTPUT_FILES

        fd = os.open(self.run_dir / OUTPUT_FILES[key], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (qa.to_json() + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    @classmethod
    def join(cls, run_dir: str | Path, session: int | None) -> SharedStore:
        store = cls.open(run_dir, readonly=False)
        if session is None:  # the session the lock holder began (the newest one still running)
            row = store.conn.execute("SELECT MAX(id) FROM sessions WHERE status='running'").fetchone()
            session = row[0] if row else None
        store.session_id = session
        return store


async def serve(
    pipe: Any,
    take: Callable[[], int | None],
    send: Callable[[PairResult], None],
    concurrency: int,
    send_counts: Callable[[CallsCounted], None] | None = None,
) -> None:
    """Run pairs from ``take()`` (None: no more) until none is left; ``send`` each result, with the calls
    made since the last report; ``send_counts`` gets those calls every ``COUNTS_EVERY`` seconds meanwhile.

    An LLM or retrieval failure leaves its pair unfinished (recorded as a ``pair_error`` event, as one
    process does) and is reported; a ledger that cannot be written stops the worker.
    """
    sent = [0, 0, 0]

    def since_last() -> tuple[int, int, int]:
        now = pipe.calls_made()
        delta = (now[0] - sent[0], now[1] - sent[1], now[2] - sent[2])
        sent[:] = now
        return delta

    async def lane() -> None:
        while (idx := take()) is not None:
            try:
                label: str | None = await pipe.run_pair(idx)
                error = ""
            except LedgerError:
                raise
            except SagegenError as e:
                label, error = None, f"{type(e).__name__}: {e}"
                pipe.store.event("pair_error", error, idx)
            send(PairResult(idx, label, error, *since_last()))

    async def tick() -> None:
        assert send_counts is not None
        while True:
            await asyncio.sleep(COUNTS_EVERY)
            delta = since_last()
            if any(delta):
                send_counts(CallsCounted(*delta))

    ticker = asyncio.ensure_future(tick()) if send_counts is not None else None
    try:
        await run_lanes(concurrency, lane)
    finally:
        if ticker is not None:
            ticker.cancel()  # the last calls went out with the last PairResult


def record_worker(store: Any, worker: int, where: str, pairs: int, status: str) -> None:
    """A ``worker`` event in the ledger: which process ran how many pairs of this session."""
    store.event("worker", json.dumps({"worker": worker, "where": where, "pairs": pairs, "status": status}))
