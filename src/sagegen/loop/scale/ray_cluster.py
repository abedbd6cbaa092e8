"""``--ray [ADDRESS]``: pairs over a Ray cluster with Ray Core actors; the ledger stays with the driver.

A remote worker cannot open a SQLite file on another machine, so one *ledger actor*, pinned to the
driver's node, owns the run's ledger and call cache, and serves the todo list. Each *pair worker*
(one actor per worker, one CPU each) builds the run's parts from the config, runs
``Pipeline.run_pair`` with ``concurrency / workers`` pairs in flight, and reaches the ledger through
:class:`StoreProxy`, a stand-in for the ``RunStore`` methods the pipeline calls; its call cache
lookups go through the same actor (:class:`CacheProxy`). Each write is a blocking call, so a
result is in the ledger, committed, before the worker goes on: kill and resume keep their
guarantees. The driver holds the run lock and only reads the results the ledger actor collects.

What each node must have (checked): sagegen installed, and the corpus, the index and any model
files at the same paths as on the driver (a shared filesystem, or a copy at the same path). A
worker runs in the driver's working directory when that directory exists on its node, so relative
paths in the config mean the same there; a worker that reads another corpus than the driver (its
seed passages, in order) stops the run with an error naming its node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import deque
from pathlib import Path
from typing import Any

from sagegen.errors import ConfigError, SagegenError
from sagegen.events import CallsCounted
from sagegen.loop.scale import (
    CountsHook,
    PairResult,
    ResultHook,
    WorkerError,
    corpus_fingerprint,
    reraise,
    share,
)

log = logging.getLogger(__name__)

SAME_PATHS = (
    "every Ray node needs sagegen installed and the corpus, the index and the model files at the "
    "same paths as the driver (docs/generate.md#scaling)"
)
#: Seconds between the driver's reads of the results the ledger actor has collected.
POLL = 0.2


def run_pairs_ray(
    cfg: Any,
    run_dir: Path,
    todo: list[int],
    on_result: ResultHook,
    *,
    session: int | None,
    fingerprint: str | None,
    on_counts: CountsHook | None = None,
) -> None:
    try:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    except ImportError:
        raise ConfigError("pipeline.executor=ray needs Ray: pip install 'sagegen[ray]'") from None

    started = not ray.is_initialized()
    if started:
        address = cfg.pipeline.ray_address or None
        try:
            ray.init(address=address, include_dashboard=False)
        except Exception as e:  # Ray raises ConnectionError, ValueError, RuntimeError... for a bad address
            where = f"the Ray cluster at {address}" if address else "Ray"
            raise ConfigError(f"cannot start or join {where}: {type(e).__name__}: {e}{_AUTH_HINT}") from None
    # Ray's handles are dynamic (``actor.method.remote``): its hints type them only for methods
    # decorated with ``@ray.method``, which would make importing this module import Ray.
    ledger: Any = None
    workers: dict[Any, tuple[int, Any]] = {}  # run() ref -> (worker number, actor)
    try:
        n = worker_count(cfg.pipeline.workers, *_settled_resources(ray, cfg.pipeline.workers), len(todo))
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        cwd = os.getcwd()
        ledger = (
            ray.remote(num_cpus=0)(LedgerActor)
            .options(scheduling_strategy=here)
            .remote(str(run_dir.resolve()), session, todo, cwd)
        )
        Worker: Any = ray.remote(num_cpus=1)(PairWorker)
        per = share(cfg.pipeline.concurrency, n)
        data = cfg.model_dump(mode="json")
        for i in range(n):
            actor = Worker.remote()
            ref = actor.run.remote(
                i, data, cwd, fingerprint, run_dir.name, str(run_dir.resolve()), ledger, per
            )
            workers[ref] = (i, actor)
        _drive(ray, ledger, workers, on_result, on_counts, n)
    finally:
        for _, actor in workers.values():
            ray.kill(actor)
        if ledger is not None:
            with contextlib.suppress(Exception):
                ray.get(ledger.close.remote(), timeout=30)
            ray.kill(ledger)
        if started:
            ray.shutdown()


#: Seconds to wait for the first pair worker to start before saying the cluster cannot place one.
START_TIMEOUT = 120.0
#: Seconds a started worker has, once every pair is done, to record itself and return.
GRACE = 30.0
_AUTH_HINT = (
    "; a cluster started by `ray start` with token authentication (the default since Ray 2.59 on "
    "a head's own machine) needs its token here too: RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (the "
    "output of `ray get-auth-token` on the head), see docs/generate.md#scaling"
)


#: Seconds to wait for CPUs that are being given back (a run that just ended, its actors being killed)
#: before counting the free ones.
SETTLE = 10.0


def _settled_resources(ray: Any, asked: int) -> tuple[dict[str, float], dict[str, float]]:
    """The cluster's resources and its free ones, once the CPUs wanted are free or ``SETTLE`` has passed:
    a job that just ended gives its CPUs back a moment later, and a worker not started for want of one
    would be a worker less for the whole run."""
    deadline = time.monotonic() + SETTLE
    while True:
        total, free = ray.cluster_resources(), ray.available_resources()
        cpus = int(total.get("CPU", 0))
        if int(free.get("CPU", 0)) >= min(asked if asked > 1 else cpus, cpus) or time.monotonic() > deadline:
            return total, free
        time.sleep(0.2)


def worker_count(asked: int, total: dict[str, float], free: dict[str, float], pairs: int) -> int:
    """Pair workers to start: ``--workers`` (default: one per CPU of the cluster), never more than the
    CPUs free now (one each; more would wait for a CPU that no finished worker gives back in time),
    nor than the pairs to run. No free CPU at all is an error that says so."""
    total_cpus, free_cpus = int(total.get("CPU", 0)), int(free.get("CPU", 0))
    if free_cpus < 1:
        raise WorkerError(
            f"the Ray cluster has no free CPU for a pair worker ({total_cpus} CPU(s), all in "
            "use by other jobs); wait for them, or add nodes"
        )
    want = asked if asked > 1 else total_cpus
    n = max(1, min(want, free_cpus, pairs))
    if asked > 1 and asked > free_cpus:
        log.warning(
            "--workers %d: the Ray cluster has %d free CPU(s) of %d; running %d pair workers",
            asked,
            free_cpus,
            total_cpus,
            n,
        )
    return n


def _drive(
    ray: Any,
    ledger: Any,
    workers: dict[Any, tuple[int, Any]],
    on_result: ResultHook,
    on_counts: CountsHook | None,
    n: int,
) -> None:
    """Until every pair is done: pass the results on, give a finished worker's CPU back at once, and
    end (never wait) when nothing is left, when a worker is lost, or when none can start."""
    pending = list(workers)
    deadline = time.monotonic() + START_TIMEOUT
    idle_since = 0.0
    while pending:
        done, pending = ray.wait(pending, num_returns=1, timeout=POLL)
        try:
            results, left, in_flight, started = ray.get(ledger.poll.remote())
        except ray.exceptions.RayError as e:  # the driver's node lost its ledger actor
            raise WorkerError(
                f"the Ray ledger actor was lost ({type(e).__name__}); everything it "
                "committed is in the ledger: rerun the same command to resume"
            ) from None
        for r in results:
            if isinstance(r, PairResult):
                on_result(r)
            elif on_counts is not None:  # a CallsCounted
                on_counts(r)
        for ref in done:
            i, actor = workers[ref]
            try:
                out = ray.get(ref)
            except ray.exceptions.RayError as e:  # the actor's process or node was lost
                raise WorkerError(
                    f"Ray worker {i} was lost ({type(e).__name__}); the pairs it held stay "
                    "unfinished: rerun the same command to resume them"
                ) from None
            ray.kill(actor)  # its CPU goes back now, not at the end of the run
            if out[0] == "fatal":
                raise reraise(out[1], f"Ray worker {i}: {out[2]}")
        if pending and left == 0 and in_flight == 0:
            # Every pair is done. A worker that started is finishing (recording itself in the ledger);
            # one that never started (still waiting for a CPU) has nothing to do: it is not waited for.
            idle_since = idle_since or time.monotonic()
            unstarted = all(workers[ref][0] not in started for ref in pending)
            if unstarted or time.monotonic() - idle_since > GRACE:
                return
        if not started and time.monotonic() > deadline:
            raise WorkerError(
                f"no Ray pair worker started within {START_TIMEOUT:.0f}s ({n} asked, one CPU each; the "
                f"cluster has {ray.available_resources().get('CPU', 0):g} free CPU(s)): is every node "
                "up? rerun the same command to resume"
            )


def _cause(e: BaseException) -> BaseException:
    """The exception raised inside an actor method, without Ray's wrapper (and its remote traceback)."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e


class LedgerActor:
    """Owns the run's ledger and call caches on the driver's node; hands out pairs; collects results."""

    def __init__(self, run_dir: str, session: int | None, todo: list[int], cwd: str):
        from sagegen.loop.scale.worker import SharedStore

        os.chdir(cwd)  # relative cache paths in the config mean what they mean for the driver
        self.store = SharedStore.join(run_dir, session)
        self.todo = deque(todo)
        self.results: list[PairResult | CallsCounted] = []  # in the order they were reported
        self.caches: dict[str, Any] = {}
        self.in_flight = 0  # pairs handed out and not reported yet
        self.started: set[int] = set()  # workers that began to run

    def hello(self, worker: int) -> None:
        self.started.add(worker)

    def take(self) -> int | None:
        if not self.todo:
            return None
        self.in_flight += 1
        return self.todo.popleft()

    def report(self, result: PairResult | CallsCounted) -> None:
        if isinstance(result, PairResult):
            self.in_flight -= 1
        self.results.append(result)

    def poll(self) -> tuple[list[PairResult | CallsCounted], int, int, set[int]]:
        """The results since the last poll, the pairs left to hand out, the pairs handed out and not
        reported yet, and the workers that have started."""
        out, self.results = self.results, []
        return out, len(self.todo), self.in_flight, set(self.started)

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if name.startswith("_") or not callable(getattr(self.store, name, None)):
            raise AttributeError(f"the run store has no method {name!r}")
        return getattr(self.store, name)(*args, **kwargs)

    def cache(self, path: str, op: str, *args: Any) -> Any:
        from sagegen.llm.cache import CallCache

        if path not in self.caches:
            self.caches[path] = CallCache(path)
        return getattr(self.caches[path], op)(*args)

    def close(self) -> None:
        self.store.close()
        for c in self.caches.values():
            c.close()


class StoreProxy:
    """The ``RunStore`` methods a ``Pipeline`` calls, each a blocking call to the ledger actor."""

    def __init__(self, ledger: Any, run_dir: str):
        self._ledger = ledger
        self.run_dir = Path(run_dir)

    def __getattr__(self, name: str) -> Any:
        import ray

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return ray.get(self._ledger.call.remote(name, args, kwargs))
            except ray.exceptions.RayTaskError as e:
                raise _cause(e) from None  # a LedgerError stays a LedgerError

        return call


class CacheProxy:
    """The call cache's ``get``/``put`` for a ``CachedLLM`` on a worker, kept by the ledger actor."""

    def __init__(self, ledger: Any, path: str):
        self.ledger, self.path = ledger, path

    def get(self, key: str) -> Any:
        import ray

        return ray.get(self.ledger.cache.remote(self.path, "get", key))

    def put(self, key: str, name: str, completion: Any) -> None:
        import ray

        ray.get(self.ledger.cache.remote(self.path, "put", key, name, completion))

    def close(self) -> None:
        pass


class PairWorker:
    """One Ray actor running pairs; reports ``("end", pairs)`` or ``("fatal", kind, message)``."""

    def run(
        self,
        n: int,
        cfg_data: dict[str, Any],
        cwd: str,
        fingerprint: str | None,
        run_name: str,
        run_dir: str,
        ledger: Any,
        concurrency: int,
    ) -> tuple[Any, ...]:
        import ray

        from sagegen.config import Config
        from sagegen.llm.cache import CachedLLM
        from sagegen.loop.components import Components
        from sagegen.loop.pipeline import Pipeline
        from sagegen.loop.scale.worker import record_worker, serve

        node = f"{socket.gethostname()} pid {os.getpid()}"
        ray.get(ledger.hello.remote(n))
        if os.path.isdir(cwd):
            os.chdir(cwd)
        parts = None
        try:
            cfg = Config.model_validate(cfg_data)
            try:
                parts = Components.from_config(cfg)
            except SagegenError as e:
                raise ConfigError(f"on {node}: {e}\n{SAME_PATHS}") from None
            if fingerprint is not None and corpus_fingerprint(parts.docs) != fingerprint:
                raise ConfigError(
                    f"on {node}: the corpus read there ({len(parts.docs)} passages) is not the "
                    f"driver's; {SAME_PATHS}"
                )
            for llm in {
                id(x): x
                for x in (parts.generator, parts.solver, parts.judge, *parts.extra_solvers)
                if isinstance(x, CachedLLM)
            }.values():
                local, llm.store = llm.store, CacheProxy(ledger, str(llm.store.path))
                local.close()
            store = StoreProxy(ledger, run_dir)
            # StoreProxy forwards RunStore's methods to the ledger actor by __getattr__, not by type
            pipe = Pipeline(cfg, store, parts, run_name=run_name)  # type: ignore[arg-type]
            ran = 0

            def take() -> int | None:
                return ray.get(ledger.take.remote())

            def send(result: PairResult) -> None:
                nonlocal ran
                ran += 1
                ray.get(ledger.report.remote(result))  # in the driver's next read, never behind it

            def send_counts(counts: CallsCounted) -> None:
                ray.get(ledger.report.remote(counts))

            asyncio.run(serve(pipe, take, send, concurrency, send_counts))
            record_worker(store, n, node, ran, "done")
            return ("end", ran)
        except SagegenError as e:
            return ("fatal", type(e).__name__, str(e))
        except Exception as e:  # a bug: one line here; the Ray worker log has the traceback
            import traceback

            traceback.print_exc()
            return ("fatal", "WorkerError", f"internal error: {type(e).__name__}: {e}")
        finally:
            if parts is not None:
                parts.close()
