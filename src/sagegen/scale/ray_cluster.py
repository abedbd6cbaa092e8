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
import os
import socket
from collections import deque
from pathlib import Path
from typing import Any

from sagegen.errors import ConfigError, SagegenError
from sagegen.events import CallsCounted
from sagegen.scale import (
    CountsHook,
    PairResult,
    ResultHook,
    WorkerError,
    corpus_fingerprint,
    reraise,
    share,
)

SAME_PATHS = ("every Ray node needs sagegen installed and the corpus, the index and the model files at the "
              "same paths as the driver (README: Scaling)")
#: Seconds between the driver's reads of the results the ledger actor has collected.
POLL = 0.2


def run_pairs_ray(cfg: Any, run_dir: Path, todo: list[int], on_result: ResultHook, *,
                  session: int | None, fingerprint: str | None, on_counts: CountsHook | None = None) -> None:
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
            raise ConfigError(f"cannot start or join {where}: {type(e).__name__}: {e}") from None
    ledger = workers = None
    try:
        n = cfg.pipeline.workers if cfg.pipeline.workers > 1 else int(ray.cluster_resources().get("CPU", 1))
        n = max(1, min(n, len(todo)))
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        cwd = os.getcwd()
        ledger = ray.remote(num_cpus=0)(LedgerActor).options(scheduling_strategy=here).remote(
            str(run_dir.resolve()), session, todo, cwd)
        Worker = ray.remote(num_cpus=1)(PairWorker)
        workers = [Worker.remote() for _ in range(n)]
        per = share(cfg.pipeline.concurrency, n)
        data = cfg.model_dump(mode="json")
        refs = {w.run.remote(i, data, cwd, fingerprint, run_dir.name, str(run_dir.resolve()), ledger, per): i
                for i, w in enumerate(workers)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=POLL)
            for r in ray.get(ledger.drain.remote()):
                if isinstance(r, PairResult):
                    on_result(r)
                elif on_counts is not None:  # a CallsCounted
                    on_counts(r)
            for ref in done:
                try:
                    out = ray.get(ref)
                except ray.exceptions.RayError as e:  # the actor's process or node was lost
                    raise WorkerError(
                        f"Ray worker {refs[ref]} was lost ({type(e).__name__}); the pairs it held stay "
                        "unfinished: rerun the same command to resume them") from None
                if out[0] == "fatal":
                    raise reraise(out[1], f"Ray worker {refs[ref]}: {out[2]}")
    finally:
        for w in workers or ():
            ray.kill(w)
        if ledger is not None:
            with contextlib.suppress(Exception):
                ray.get(ledger.close.remote(), timeout=30)
            ray.kill(ledger)
        if started:
            ray.shutdown()


def _cause(e: BaseException) -> BaseException:
    """The exception raised inside an actor method, without Ray's wrapper (and its remote traceback)."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e


class LedgerActor:
    """Owns the run's ledger and call caches on the driver's node; hands out pairs; collects results."""

    def __init__(self, run_dir: str, session: int | None, todo: list[int], cwd: str):
        from sagegen.scale.worker import SharedStore

        os.chdir(cwd)  # relative cache paths in the config mean what they mean for the driver
        self.store = SharedStore.join(run_dir, session)
        self.todo = deque(todo)
        self.results: list[PairResult | CallsCounted] = []  # in the order they were reported
        self.caches: dict[str, Any] = {}

    def take(self) -> int | None:
        return self.todo.popleft() if self.todo else None

    def report(self, result: PairResult | CallsCounted) -> None:
        self.results.append(result)

    def drain(self) -> list[PairResult | CallsCounted]:
        out, self.results = self.results, []
        return out

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

    def run(self, n: int, cfg_data: dict[str, Any], cwd: str, fingerprint: str | None, run_name: str,
            run_dir: str, ledger: Any, concurrency: int) -> tuple[Any, ...]:
        import ray

        from sagegen.components import Components
        from sagegen.config import Config
        from sagegen.llm.cache import CachedLLM
        from sagegen.pipeline import Pipeline
        from sagegen.scale.worker import record_worker, serve

        node = f"{socket.gethostname()} pid {os.getpid()}"
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
                raise ConfigError(f"on {node}: the corpus read there ({len(parts.docs)} passages) is not the "
                                  f"driver's; {SAME_PATHS}")
            for llm in {id(x): x for x in (parts.generator, parts.solver, parts.judge, *parts.extra_solvers)
                        if isinstance(x, CachedLLM)}.values():
                local, llm.store = llm.store, CacheProxy(ledger, str(llm.store.path))
                local.close()
            store = StoreProxy(ledger, run_dir)
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
