"""The retrieval server's FastAPI app: Search-R1's ``POST /retrieve`` over any :class:`Retriever`."""

# No ``from __future__ import annotations`` here: FastAPI must see the real request class built
# inside create_app, which a string annotation would hide.
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from sagegen import __version__
from sagegen.config import ServerConfig
from sagegen.retrieval.base import Retriever
from sagegen.retrieval.index import DocStore
from sagegen.server.batching import Rows, Searcher, SearchFn, auto_concurrency, encode_json
from sagegen.server.guard import LoopbackHostOnly, RequestGuard, replay_body
from sagegen.server.wire import (
    ErrorResponse,
    RetrieveResponse,
    describe,
    encode_positions,
    encode_result,
    request_model,
    served_corpus_hash,
    validation_payload,
)

log = logging.getLogger(__name__)

RETRIEVE_PATH = "/retrieve"
_JSON_HEADERS = [(b"content-type", b"application/json")]


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


class FastRetrieve:
    """``POST /retrieve`` without FastAPI's per-request machinery, for requests that are valid.

    Routing, dependency solving and re-validation cost more than a top-3 search; with many
    single-query clients they were most of a request's time. The body (already size-checked and
    read by :class:`RequestGuard`) is validated against the same request model; any body that
    fails goes on to the FastAPI route unchanged, so every error response stays FastAPI's (same
    status, same message), and /docs still describes the route.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        validate: Callable[[bytes], Any],
        answer: Callable[[Any], Awaitable[tuple[int, bytes]]],
    ) -> None:
        self.app, self.validate, self.answer = app, validate, answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != RETRIEVE_PATH:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            request = self.validate(body)
        except ValidationError:
            await self.app(scope, replay_body(body, receive), send)
            return
        status, payload = await self.answer(request)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})


#: The error responses of ``POST /retrieve``, as /docs lists them.
_RETRIEVE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Body is not JSON"},
    401: {"model": ErrorResponse, "description": "Missing or wrong API key"},
    413: {"model": ErrorResponse, "description": "Body too large"},
    415: {"model": ErrorResponse, "description": "Content-Type is not application/json"},
    422: {"model": ErrorResponse, "description": "Invalid fields"},
    500: {"model": ErrorResponse, "description": "The retriever failed"},
}


class Answerer:
    """Status and JSON body for a validated request (shared by the FastAPI route and the fast path)."""

    def __init__(self, retriever: Retriever, cfg: ServerConfig):
        self.cfg = cfg
        store = getattr(retriever, "store", None)
        search_ids = getattr(retriever, "search_ids", None)
        if isinstance(store, DocStore) and callable(search_ids):
            # A local index: search positions and read the passages while encoding (no Docs/Hits).
            search: SearchFn = search_ids
            self.encode: Callable[[Rows, bool], bytes] = partial(encode_positions, store)
        else:
            search, self.encode = retriever.search, encode_result
        self.searcher = Searcher(
            search,
            max_concurrency=auto_concurrency(retriever, cfg.max_concurrency),
            chunk_queries=cfg.chunk_queries,
        )

    async def __call__(self, request: Any) -> tuple[int, bytes]:
        queries: list[str] = request.queries
        k: int = request.topk or self.cfg.default_topk
        if len(queries) * k > self.cfg.max_hits:
            return 413, _error(
                f"queries x topk = {len(queries)} x {k} exceeds "
                f"server.max_hits={self.cfg.max_hits}; send fewer queries per request"
            )
        # Blank queries (an agent's empty <search></search>) get no hits rather than failing the whole
        # batch, which in RL training holds many rollouts' queries.
        live = [i for i, q in enumerate(queries) if q.strip()]
        # An over-long query is searched on its first max_query_chars characters, as Search-R1's
        # server searches its first 256 tokens: the batch (many rollouts' queries) still answers.
        cut = self.cfg.max_query_chars
        started = time.perf_counter()
        try:
            found = await self.searcher.search([queries[i][:cut] for i in live], k)
        except Exception as e:  # the retriever's fault, not the client's: a 5xx that clients may retry
            log.exception("retrieval failed for a batch of %d queries", len(queries))
            return 500, _error(f"retrieval failed: {type(e).__name__}: {e}")
        per_query: Rows = [[] for _ in queries]
        for i, hits in zip(live, found, strict=True):
            per_query[i] = hits[:k]
        log.debug("retrieved %d queries (k=%d) in %.3fs", len(queries), k, time.perf_counter() - started)
        return 200, await encode_json(
            lambda: self.encode(per_query, request.return_scores), hits=len(queries) * k
        )


def _one_error_shape(app: FastAPI) -> None:
    """Every 4xx as ``{"error": "..."}`` (FastAPI's default is ``{"detail": ...}``)."""

    @app.exception_handler(StarletteHTTPException)
    async def _on_http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        status, payload = validation_payload(exc)
        return JSONResponse(payload, status_code=status)


def create_app(
    retriever: Retriever,
    cfg: ServerConfig,
    *,
    api_key: str | None = None,
    kind: str | None = None,
    n_docs: int | None = None,
) -> ASGIApp:
    """An ASGI app (FastAPI inside) serving ``retriever`` over Search-R1's ``/retrieve`` protocol.

    ``api_key``: when given, every route except /health and the docs requires it. ``kind`` and
    ``n_docs`` are reported by /health (guessed from the retriever when omitted), with the index
    manifest's ``corpus_hash`` (None for a retriever without one) so a client can check which
    corpus it searches (run_verl.sh does, before training).
    """
    guessed_kind, guessed_n = describe(retriever)
    health_info = {
        "status": "ok",
        "kind": kind or guessed_kind,
        "n_docs": n_docs if n_docs is not None else guessed_n,
        "corpus_hash": served_corpus_hash(retriever),
        "version": __version__,
        "auth": bool(api_key),
        "max_topk": cfg.max_topk,
        "max_queries": cfg.max_queries,
        "max_hits": cfg.max_hits,
        "default_topk": cfg.default_topk,
        # which of the ``serve --workers`` processes answered
        "workers": cfg.workers,
        "pid": os.getpid(),
    }
    RetrieveRequest = request_model(cfg)
    answer = Answerer(retriever, cfg)
    app = FastAPI(
        title="sagegen retrieval server",
        version=__version__,
        description="Search-R1-compatible `POST /retrieve` over a sagegen retriever "
        f"({health_info['kind']}). Send `Authorization: Bearer <key>` when the server has an API key.",
    )
    _one_error_shape(app)
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
        responses=_RETRIEVE_ERRORS,
    )
    # FastAPI reads the body model from this annotation at run time; the model is built per config
    # (its limits show in /docs), so a type checker sees a variable, not a class.
    async def retrieve(request: RetrieveRequest) -> Response:  # type: ignore[valid-type]
        status, body = await answer(request)
        return Response(body, status_code=status, media_type="application/json")

    @app.get("/health", summary="Liveness and what is served")
    async def health() -> dict[str, Any]:
        return health_info

    # The guards and the fast path wrap the FastAPI app from outside rather than as its middleware,
    # so a valid /retrieve request skips FastAPI's own middleware stack too.
    served: ASGIApp = FastRetrieve(app, validate=RetrieveRequest.model_validate_json, answer=answer)
    served = RequestGuard(
        served, api_key=api_key, max_body_bytes=cfg.max_body_bytes, body_paths=frozenset({RETRIEVE_PATH})
    )
    if not api_key:  # keyless means loopback-only: refuse other Host names (DNS rebinding)
        served = LoopbackHostOnly(served)
    return served
