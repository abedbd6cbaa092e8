"""The Retriever protocol (batched search returning ranked hits per query), and where an agent's
search runs: :func:`search_async`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from sagegen.records import Hit

#: A search whose recent runs took less than this (wall seconds, moving average) runs on the event
#: loop, not in a worker thread. The hand-off to a thread and back costs two wake-ups, each paid
#: cold after an idle gap (at 1 LLM call in flight, this and the ledger's sparse-call commit together
#: took the CPU per call from 2.6 to 2.0 ms), and a search this short blocks the loop for less than
#: one LLM response's parsing.
INLINE_SEARCH_S = 0.002


@runtime_checkable
class Retriever(Protocol):
    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        """Top-``k`` hits for each query, best first; one list per query, in order."""
        ...


class SearchPace:
    """How long a retriever's searches take lately: a retriever that only computes in this process
    (no I/O, no lock another thread may hold) carries one as ``pace`` to let quick searches run on
    the event loop. Unknown (infinite) until its first search, which therefore runs in a thread."""

    def __init__(self) -> None:
        self.mean_s = float("inf")

    def observe(self, seconds: float) -> None:
        # A moving average: one slow query (a common word on a large index) sends the next searches
        # back to threads until quick ones bring the mean down again.
        self.mean_s = seconds if self.mean_s == float("inf") else 0.8 * self.mean_s + 0.2 * seconds

    @property
    def inline(self) -> bool:
        return self.mean_s < INLINE_SEARCH_S


async def search_async(retriever: Retriever, queries: Sequence[str], k: int) -> list[list[Hit]]:
    """``retriever.search`` without holding up the event loop: in a worker thread (retrievers are
    synchronous: BM25, FAISS, HTTP), or on the loop itself where the retriever's ``pace`` says its
    searches are quicker than the hand-off."""
    pace: SearchPace | None = getattr(retriever, "pace", None)
    if pace is None:
        return await asyncio.to_thread(retriever.search, queries, k)

    def timed() -> list[list[Hit]]:
        t0 = time.perf_counter()
        try:
            return retriever.search(queries, k)
        finally:
            pace.observe(time.perf_counter() - t0)

    return timed() if pace.inline else await asyncio.to_thread(timed)
