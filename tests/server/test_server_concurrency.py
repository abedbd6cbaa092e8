"""Concurrent searches: our retrievers shared by threads, and many clients of one server on a real socket.

Every concurrent answer must equal the sequential one; small requests that arrive while the slots
are busy are merged into one retriever call; the slot count follows ``server.max_concurrency``
(or the machine, for retrievers that declare themselves thread-safe).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from sagegen.config import ServerConfig, load_config
from sagegen.records import Hit
from sagegen.retrieval.factory import ensure_index, open_index
from sagegen.server import create_app, running_server
from sagegen.server.batching import auto_concurrency


@pytest.fixture(scope="module")
def index(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = shared_data / "hotpotqa" / "corpus.jsonl"
    where = tmp_path_factory.mktemp("idx")
    cfg = load_config(None, [f"corpus.path={corpus}", f"retrieval.index_dir={where}"])
    return ensure_index(cfg).path


@pytest.fixture(scope="module")
def queries(shared_data: Path) -> list[str]:
    lines = [
        line
        for name in ("hotpotqa", "musique")
        for line in (shared_data / name / "questions.jsonl").read_text().splitlines()
    ]
    return [json.loads(line)["question"] for line in lines][:160]


def ranked(hits: Sequence[Hit]) -> list[tuple[str, float]]:
    return [(h.doc.id, h.score) for h in hits]


def test_bm25_shared_by_threads_answers_as_sequential_calls(index: Path, queries: list[str]) -> None:
    reference = [ranked(h) for h in open_index(index).search(queries, 5)]
    # A fresh retriever: its tokenizer's stem cache is empty, so the threads also stem concurrently.
    shared = open_index(index)
    assert shared.thread_safe  # type: ignore[attr-defined]
    start = threading.Barrier(8)

    def work(offset: int) -> list[tuple[int, list[tuple[str, float]]]]:
        start.wait()
        order = list(range(offset, len(queries))) + list(range(offset))  # each thread its own order
        return [(i, ranked(shared.search([queries[i]], 5)[0])) for i in order]

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(work, range(0, 160, 20)))
    for outcome in outcomes:
        assert len(outcome) == len(queries)
        for i, hits in outcome:
            assert hits == reference[i], queries[i]


class Recording:
    """Wraps a retriever: records each call's query count; ``delay`` keeps the slot busy a while."""

    thread_safe = True

    def __init__(self, inner: Any, delay: float = 0.0) -> None:
        self.inner, self.delay = inner, delay
        self.calls: list[int] = []
        self.store = inner.store

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        self.calls.append(len(queries))
        time.sleep(self.delay)
        return self.inner.search(queries, k)


def wire(hits: Sequence[Hit]) -> list[dict[str, Any]]:
    return [{"document": {"id": h.doc.id, "contents": h.doc.contents}, "score": h.score} for h in hits]


def test_many_clients_over_a_socket_get_the_sequential_answers_and_small_requests_merge(
    index: Path, queries: list[str]
) -> None:
    bm25 = open_index(index)
    # (queries, topk) per request: mostly single queries, some small batches, two topk values.
    requests = [([q], 3) for q in queries[:96]] + [(queries[i : i + 5], 4) for i in range(96, 156, 5)]
    reference = [[wire(h) for h in bm25.search(qs, k)] for qs, k in requests]
    rec = Recording(bm25, delay=0.02)  # 20 ms per retriever call: later arrivals find the slot busy
    go = threading.Barrier(32)

    def client(lane: int) -> list[tuple[int, Any]]:
        out = []
        with httpx.Client(timeout=60) as c:
            go.wait()
            for n in range(lane, len(requests), 32):
                qs, k = requests[n]
                r = c.post(f"{url}/retrieve", json={"queries": qs, "topk": k, "return_scores": True})
                out.append((n, (r.status_code, r.json())))
        return out

    app = create_app(rec, ServerConfig(max_concurrency=1))
    with running_server(app) as url, ThreadPoolExecutor(32) as pool:
        answers = [a for lane in pool.map(client, range(32)) for a in lane]
    assert sorted(n for n, _ in answers) == list(range(len(requests)))
    for n, (status, body) in answers:
        assert status == 200 and body == {"result": reference[n]}, requests[n]
    assert sum(rec.calls) == sum(len(qs) for qs, _ in requests)
    # 108 requests; with one slot and 32 clients waiting, calls must have carried several requests.
    assert len(rec.calls) < len(requests) // 2 and max(rec.calls) > 5, rec.calls


class Paired:
    """Each search waits until another search runs at the same time (or fails after 10 s)."""

    thread_safe = True

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.started = threading.Event()
        self.meet = threading.Barrier(2, timeout=10)

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        self.started.set()
        self.meet.wait()
        return self.inner.search(queries, k)


def test_two_slots_run_two_searches_at_once(index: Path) -> None:
    paired = Paired(open_index(index))
    body = {"queries": ["Who directed Inception?"], "topk": 3}
    app = create_app(paired, ServerConfig(max_concurrency=2))
    with running_server(app) as url, ThreadPoolExecutor(2) as pool:
        first = pool.submit(httpx.post, f"{url}/retrieve", json=body, timeout=30)
        assert paired.started.wait(10)
        # Sent once the first search runs, so it starts a batch of its own rather than joining it.
        second = pool.submit(httpx.post, f"{url}/retrieve", json=body, timeout=30)
        assert first.result().status_code == 200 and second.result().status_code == 200


def test_one_slot_runs_one_search_at_a_time(index: Path) -> None:
    paired = Paired(open_index(index))
    paired.meet = threading.Barrier(2, timeout=1.0)
    body = {"queries": ["Who directed Inception?"], "topk": 3}
    app = create_app(paired, ServerConfig(max_concurrency=1))
    with running_server(app) as url, ThreadPoolExecutor(2) as pool:
        first = pool.submit(httpx.post, f"{url}/retrieve", json=body, timeout=30)
        assert paired.started.wait(10)
        second = pool.submit(httpx.post, f"{url}/retrieve", json=body, timeout=30)
        # Alone in the slot, the first search never meets a second one: its barrier breaks.
        assert first.result().status_code == 500
        assert "BrokenBarrierError" in first.result().json()["error"]
        second.result()


class Failing:
    def __init__(self) -> None:
        self.release = threading.Event()

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        self.release.wait(10)
        raise OSError("index file vanished")


def test_a_failed_merged_search_fails_every_request_in_it() -> None:
    failing = Failing()
    with running_server(create_app(failing, ServerConfig())) as url, ThreadPoolExecutor(6) as pool:
        futures = [
            pool.submit(httpx.post, f"{url}/retrieve", json={"queries": [f"q{i}"]}, timeout=30)
            for i in range(6)
        ]
        time.sleep(0.3)  # let them all arrive: one in the slot, the rest merged behind it
        failing.release.set()
        replies = [f.result() for f in futures]
    for r in replies:
        assert r.status_code == 500
        assert r.json() == {"error": "retrieval failed: OSError: index file vanished"}


def test_concurrency_is_sized_to_the_machine_only_for_thread_safe_retrievers(index: Path) -> None:
    expected = max(1, min(8, os.cpu_count() or 1))
    assert auto_concurrency(open_index(index), None) == expected
    assert auto_concurrency(Failing(), None) == 1  # says nothing about threads: one at a time
    assert auto_concurrency(open_index(index), 3) == 3  # a configured value wins


class Lanes:
    """Counts the chunk calls in flight at once; each call waits until ``width`` are in flight (or a
    second passes), so a server that runs a large request's chunks one after another shows 1."""

    def __init__(self, inner: Any, width: int) -> None:
        self.inner, self.width = inner, width
        self.lock = threading.Lock()
        self.now = self.most = 0
        self.all_in = threading.Event()
        self.sizes: list[int] = []

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.sizes.append(len(queries))
            if self.now >= self.width:
                self.all_in.set()
        self.all_in.wait(1.0)
        try:
            return self.inner.search(queries, k)
        finally:
            with self.lock:
                self.now -= 1


@pytest.mark.parametrize("slots", [1, 3])
def test_a_large_request_runs_its_chunks_on_every_slot_and_answers_in_order(
    index: Path, queries: list[str], slots: int
) -> None:
    """A GRPO-sized request uses every slot at once (each takes the next chunk), and its answer is the
    sequential one, in request order; with one slot the chunks run one after another."""
    retriever = open_index(index)
    lanes = Lanes(retriever, slots)
    cfg = ServerConfig(max_concurrency=slots, chunk_queries=16)
    batch = [queries[i % len(queries)] for i in range(200)]  # 13 chunks, the last one short
    with running_server(create_app(lanes, cfg)) as url:
        r = httpx.post(
            f"{url}/retrieve", json={"queries": batch, "topk": 3, "return_scores": True}, timeout=60
        )
    assert r.status_code == 200
    got = [[(h["document"]["id"], h["score"]) for h in row] for row in r.json()["result"]]
    want = [ranked(hits) for hits in retriever.search(batch, 3)]
    assert [[d for d, _ in row] for row in got] == [[d for d, _ in row] for row in want]
    flat = [s for row in got for _, s in row]
    assert flat == pytest.approx([s for row in want for _, s in row], rel=1e-6)
    assert lanes.most == slots
    assert sorted(lanes.sizes) == sorted([16] * 12 + [8])  # every chunk searched once


class FailsOnChunk:
    """Fails on the third chunk it is given."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, 0
        self.lock = threading.Lock()

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        with self.lock:
            self.calls += 1
            n = self.calls
        if n == 3:
            raise OSError("index file vanished")
        return self.inner.search(queries, k)


def test_a_chunk_that_fails_fails_the_large_request_with_its_own_error(
    index: Path, queries: list[str]
) -> None:
    cfg = ServerConfig(max_concurrency=2, chunk_queries=16)
    with running_server(create_app(FailsOnChunk(open_index(index)), cfg)) as url:
        r = httpx.post(f"{url}/retrieve", json={"queries": queries[:100], "topk": 3}, timeout=60)
        assert r.status_code == 500
        assert r.json() == {"error": "retrieval failed: OSError: index file vanished"}
        ok = httpx.post(f"{url}/retrieve", json={"queries": queries[:40], "topk": 3}, timeout=60)
        assert ok.status_code == 200 and len(ok.json()["result"]) == 40  # the slots were given back
