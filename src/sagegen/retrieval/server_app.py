"""The retrieval server's FastAPI app: Search-R1's ``POST /retrieve`` over any :class:`Retriever`."""

# No ``from __future__ import annotations`` here: FastAPI must see the real request class built
# inside create_app, which a string annotation would hide.
import logging
import time
from typing import Any

import anyio
from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from sagegen import __version__
from sagegen.config import ServerConfig
from sagegen.records import Hit
from sagegen.retrieval.base import Retriever
from sagegen.retrieval.batching import encode_json, search_in_chunks
from sagegen.retrieval.server_guard import LoopbackHostOnly, RequestGuard
from sagegen.retrieval.server_wire import (
    ErrorResponse,
    RetrieveResponse,
    describe,
    json_safe_score,
    request_model,
    validation_payload,
)

log = logging.getLogger(__name__)

RETRIEVE_PATH = "/retrieve"


def create_app(
    retriever: Retriever,
    cfg: ServerConfig,
    *,
    api_key: str | None = None,
    kind: str | None = None,
    n_docs: int | None = None,
) -> FastAPI:
    """A FastAPI app serving ``retriever`` over Search-R1's ``/retrieve`` protocol.

    ``api_key``: when given, every route except /health and the docs requires it. ``kind`` and
    ``n_docs`` are reported by /health (guessed from the retriever when omitted).
    """
    guessed_kind, guessed_n = describe(retriever)
    info = {"kind": kind or guessed_kind, "n_docs": n_docs if n_docs is not None else guessed_n}
    RetrieveRequest = request_model(cfg)
    limiter: list[anyio.CapacityLimiter] = []  # created on first use, inside the event loop

    app = FastAPI(
        title="sagegen retrieval server",
        version=__version__,
        description="Search-R1-compatible `POST /retrieve` over a sagegen retriever "
        f"({info['kind']}). Send `Authorization: Bearer <key>` when the server has an API key.",
    )

    @app.exception_handler(StarletteHTTPException)
    async def _on_http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # One error shape for every 4xx: {"error": "..."} (FastAPI's default is {"detail": ...}).
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        status, payload = validation_payload(exc)
        return JSONResponse(payload, status_code=status)

    # Declared only so /docs offers an "Authorize" button; RequestGuard does the checking.
    doc_security = (
        [Security(HTTPBearer(auto_error=False)), Security(APIKeyHeader(name="X-API-Key", auto_error=False))]
        if api_key
        else []
    )

    @app.post(
        RETRIEVE_PATH,
        summary="Top-k passages for each query (Search-R1 format)",
        response_model=RetrieveResponse,
        dependencies=doc_security,
        responses={
            400: {"model": ErrorResponse, "description": "Body is not JSON"},
            401: {"model": ErrorResponse, "description": "Missing or wrong API key"},
            413: {"model": ErrorResponse, "description": "Body too large"},
            415: {"model": ErrorResponse, "description": "Content-Type is not application/json"},
            422: {"model": ErrorResponse, "description": "Invalid fields"},
            500: {"model": ErrorResponse, "description": "The retriever failed"},
        },
    )
    async def retrieve(request: RetrieveRequest) -> JSONResponse:  # type: ignore[valid-type]
        queries: list[str] = request.queries  # type: ignore[attr-defined]
        k: int = request.topk or cfg.default_topk  # type: ignore[attr-defined]
        # Blank queries (an agent's empty <search></search>) get no hits rather than failing the whole
        # batch, which in RL training holds many rollouts' queries.
        live = [i for i, q in enumerate(queries) if q.strip()]
        if len(queries) * k > cfg.max_hits:
            return JSONResponse(
                {
                    "error": f"queries x topk = {len(queries)} x {k} exceeds server.max_hits={cfg.max_hits}; "
                    "send fewer queries per request"
                },
                status_code=413,
            )
        if not limiter:
            limiter.append(anyio.CapacityLimiter(cfg.max_concurrency))
        started = time.perf_counter()
        try:
            found = await search_in_chunks(
                retriever, [queries[i] for i in live], k, limiter=limiter[0], chunk_queries=cfg.chunk_queries
            )
        except Exception as e:  # the retriever's fault, not the client's: a 5xx that clients may retry
            log.exception("retrieval failed for a batch of %d queries", len(queries))
            return JSONResponse({"error": f"retrieval failed: {type(e).__name__}: {e}"}, status_code=500)
        per_query: list[list[Hit]] = [[] for _ in queries]
        for i, hits in zip(live, found, strict=True):
            per_query[i] = list(hits)[:k]
        log.debug("retrieved %d queries (k=%d) in %.3fs", len(queries), k, time.perf_counter() - started)

        def document(hit: Hit) -> dict[str, Any]:
            return {"id": hit.doc.id, "contents": hit.doc.contents}

        if request.return_scores:  # type: ignore[attr-defined]
            result: list[list[dict[str, Any]]] = [
                [{"document": document(h), "score": json_safe_score(h.score)} for h in hits]
                for hits in per_query
            ]
        else:
            result = [[document(h) for h in hits] for hits in per_query]
        return Response(await encode_json({"result": result}), media_type="application/json")

    @app.get("/health", summary="Liveness and what is served")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "kind": info["kind"],
            "n_docs": info["n_docs"],
            "version": __version__,
            "auth": bool(api_key),
            "max_topk": cfg.max_topk,
            "max_queries": cfg.max_queries,
            "max_hits": cfg.max_hits,
            "default_topk": cfg.default_topk,
        }

    app.add_middleware(RequestGuard, api_key=api_key, max_body_bytes=cfg.max_body_bytes)
    if not api_key:  # keyless means loopback-only: refuse other Host names (DNS rebinding)
        app.add_middleware(LoopbackHostOnly)
    return app
