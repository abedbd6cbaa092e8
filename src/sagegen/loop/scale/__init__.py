"""Pairs beyond one asyncio loop: N processes on this machine (``--workers N``) or a Ray cluster (``--ray``).

One asyncio process drives at most one core (docs/design.md §2.8). Both executors keep the run's
guarantees as one process has them:

- the parent process (the driver, for Ray) holds the run lock (sagegen.ledger.lock) and the session;
  workers never take the lock, they write the run's ledger under it;
- every result lands in the ledger as it is produced: a local worker opens the SQLite ledger
  itself (WAL, busy timeout, one ``BEGIN IMMEDIATE`` transaction per write) and the call cache;
  a Ray worker, which may sit on another machine, calls a ledger actor on the driver's node that
  owns both files (:mod:`sagegen.loop.scale.ray_cluster`);
- a pair is handed to one worker at a time from the todo list; a pair a worker held when it died
  stays unfinished, and the next run resumes it, its completed calls answered by the call cache;
- pairs are seeded per index (sagegen.loop.pipeline), so the dataset does not depend on which worker
  ran which pair, nor on their order.

The seam is :func:`run_pairs`; :func:`run_spread` is how ``sagegen generate`` uses it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sagegen.errors import ConfigError, SagegenError

if TYPE_CHECKING:
    from sagegen.config import Config
    from sagegen.events import CallsCounted
    from sagegen.loop.pipeline import Pipeline, Stats
    from sagegen.records import Doc


@dataclass(frozen=True)
class PairResult:
    """What a worker reports when it is done with a pair: its final state, or the error that left it
    unfinished; and the LLM calls the worker made since its previous report (for the live counts)."""

    idx: int
    label: str | None
    error: str = ""
    calls: int = 0
    cached: int = 0
    tokens: int = 0


#: Seconds between a worker's reports of the calls it made meanwhile (``events.CallsCounted``, one
#: small message each, whatever the calls in flight): the parent's live counts move with the calls.
COUNTS_EVERY = 0.5

ResultHook = Callable[[PairResult], None]
CountsHook = Callable[["CallsCounted"], None]


class WorkerError(SagegenError):
    """A worker process stopped with an error; the pairs it held stay unfinished for the next run."""


def share(concurrency: int, workers: int) -> int:
    """Calls in flight per worker: the run's ``concurrency`` split over its workers (at least one)."""
    return max(1, math.ceil(concurrency / workers))


def corpus_fingerprint(docs: Sequence[Doc]) -> str:
    """Identifies the seed passages in order: a worker that sees another corpus would draw other pairs."""
    h = hashlib.sha256(str(len(docs)).encode())
    for d in docs:
        h.update(b"\0" + d.id.encode("utf-8"))
    return h.hexdigest()[:16]


def run_pairs(
    cfg: Config,
    run_dir: str | Path,
    todo: list[int],
    on_result: ResultHook,
    *,
    session: int | None = None,
    docs: Sequence[Doc] | None = None,
    on_counts: CountsHook | None = None,
) -> None:
    """Run the pairs ``todo`` of the run at ``run_dir`` (opened, locked and in ``session`` by the caller)
    on the configured executor; ``on_result`` sees each pair as it finishes, in this process, and
    ``on_counts`` the calls made meanwhile (those not yet in a ``PairResult``) as they are reported.

    ``on_result`` may raise to stop the run: the workers are stopped and the error goes on up.
    ``docs`` (the caller's corpus) lets Ray workers check that they see the same one.
    """
    if cfg.pipeline.executor == "ray":
        from sagegen.loop.scale.ray_cluster import run_pairs_ray

        run_pairs_ray(
            cfg,
            Path(run_dir),
            todo,
            on_result,
            session=session,
            fingerprint=corpus_fingerprint(docs) if docs is not None else None,
            on_counts=on_counts,
        )
    else:
        from sagegen.loop.scale.processes import run_pairs_local

        run_pairs_local(cfg, Path(run_dir), todo, on_result, session=session, on_counts=on_counts)


def run_spread(pipe: Pipeline) -> Stats:
    """``Pipeline.run`` for ``pipeline.workers > 1`` or ``pipeline.executor: ray``: the same todo list,
    events and stop rule (``pipeline.FailureStreak``), with the pairs run by workers and their results
    turned into this process's events as they arrive."""
    from sagegen.events import CallsCounted, PairFailed, PairStarted
    from sagegen.loop.pipeline import FailureStreak

    stats, store = pipe.stats, pipe.store
    todo = pipe.todo()
    pipe.emit(pipe.run_started())
    streak = FailureStreak(pipe.pcfg.concurrency)

    def on_result(r: PairResult) -> None:
        if r.calls:
            pipe.emit(CallsCounted(r.calls, r.cached, r.tokens))
        pipe.emit(PairStarted(r.idx))  # a worker says nothing at the start: the display counts it here
        if r.label is not None:
            pipe.emit(pipe.finished(r.idx, r.label))
            streak.ok()
        else:
            pipe.emit(PairFailed(r.idx, r.error))
            streak.failed()
        if streak.stopped:
            raise streak.error(stats.last_error)

    if todo:
        run_pairs(
            pipe.cfg,
            store.run_dir,
            todo,
            on_result,
            session=store.session_id,
            docs=pipe.parts.docs,
            on_counts=pipe.emit,
        )
    # Workers appended their lines as they finished; rewrite the files in the ledger's finishing order,
    # the order one process writes them in.
    store.rebuild_outputs()
    return stats


def reraise(kind: str, message: str) -> SagegenError:
    """A worker's error rebuilt in this process with its kind kept (a ledger error stays one)."""
    from sagegen.ledger.damage import LedgerError

    kinds: dict[str, type[SagegenError]] = {"LedgerError": LedgerError, "ConfigError": ConfigError}
    return kinds.get(kind, WorkerError)(message)


__all__ = [
    "COUNTS_EVERY",
    "CountsHook",
    "PairResult",
    "ResultHook",
    "WorkerError",
    "run_pairs",
    "run_spread",
    "share",
]
