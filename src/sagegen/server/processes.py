"""``sagegen serve --workers N``: the retrieval server in N processes sharing one listening socket.

One process answers on one core at most: BM25 scoring holds the GIL, and so does the HTTP and JSON
work around it. A GRPO rollout step sends thousands of queries at once, so past one core the server
runs as N processes. The parent binds the socket (so the printed URL is connectable at once, and the
bind and API-key checks fail before anything starts), then spawns N workers that inherit it; the
kernel hands each new connection to one of them. Each worker opens the index itself: a BM25 index is
memory-mapped, so N workers share one copy of it in the page cache (a dense index's encoder is
loaded once per worker). Workers are spawned, never forked, so no thread or lock of the parent (a
BLAS pool, an encoder) is copied half-held into a child. A worker says it serves by one byte on a pipe
of its own, not by a ``multiprocessing.Event``: an Event is five named POSIX semaphores, which a
parent that ends by its own SIGTERM (below) never unlinks, and the resource tracker then warns of
them as leaked.

Supervision: a worker that exits after it was serving is started again; one that exits before it
was serving (a broken index, an import error) stops the server with an error, and so do more than
``MAX_RESTARTS`` restarts within ``RESTART_WINDOW_S`` (a worker that keeps dying).
Ctrl-C or SIGTERM to the parent stops every worker gracefully (in-flight requests are answered);
a worker whose parent is gone (``kill -9``) stops by itself within a second.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from sagegen.config import Config
from sagegen.errors import SagegenError

log = logging.getLogger(__name__)

#: More restarts than this within the window stop the server: something kills every worker.
#: (docs/server.md, "Past one core", states these two numbers.)
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
#: How often a worker checks that its parent is still alive.
PARENT_CHECK_S = 1.0


def _worker(sock: socket.socket, cfg: Config, index: str | None, parent: int, ready: Connection) -> None:
    """One worker process: open the retriever, serve on the inherited socket until told to stop;
    one byte goes on ``ready`` once it serves."""
    try:
        _serve_worker(sock, cfg, index, parent, ready)
    except KeyboardInterrupt:  # Ctrl-C reaches every process of the group, even one still opening its index
        pass
    except (SagegenError, OSError) as e:  # a damaged index: one line, as the CLI's main() says it
        from sagegen.errors import scrub
        from sagegen.ledger.damage import os_error

        err = os_error(e) if isinstance(e, OSError) else e
        print(f"error: {scrub(str(err))}", file=sys.stderr, flush=True)
        sys.exit(2)  # the parent then stops the server: this worker never served


def _serve_worker(
    sock: socket.socket, cfg: Config, index: str | None, parent: int, ready: Connection
) -> None:
    from sagegen.retrieval.factory import build_retriever, open_index
    from sagegen.server.app import create_app
    from sagegen.server.guard import resolve_api_key
    from sagegen.server.run import PreparedServer

    retriever = open_index(index, cfg.retrieval) if index is not None else build_retriever(cfg)
    app = create_app(retriever, cfg.server, api_key=resolve_api_key(cfg.server))
    server = PreparedServer(app, sock, cfg.server)

    def watch() -> None:
        told = False
        while os.getppid() == parent:
            if not told and server.server.started:
                ready.send_bytes(b"1")
                ready.close()
                told = True
            time.sleep(PARENT_CHECK_S if told else 0.05)
        server.stop()  # the parent was killed: nobody would ever stop this worker

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    server.run()


class _Stop(Exception):
    pass


class _Proc:
    """A worker process and the parent's end of its "serving" pipe."""

    def __init__(self, ctx: Any, sock: socket.socket, cfg: Config, index: str | None) -> None:
        self._ready, tell = ctx.Pipe(duplex=False)
        self.process = ctx.Process(
            target=_worker, args=(sock, cfg, index, os.getpid(), tell), name="sagegen-serve", daemon=False
        )
        self.process.start()
        tell.close()  # the worker holds the only write end: its death reads as EOF here
        self.serving = False

    def ready(self) -> bool:
        """Whether the worker said it serves (read without waiting; remembered once true)."""
        if not self.serving and not self._ready.closed and self._ready.poll():
            with contextlib.suppress(EOFError, OSError):  # EOF: it exited without saying so
                self.serving = self._ready.recv_bytes() == b"1"
            self._ready.close()
        return self.serving


def serve_processes(
    sock: socket.socket,
    cfg: Config,
    index: str | Path | None,
    workers: int,
    *,
    on_ready: Callable[[str], None] | None = None,
    url: str = "",
) -> None:
    """Run ``workers`` server processes on ``sock`` until Ctrl-C / SIGTERM; restart one that exits.
    ``on_ready(url)`` runs once all of them serve."""
    ctx = mp.get_context("spawn")
    where = None if index is None else str(index)
    procs: list[_Proc] = []
    restarts: list[float] = []

    def start() -> _Proc:
        return _Proc(ctx, sock, cfg, where)

    def on_term(signum: int, frame: Any) -> None:
        raise _Stop

    old_term = signal.signal(signal.SIGTERM, on_term)
    try:
        procs = [start() for _ in range(workers)]
        announced = on_ready is None
        while True:
            if on_ready is not None and not announced and all([w.ready() for w in procs]):
                on_ready(url)  # once every worker serves: the URL is then true
                announced = True
            for i, w in enumerate(procs):
                p = w.process
                p.join(timeout=0.2 / len(procs))
                if p.exitcode is None:
                    continue
                if not w.ready():
                    raise SagegenError(
                        f"retrieval server worker {i + 1}/{workers} exited with code "
                        f"{p.exitcode} before it was serving (its error is above); stopping"
                    )
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < RESTART_WINDOW_S] + [now]
                if len(restarts) > MAX_RESTARTS:
                    raise SagegenError(
                        f"retrieval server workers exited {len(restarts)} times within "
                        f"{RESTART_WINDOW_S:.0f}s (the last with code {p.exitcode}); stopping"
                    )
                log.warning(
                    "retrieval server worker %d/%d exited (code %s); starting it again",
                    i + 1,
                    workers,
                    p.exitcode,
                )
                procs[i] = start()
    except _Stop:
        _stop_all([w.process for w in procs])
        sock.close()
        # As a single server does: exit by the signal itself once every worker has finished.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        _stop_all([w.process for w in procs])  # Ctrl-C (re-raised: "interrupted", exit 130), an error
        sock.close()


def _stop_all(procs: list[Any], grace: float = 8.0) -> None:
    """SIGTERM (uvicorn's graceful stop: in-flight requests are answered; unlike a second SIGINT after
    the terminal's Ctrl-C, it never turns into a forced one), then SIGKILL what is left."""
    for p in procs:
        if p.exitcode is None:
            p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
        if p.exitcode is None:
            p.kill()
            p.join(timeout=2)
