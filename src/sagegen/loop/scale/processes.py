"""``--workers N``: pairs run in N processes on this machine, all writing the run's own ledger.

Each worker is a fresh interpreter (``spawn``: nothing of the parent's threads, open databases or
event loop is copied) that builds the run's parts from its config, opens the ledger and the call
cache (both SQLite in WAL mode, so writers queue on the busy timeout instead of failing) and takes
pair indices one at a time from a counter shared with its siblings. The parent keeps the run lock
and the session, counts the results the workers send over a pipe, and draws the progress.

A worker never outlives its parent: on Linux the kernel kills it when the parent dies
(``PR_SET_PDEATHSIG``), and everywhere a thread watching a pipe from the parent exits it at the
pipe's end of file; so a parent killed with SIGKILL leaves no writer behind, and the rerun, taking
the lock, is the only one. Ctrl-C reaches the parent, which stops the workers with SIGTERM: each
cancels its pairs in flight (every ledger write is one transaction) and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from sagegen.errors import SagegenError
from sagegen.events import CallsCounted
from sagegen.loop.scale import CountsHook, PairResult, ResultHook, WorkerError, reraise, share

#: Seconds a stopped worker gets to cancel its pairs and close its files before it is killed.
STOP_GRACE = 30.0


@dataclass
class _Worker:
    n: int
    process: Any
    results: Connection  # the parent's end of the pipe the worker reports on
    alive: Any  # the parent's end of the pipe whose closing tells the worker the parent is gone
    ended: bool = False


def run_pairs_local(
    cfg: Any,
    run_dir: Path,
    todo: list[int],
    on_result: ResultHook,
    *,
    session: int | None,
    on_counts: CountsHook | None = None,
) -> None:
    """Run ``todo`` in ``pipeline.workers`` processes; returns once every pair was run or raises."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    n = max(1, min(cfg.pipeline.workers, len(todo)))
    ctx = mp.get_context("spawn")
    counter = ctx.Value("q", 0)
    args = (
        cfg.model_dump(mode="json"),
        str(run_dir),
        run_dir.name,
        session,
        todo,
        counter,
        share(cfg.pipeline.concurrency, n),
        os.getpid(),
    )
    workers: list[_Worker] = []
    try:
        for i in range(n):
            res_r, res_w = ctx.Pipe(duplex=False)
            alive_r, alive_w = ctx.Pipe(duplex=False)
            p = ctx.Process(
                target=_child, args=(i, *args, res_w, alive_r), name=f"sagegen-worker-{i}", daemon=True
            )
            p.start()
            res_w.close()
            alive_r.close()
            workers.append(_Worker(i, p, res_r, alive_w))
        reading = {w.results: w for w in workers}
        while reading:
            ready = wait(list(reading))
            for conn, w in [(c, w) for c, w in reading.items() if c in ready]:
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    del reading[conn]
                    continue
                if isinstance(msg, PairResult):
                    on_result(msg)
                elif isinstance(msg, CallsCounted):
                    if on_counts is not None:
                        on_counts(msg)
                elif msg[0] == "fatal":
                    raise reraise(msg[1], f"worker {w.n}: {msg[2]}")
                else:  # "end"
                    w.ended = True
        for w in workers:
            w.process.join()
        for w in workers:
            if not w.ended:
                raise WorkerError(
                    f"worker {w.n} (pid {w.process.pid}) died ({_how(w.process.exitcode)}); the pairs it "
                    "held stay unfinished: rerun the same command to resume them"
                )
    finally:
        _stop(workers)


def _how(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _stop(workers: list[_Worker]) -> None:
    """SIGTERM the workers still running, give them STOP_GRACE seconds, then SIGKILL; close the pipes."""
    for w in workers:
        if w.process.is_alive():
            w.process.terminate()
    for w in workers:
        w.process.join(STOP_GRACE)
        if w.process.is_alive():
            w.process.kill()
            w.process.join()
        w.results.close()
        w.alive.close()


# ---------------------------------------------------------------------------- in the worker


def _tie_to_parent(alive: Any, parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the tie was made
        os._exit(1)

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            alive.recv()
        os._exit(1)

    threading.Thread(target=watch, name="sagegen-parent-watch", daemon=True).start()


def _child(
    n: int,
    cfg_data: dict[str, Any],
    run_dir: str,
    run_name: str,
    session: int | None,
    todo: list[int],
    counter: Any,
    concurrency: int,
    parent_pid: int,
    results: Any,
    alive: Any,
) -> None:
    _tie_to_parent(alive, parent_pid)
    # Ctrl-C at a terminal reaches the whole process group: the parent alone decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from sagegen.config import Config
    from sagegen.loop.components import Components
    from sagegen.loop.pipeline import Pipeline
    from sagegen.loop.scale.worker import SharedStore, record_worker

    def take() -> int | None:
        with counter.get_lock():
            i = counter.value
            if i >= len(todo):
                return None
            counter.value = i + 1
        return todo[i]

    parts = store = None
    try:
        cfg = Config.model_validate(cfg_data)
        parts = Components.from_config(cfg)
        store = SharedStore.join(run_dir, session)
        pipe = Pipeline(cfg, store, parts, run_name=run_name)
        ran, status = asyncio.run(_main(pipe, take, results.send, concurrency))
        record_worker(store, n, f"pid {os.getpid()}", ran, status)
        _send(results, ("end",))
    except SagegenError as e:
        _send(results, ("fatal", type(e).__name__, str(e)))
    except BaseException as e:  # a bug: say what it was in one line (SAGEGEN_DEBUG=1 prints the traceback)
        if os.environ.get("SAGEGEN_DEBUG", "") not in ("", "0"):
            import traceback

            traceback.print_exc()
        _send(results, ("fatal", "WorkerError", f"internal error: {type(e).__name__}: {e}"))
    finally:
        if store is not None:
            store.close()
        if parts is not None:
            parts.close()


def _send(results: Any, msg: tuple[str, ...]) -> None:
    with contextlib.suppress(OSError):  # the parent is gone: nobody is left to tell
        results.send(msg)


async def _main(pipe: Any, take: Any, send: Any, concurrency: int) -> tuple[int, str]:
    from sagegen.loop.scale.worker import serve

    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    ran = 0

    def counted(result: Any) -> None:
        nonlocal ran
        ran += 1
        send(result)

    try:
        await serve(pipe, take, counted, concurrency, send)
        return ran, "done"
    except asyncio.CancelledError:  # stopped by the parent (SIGTERM): the pairs in flight stay unfinished
        return ran, "stopped"
