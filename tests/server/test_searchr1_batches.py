"""Search-R1's real request shapes against ``sagegen serve`` over a loopback socket.

Search-R1's GRPO recipe (512 prompts × 5 rollouts) posts 2,560 queries in one ``/retrieve``
request and reads the reply as its rollout client does: ``resp.json()["result"]``, then
``doc["document"]["contents"]`` per hit, split at the first newline into title and text
(``search_r1/llm_agent/generation.py``). The corpus is wiki-18-shaped (quoted titles), built
from the shared HotpotQA passages, and searched with our real BM25 index.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.searchr1_client import searchr1_information
from sagegen.agents.tags import format_information
from sagegen.config import ServerConfig, load_config
from sagegen.records import Hit
from sagegen.retrieval.factory import build_retriever
from sagegen.server import create_app, running_server

N_QUERIES = 2560  # Search-R1's GRPO recipe: train_batch_size=512 x n_agent=5


@pytest.fixture(scope="module")
def wiki18(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """HotpotQA passages rewritten as wiki-18 rows: ``"Title"\\ntext``; some keep trailing whitespace."""
    tmp = tmp_path_factory.mktemp("wiki18")
    rows = []
    for n, line in enumerate((shared_data / "hotpotqa" / "corpus.jsonl").read_text().splitlines()):
        rec = json.loads(line)
        title, _, text = rec["contents"].partition("\n")
        rows.append({"id": str(n), "contents": f'"{title}"\n{text}' + ("  \n" if n % 7 == 0 else "")})
    corpus = tmp / "wiki-18.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = load_config(None, [f"corpus.path={corpus}", f"retrieval.index_dir={tmp / 'indexes'}"])
    questions = [
        json.loads(q)["question"]
        for q in (shared_data / "hotpotqa" / "questions.jsonl").read_text().splitlines()
    ]
    return {"retriever": build_retriever(cfg), "rows": {r["id"]: r["contents"] for r in rows}, "q": questions}


class Recording:
    """Wraps a retriever and records each call's size, so the test sees how work interleaved."""

    def __init__(self, inner: Any, chunk_pause: float) -> None:
        self.inner, self.calls, self.chunk_pause = inner, [], chunk_pause
        self.first_chunk = threading.Event()

    def search(self, queries: list[str], k: int = 3) -> list[list[Hit]]:
        self.calls.append(len(queries))
        self.first_chunk.set()
        if len(queries) > 1:
            # Holds each chunk of the batch open a little, so the window for the other client is wide
            # on any machine; the assertion is about order of calls, not about time.
            time.sleep(self.chunk_pause)
        return self.inner.search(queries, k)


def test_searchr1_grpo_batch_gets_200_and_exact_passages(wiki18: dict[str, Any]) -> None:
    queries = [wiki18["q"][i % len(wiki18["q"])] + ("" if i < 100 else f" {i}") for i in range(N_QUERIES)]
    app = create_app(wiki18["retriever"], ServerConfig())
    with running_server(app) as url:
        resp = httpx.post(
            f"{url}/retrieve", json={"queries": queries, "topk": 3, "return_scores": True}, timeout=120
        )
    assert resp.status_code == 200, resp.text[:300]
    result = resp.json()["result"]
    assert len(result) == N_QUERIES and all(len(hits) == 3 for hits in result)
    # contents as the corpus holds it: quotes and trailing whitespace kept, byte for byte
    for hits in result[:200]:
        for item in hits:
            assert item["document"]["contents"] == wiki18["rows"][item["document"]["id"]]
    assert any(item["document"]["contents"].endswith("  \n") for hits in result for item in hits)
    # Search-R1's client and our solver/SFT/rollout formatter give the same bytes for the same hits.
    ours = wiki18["retriever"].search(queries[:50], 3)
    for hits, served in zip(ours, result[:50], strict=True):
        assert format_information(hits) == searchr1_information(served)
    assert '(Title: "' in searchr1_information(result[0])


def test_a_large_batch_lets_a_single_query_client_in_between(wiki18: dict[str, Any]) -> None:
    rec = Recording(wiki18["retriever"], chunk_pause=0.02)
    cfg = ServerConfig(chunk_queries=64)
    queries = [wiki18["q"][i % len(wiki18["q"])] for i in range(N_QUERIES)]
    single: list[int] = []
    with running_server(create_app(rec, cfg)) as url, httpx.Client(timeout=120) as client:
        big: dict[str, Any] = {}

        def post_big() -> None:
            big["resp"] = httpx.post(f"{url}/retrieve", json={"queries": queries, "topk": 3}, timeout=120)

        t = threading.Thread(target=post_big)
        t.start()
        assert rec.first_chunk.wait(60)
        while t.is_alive() and len(single) < 5:
            r = client.post(f"{url}/retrieve", json={"queries": ["Who directed Inception?"], "topk": 3})
            assert r.status_code == 200 and len(r.json()["result"][0]) == 3
            single.append(len(rec.calls))
        t.join()
    assert big["resp"].status_code == 200 and len(big["resp"].json()["result"]) == N_QUERIES
    n_chunks = -(-N_QUERIES // 64)
    assert sorted(rec.calls, reverse=True)[:n_chunks] == [64] * n_chunks
    # Every single-query call ran between two chunks of the batch, not after all of them.
    positions = [i for i, n in enumerate(rec.calls) if n == 1]
    assert positions and positions[0] < len(rec.calls) - 1
    assert rec.calls.count(1) == len(single)


def test_a_request_beyond_max_hits_is_refused_clearly(wiki18: dict[str, Any]) -> None:
    app = create_app(wiki18["retriever"], ServerConfig(max_hits=1000))
    with running_server(app) as url:
        resp = httpx.post(f"{url}/retrieve", json={"queries": ["q"] * 400, "topk": 3})
    assert resp.status_code == 413
    assert "max_hits=1000" in resp.json()["error"]


def test_no_hit_search_is_an_empty_block_like_search_r1() -> None:
    # Search-R1 writes "<information></information>" for a query its server found nothing for; so does
    # the authors' release (its _passages2string of [] is ""). Every protocol's block is this one.
    assert format_information([]) == searchr1_information([]) == "<information></information>"
