"""How the retrieval server runs one request's queries: in chunks, so other clients interleave.

Search-R1's GRPO recipe posts every rollout's query of a turn in one request (512 prompts × 5
rollouts = 2,560 queries). Searched as one call, that request holds the retriever for seconds and
a single-query client (an eval, a second trainer) waits behind it. Each chunk here is a separate
worker-thread call that queues on the server's capacity limiter; anyio's limiter hands the slot
out in arrival order, so a request that arrives meanwhile is served after the current chunk, not
after the whole batch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import anyio

from sagegen.records import Hit
from sagegen.retrieval.base import Retriever


async def search_in_chunks(
    retriever: Retriever,
    queries: Sequence[str],
    k: int,
    *,
    limiter: anyio.CapacityLimiter,
    chunk_queries: int,
) -> list[list[Hit]]:
    """``retriever.search(queries, k)``, ``chunk_queries`` at a time, each chunk in a worker thread."""
    found: list[list[Hit]] = []
    for start in range(0, len(queries), chunk_queries):
        chunk = list(queries[start : start + chunk_queries])
        part = await anyio.to_thread.run_sync(retriever.search, chunk, k, limiter=limiter)
        if len(part) != len(chunk):
            raise RuntimeError(f"retriever returned {len(part)} result lists for {len(chunk)} queries")
        found.extend(list(hits) for hits in part)
    return found


async def encode_json(payload: dict[str, Any]) -> bytes:
    """The response body, encoded off the event loop (2,560 × top-3 passages is megabytes of JSON)."""

    def dump() -> bytes:
        # Same bytes as Starlette's JSONResponse renders; NaN is mapped to null by the caller.
        return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()

    return await anyio.to_thread.run_sync(dump)
