"""How the retrieval server runs requests' queries: big requests in chunks, small ones merged.

Search-R1's GRPO recipe posts every rollout's query of a turn in one request (512 prompts × 5
rollouts = 2,560 queries). Searched as one call, that request holds the retriever for seconds and
a single-query client (an eval, a second trainer) waits behind it. Each chunk here is a separate
worker-thread call that queues on the server's capacity limiter; anyio's limiter hands the slot
out in arrival order, so a request that arrives meanwhile is served after the current chunk, not
after the whole batch. While nobody waits, a worker thread goes on from chunk to chunk: a thread
round trip per chunk cost a 256-query request a tenth of its time. The chunks run on every slot at
once (one lane per slot, each taking the next chunk), so on an idle server the batch uses every core
(bench/README.md: 16 s against 31 s on one slot at 3M passages).

The opposite case, many clients each sending one query (an eval with 32 workers, rollouts that
post one search each), costs a worker-thread round trip and a retriever call per query. So small
requests are merged: a request that finds a batch still waiting for a slot joins it, and the batch
is searched as one retriever call once it gets the slot. Nothing waits on a timer: an idle server
searches a lone query at once, and batches form only while every slot is busy, which is exactly
when merging pays. A batch takes its place in the limiter's queue when its first query arrives,
so the arrival-order fairness above holds for merged queries too.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import anyio

from sagegen.retrieval.base import Retriever

#: One query's results: Hits from ``Retriever.search``, or the ``(position, score)`` pairs of a
#: retriever's ``search_ids`` when the server reads the passages itself (server_wire.encode_positions).
Rows = list[list[Any]]
#: ``(queries, k) -> one result list per query``: what the Searcher runs in its worker threads.
SearchFn = Callable[[Sequence[str], int], Sequence[Sequence[Any]]]

#: Searches at once when server.max_concurrency is unset and the retriever may be shared by threads.
_AUTO_CAP = 8


def auto_concurrency(retriever: Retriever, configured: int | None) -> int:
    """``configured``, or one slot per CPU (at most 8) for a thread-safe retriever, else 1."""
    if configured is not None:
        return configured
    if getattr(retriever, "thread_safe", False):
        return max(1, min(_AUTO_CAP, os.cpu_count() or 1))
    return 1  # a retriever we know nothing about is not assumed to be thread-safe


def _check(part: Sequence[Any], chunk: Sequence[str]) -> None:
    if len(part) != len(chunk):
        raise RuntimeError(f"retriever returned {len(part)} result lists for {len(chunk)} queries")


class _Batch:
    """Queries of several requests waiting for one slot; ``done`` holds the search's outcome."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.queries: list[str] = []
        self.done: asyncio.Future[Rows] = loop.create_future()


class Searcher:
    """The server's one way to search: chunks for large requests, merged batches for small ones."""

    def __init__(self, search: SearchFn, *, max_concurrency: int, chunk_queries: int) -> None:
        self._search = search
        self.max_concurrency = max_concurrency
        self.chunk_queries = chunk_queries
        self._limiter: anyio.CapacityLimiter | None = None  # made on first use, inside the event loop
        self._forming: dict[int, _Batch] = {}  # topk -> the batch still waiting for a slot
        self._tasks: set[asyncio.Task[None]] = set()  # strong references to running batches
        #: Searches waiting for a slot; read by the worker thread of a chunked request, which gives
        #: its slot up after the current chunk once this is non-zero (a stale read costs one chunk).
        self._waiting = 0

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.max_concurrency)
        return self._limiter

    @contextlib.asynccontextmanager
    async def _slot(self, own: list[int] | None = None) -> AsyncIterator[None]:
        """Hold one of the ``max_concurrency`` slots, counted in ``_waiting`` (and in ``own[0]``, a
        chunked request's own count) until it is ours."""
        self._waiting += 1
        if own is not None:
            own[0] += 1
        try:
            await self.limiter.acquire()
        finally:
            self._waiting -= 1
            if own is not None:
                own[0] -= 1
        try:
            yield
        finally:
            self.limiter.release()

    async def search(self, queries: Sequence[str], k: int) -> Rows:
        if not queries:
            return []
        if len(queries) >= self.chunk_queries:
            return await self._chunked(queries, k)
        batch = self._forming.get(k)
        if batch is None or len(batch.queries) + len(queries) > self.chunk_queries:
            batch = self._forming[k] = _Batch(asyncio.get_running_loop())
            # The batch runs as its own task: a request that goes away (client disconnect) must not
            # take the other requests' queries with it.
            task = asyncio.get_running_loop().create_task(self._run(batch, k))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        start = len(batch.queries)
        batch.queries.extend(queries)
        found = await asyncio.shield(batch.done)
        return found[start : start + len(queries)]

    async def _chunked(self, queries: Sequence[str], k: int) -> Rows:
        """A large request in chunks, on as many slots as the server has (lanes): a GRPO batch uses
        every core when nobody else searches. Each lane takes the next chunk not yet taken; results
        are put back in order, so the answer is the one sequential search gives."""
        size = self.chunk_queries
        chunks = [list(queries[i : i + size]) for i in range(0, len(queries), size)]
        found: list[Rows] = [[] for _ in chunks]
        cursor = itertools.count()  # next() is atomic under the GIL: lanes never take the same chunk
        own = [0]  # this request's lanes waiting for a slot: they must not make each other yield

        async def lane() -> None:
            done = False
            while not done:  # each pass: one slot, one thread, one or more chunks
                async with self._slot(own):
                    done = await anyio.to_thread.run_sync(self._lane, chunks, found, cursor, own, k)

        lanes = [asyncio.ensure_future(lane()) for _ in range(max(1, min(self.max_concurrency, len(chunks))))]
        try:
            await asyncio.gather(*lanes)  # the first failure as it is (not wrapped in a group)
        except BaseException:
            for task in lanes:
                task.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)
            raise
        return [row for part in found for row in part]

    def _lane(
        self, chunks: list[list[str]], found: list[Rows], cursor: Iterator[int], own: list[int], k: int
    ) -> bool:
        """In a worker thread holding a slot: the next chunks, at least one, until none is left
        (True) or until another search waits for a slot (False: the lane then queues again, behind
        it)."""
        while True:
            i = next(cursor)
            if i >= len(chunks):
                return True
            part = self._search(chunks[i], k)
            _check(part, chunks[i])
            found[i] = [list(hits) for hits in part]
            if self._waiting > own[0]:
                return False

    async def _run(self, batch: _Batch, k: int) -> None:
        try:
            async with self._slot():
                if self._forming.get(k) is batch:  # sealed: later arrivals start the next batch
                    del self._forming[k]
                queries = batch.queries
                part = await anyio.to_thread.run_sync(self._search, queries, k)
                _check(part, queries)
            batch.done.set_result([list(hits) for hits in part])
        except BaseException as e:  # every waiter gets the retriever's failure
            if self._forming.get(k) is batch:
                del self._forming[k]
            failure = e if isinstance(e, Exception) else RuntimeError(f"search aborted: {e!r}")
            batch.done.set_exception(failure)
            if not isinstance(e, Exception):
                raise


#: Responses up to this many hits are encoded on the event loop: a worker-thread round trip costs
#: more than the encoding, and the encoder holds the GIL either way. Encoding a local index's hits
#: reads their passages too (about 6.6 us a hit: 5 ms at 768, 18 ms at 2,048), and the loop stalls
#: every other client meanwhile, so larger responses go to a thread.
_INLINE_HITS = 512


async def encode_json(encode: Callable[[], bytes], *, hits: int | None = None) -> bytes:
    """The response body; large ones (2,560 × top-3 passages is megabytes) encoded off the event loop."""
    if hits is not None and hits <= _INLINE_HITS:
        return encode()
    return await anyio.to_thread.run_sync(encode)
