"""Where an agent's search runs (sagegen.retrieval.base.search_async): a retriever that carries a
``pace`` has its quick searches run on the event loop; its first search, a slow one and any
retriever without a pace (HTTP, web, dense: I/O or locks) run in a worker thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from sagegen.config import RetrievalConfig
from sagegen.records import Doc, Hit
from sagegen.retrieval.base import INLINE_SEARCH_S, SearchPace, search_async
from sagegen.retrieval.index import build_index, open_index


class _Timed:
    """A retriever that takes ``delay`` seconds and notes the thread each search ran on."""

    def __init__(self, paced: bool) -> None:
        self.delay = 0.0
        self.threads: list[str] = []
        if paced:
            self.pace = SearchPace()

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        self.threads.append(threading.current_thread().name)
        if self.delay:
            time.sleep(self.delay)
        return [[Hit(doc=Doc(id=q, title=q, text=q), score=1.0)] for q in queries]


def _where(r: _Timed) -> str:
    return "loop" if r.threads[-1] == threading.main_thread().name else "thread"


def test_quick_searches_run_on_the_loop_and_a_slow_one_sends_the_next_back_to_threads() -> None:
    r = _Timed(paced=True)

    async def run() -> list[str]:
        where = []
        for delay in (0.0, 0.0, 0.0, 0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0):
            r.delay = delay
            [[hit]] = await search_async(r, ["q"], 3)
            assert hit.doc.id == "q"
            where.append(_where(r))
        return where

    where = asyncio.run(run())
    assert where[0] == "thread"  # unknown pace: the first search never blocks the loop
    assert where[1:4] == ["loop"] * 3  # quick ones: no hand-off (the 4th is slow, but nobody knew)
    assert where[4] == "thread"  # after a slow search the mean is over the bound
    assert where[-1] == "loop"  # quick ones bring it back under
    assert r.pace.mean_s < INLINE_SEARCH_S


def test_a_retriever_without_a_pace_always_searches_in_a_thread() -> None:
    r = _Timed(paced=False)

    async def run() -> list[str]:
        out = []
        for _ in range(5):
            await search_async(r, ["q"], 3)
            out.append(_where(r))
        return out

    assert asyncio.run(run()) == ["thread"] * 5


def test_a_bm25_index_is_paced_and_its_hits_are_the_same_on_the_loop(tmp_path: Path) -> None:
    docs = [Doc(id=str(i), title=f"T{i}", text=f"word{i % 7} common text number {i}") for i in range(200)]
    build_index(docs, "bm25", RetrievalConfig(), tmp_path / "idx")
    r = open_index(tmp_path / "idx")
    assert isinstance(getattr(r, "pace", None), SearchPace)

    async def run() -> list[list[list[Hit]]]:
        # Enough searches for the moving average to forget a cold first one (page faults, stemmer
        # cache misses), which on a slow machine can take a few ms.
        return [await search_async(r, ["word3 common", "number 17"], 3) for _ in range(16)]

    results = asyncio.run(run())
    assert r.pace.inline  # 200 passages: far below the bound, on any machine
    assert all(res == r.search(["word3 common", "number 17"], 3) for res in results)
