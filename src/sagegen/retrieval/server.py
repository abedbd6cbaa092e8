"""A Search-R1-compatible retrieval server: ``POST /retrieve`` over any :class:`Retriever`.

Wire format (Search-R1's ``search_r1/search/retrieval_server.py``)::

    POST /retrieve  {"queries": ["q1", ...], "topk": 3, "return_scores": true}
    -> {"result": [[{"document": {"id": ..., "contents": "title\\ntext"}, "score": 12.3}, ...], ...]}

With ``"return_scores": false`` each query's list holds the bare document dicts, as in
Search-R1. ``topk`` may be omitted (or null): the server's ``default_topk`` applies, as
Search-R1 falls back to its configured topk.

Beyond Search-R1: strict request validation (every malformed request gets a 4xx with a
message naming the field, never a 500), limits on body size, query count, query length and
topk, an optional API key (``Authorization: Bearer <key>`` or ``X-API-Key``) that is
mandatory when binding beyond loopback, ``GET /health``, and OpenAPI docs at ``/docs``.
Retrieval runs in worker threads so the event loop keeps answering while a batch is searched.
"""

# No ``from __future__ import annotations`` here: FastAPI must see the real request class built
# inside create_app, which a string annotation would hide.
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import anyio
import uvicorn
from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sagegen import __version__
from sagegen.config import Config, ServerConfig
from sagegen.errors import ConfigError
from sagegen.records import Hit
from sagegen.retrieval.base import Retriever
from sagegen.retrieval.batching import encode_json, search_in_chunks
from sagegen.retrieval.server_guard import LoopbackHostOnly, guarded_protocol

log = logging.getLogger(__name__)

RETRIEVE_PATH = "/retrieve"
# Paths anyone may read even when a key is set: liveness probes and the API description.
_PUBLIC_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


# ---------------------------------------------------------------------------------------------
# Wire models (response models serve the OpenAPI docs; responses are built as plain dicts).


class RetrievedDocument(BaseModel):
    id: str = Field(description="Passage id in the corpus.")
    contents: str = Field(
        description='Search-R1 form: title, a newline, then the text ("" title: text only).'
    )


class ScoredDocument(BaseModel):
    document: RetrievedDocument
    score: float | None = Field(description="Retriever score, higher is better (null if not finite).")


class RetrieveResponse(BaseModel):
    result: list[list[ScoredDocument]] | list[list[RetrievedDocument]] = Field(
        description="One list per query, in request order, best hit first. "
        "Items are {document, score} when return_scores is true, bare documents otherwise."
    )


class ErrorResponse(BaseModel):
    error: str = Field(description="What was wrong, naming the field.")
    detail: list[dict[str, Any]] | None = None


def _request_model(cfg: ServerConfig) -> type[BaseModel]:
    """The request model with this server's limits baked in (so /docs shows them)."""
    Query = Annotated[StrictStr, StringConstraints(max_length=cfg.max_query_chars)]

    class RetrieveRequest(BaseModel):
        # A typo such as "top_k" must not silently fall back to the default topk.
        model_config = ConfigDict(extra="forbid")

        # An empty list is allowed on purpose: Search-R1's trainer (llm_agent/generation.py) posts
        # {"queries": []} whenever no rollout searched in a turn and reads ["result"] back, so a 4xx
        # here would crash its training loop. The answer is simply {"result": []}.
        queries: list[Query] = Field(
            max_length=cfg.max_queries,
            description=f"Up to {cfg.max_queries} query strings of at most {cfg.max_query_chars} characters "
            '(an empty list gets {"result": []}).',
            examples=[["Who wrote Hamlet?", "capital of France"]],
        )
        topk: StrictInt | None = Field(
            None,
            ge=1,
            le=cfg.max_topk,
            description=f"Passages per query, 1 to {cfg.max_topk}; omitted or null means {cfg.default_topk}.",
        )
        return_scores: StrictBool = Field(False, description="Wrap each document as {document, score}.")

    return RetrieveRequest


# ---------------------------------------------------------------------------------------------
# Helpers


def is_loopback_host(host: str) -> bool:
    """True for names and addresses that only this machine can reach."""
    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        # Any other hostname may resolve to a public interface: treat it as exposed.
        return False


def resolve_api_key(cfg: ServerConfig) -> str | None:
    """The key from the environment variable ``cfg.api_key_env``; unset or blank means none."""
    key = os.environ.get(cfg.api_key_env, "").strip() if cfg.api_key_env else ""
    return key or None


def check_bind(cfg: ServerConfig, api_key: str | None) -> None:
    """Refuse to expose an unauthenticated server beyond loopback."""
    if not is_loopback_host(cfg.host) and not api_key:
        raise ConfigError(
            f"server.host={cfg.host!r} is reachable from other machines; set the environment variable "
            f"{cfg.api_key_env} to an API key (clients send it as 'Authorization: Bearer <key>') "
            "or bind to 127.0.0.1"
        )


def _format_loc(loc: Sequence[Any]) -> str:
    parts = [str(x) for x in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def _validation_payload(exc: RequestValidationError) -> tuple[int, dict[str, Any]]:
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        e = next(e for e in errors if e.get("type") == "json_invalid")
        where = e.get("loc", ("body", "?"))[-1]
        reason = (e.get("ctx") or {}).get("error", "invalid JSON")
        return 400, {"error": f"request body is not valid JSON: {reason} (at character {where})"}
    if any(tuple(e.get("loc", ())) == ("body",) and e.get("type") == "missing" for e in errors):
        return 400, {"error": 'request body is empty; expected a JSON object such as {"queries": ["..."]}'}
    # The offending input is left out on purpose: it may be megabytes long, and echoing it helps nobody.
    detail = [
        {"loc": _format_loc(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in errors
    ]
    shown = "; ".join(f"{d['loc']}: {d['msg']}" for d in detail[:5])
    if len(detail) > 5:
        shown += f"; ... and {len(detail) - 5} more"
    return 422, {"error": f"invalid request: {shown}", "detail": detail}


def _json_safe_score(score: float) -> float | None:
    value = float(score)
    # json.dumps(nan) is not JSON; Starlette refuses it with a 500, so send null instead.
    return value if math.isfinite(value) else None


def _describe(retriever: Retriever) -> tuple[str, int | None]:
    manifest = getattr(retriever, "manifest", None)
    if isinstance(manifest, dict) and isinstance(manifest.get("kind"), str):
        # A loaded index directory knows exactly what it serves.
        n = manifest.get("n_docs")
        return manifest["kind"], n if isinstance(n, int) else None
    kind = getattr(retriever, "kind", None) or type(retriever).__name__
    n_docs: int | None = None
    for attr in ("n_docs", "num_docs"):
        value = getattr(retriever, attr, None)
        if isinstance(value, int):
            n_docs = value
            break
    if n_docs is None:
        with contextlib.suppress(TypeError):
            n_docs = len(retriever)  # type: ignore[arg-type]
    return str(kind), n_docs


class _GuardMiddleware:
    """Checks that must come before FastAPI reads the body: API key, content type, body size.

    Order matters: an unauthenticated client learns nothing about validation (401 first), and
    an oversized body is refused before it is parsed (413).
    """

    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        if self.api_key is not None and path not in _PUBLIC_PATHS and not self._authorised(headers):
            await _send_error(
                send,
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                extra_headers=[(b"www-authenticate", b"Bearer")],
            )
            return
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return

        ctype = headers.get("content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if ctype != "application/json" and not ctype.endswith("+json"):
            shown = ctype or "none"
            await _send_error(send, 415, f"Content-Type must be application/json (got {shown})")
            return
        length = headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _send_error(send, 400, "Content-Length is not a number")
                return
            if declared > self.max_body_bytes:
                await _send_error(send, 413, _too_large(self.max_body_bytes))
                return

        # Read the body here, bounded, so a chunked upload cannot grow past the limit either;
        # then hand it to the app unchanged.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _send_error(send, 413, _too_large(self.max_body_bytes))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            body.decode("utf-8")  # RFC 8259: JSON between systems is UTF-8
        except UnicodeDecodeError as e:
            await _send_error(send, 400, f"request body is not valid JSON: not UTF-8 text (byte {e.start})")
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _authorised(self, headers: dict[str, bytes]) -> bool:
        assert self.api_key is not None
        offered: list[bytes] = []
        auth = headers.get("authorization", b"")
        scheme, _, token = auth.partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            offered.append(token.strip())
        if "x-api-key" in headers:
            offered.append(headers["x-api-key"].strip())
        # Constant-time comparison: the reply time must not reveal how much of a guess was right.
        return any(hmac.compare_digest(tok, self.api_key) for tok in offered)


def _too_large(limit: int) -> str:
    return f"request body too large (limit {limit} bytes; send fewer or shorter queries per request)"


async def _send_error(
    send: Send, status: int, message: str, *, extra_headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += extra_headers or []
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------------------------
# The app


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
    guessed_kind, guessed_n = _describe(retriever)
    info = {"kind": kind or guessed_kind, "n_docs": n_docs if n_docs is not None else guessed_n}
    RetrieveRequest = _request_model(cfg)
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
        status, payload = _validation_payload(exc)
        return JSONResponse(payload, status_code=status)

    # Declared only so /docs offers an "Authorize" button; _GuardMiddleware does the checking.
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
                [{"document": document(h), "score": _json_safe_score(h.score)} for h in hits]
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

    app.add_middleware(_GuardMiddleware, api_key=api_key, max_body_bytes=cfg.max_body_bytes)
    if not api_key:  # keyless means loopback-only: refuse other Host names (DNS rebinding)
        app.add_middleware(LoopbackHostOnly)
    return app


# ---------------------------------------------------------------------------------------------
# Running it


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind and listen now, so the printed URL is connectable before uvicorn's loop starts."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    if not infos:
        raise ConfigError(f"server.host={host!r}: cannot resolve")
    family, stype, proto, _, addr = infos[0]
    sock = socket.socket(family, stype, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def socket_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        # A wildcard bind is reachable through loopback too; that is the URL worth printing.
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


class PreparedServer:
    """A configured uvicorn server whose socket already listens; ``run()`` serves until stopped."""

    def __init__(self, app: FastAPI, sock: socket.socket, cfg: ServerConfig) -> None:
        self.app, self.sock = app, sock
        self.url = socket_url(sock)
        config = uvicorn.Config(app, log_level=cfg.log_level, lifespan="off", timeout_graceful_shutdown=5,
                                http=guarded_protocol(cfg.header_timeout, cfg.body_timeout))
        self.server = uvicorn.Server(config)

    def run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.sock.close()

    def stop(self) -> None:
        """Ask a running server (e.g. in another thread) to finish its requests and return."""
        self.server.should_exit = True


def prepare_server(
    retriever: Retriever, cfg: ServerConfig, *, kind: str | None = None, n_docs: int | None = None
) -> PreparedServer:
    """Read the API key from ``cfg.api_key_env``, refuse a public bind without one, build the app, bind."""
    api_key = resolve_api_key(cfg)
    check_bind(cfg, api_key)
    app = create_app(retriever, cfg, api_key=api_key, kind=kind, n_docs=n_docs)
    return PreparedServer(app, bind_socket(cfg.host, cfg.port), cfg)


def serve(
    retriever: Retriever,
    cfg: ServerConfig,
    *,
    on_ready: Callable[[str], None] | None = None,
    kind: str | None = None,
    n_docs: int | None = None,
) -> None:
    """Serve ``retriever`` until interrupted. ``on_ready(base_url)`` runs once the port listens.

    The API key comes from the environment variable ``cfg.api_key_env``; binding beyond
    loopback without one is refused with a ConfigError.
    """
    prepared = prepare_server(retriever, cfg, kind=kind, n_docs=n_docs)
    if on_ready is not None:
        try:
            on_ready(prepared.url)
        except BaseException:
            prepared.sock.close()
            raise
    prepared.run()


@contextlib.contextmanager
def running_server(
    app: FastAPI,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str = "warning",
    startup_timeout: float = 30.0,
    limits: ServerConfig | None = None,
) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread; yields its base URL (``http://host:port``).

    For tests and notebooks: a real server on a real socket (ephemeral port by default),
    stopped and joined on exit.
    """
    sock = bind_socket(host, port)
    limits = limits or ServerConfig()  # its read deadlines, as `sagegen serve` applies them
    server = uvicorn.Server(
        uvicorn.Config(app, log_level=log_level, lifespan="off", timeout_graceful_shutdown=2,
                       http=guarded_protocol(limits.header_timeout, limits.body_timeout))
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="sagegen-server", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server thread died during start-up (see the log above)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start within {startup_timeout:.0f}s")
            time.sleep(0.01)
        yield socket_url(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def serve_from_config(
    cfg: Config,
    *,
    index: str | Path | None = None,
    on_ready: Callable[[str], None] | None = None,
    on_loading: Callable[[str], None] | None = None,
) -> None:
    """``sagegen serve``: open ``index`` (a directory from ``sagegen index``) or the retriever that
    ``cfg.retrieval`` describes (building its index first if needed), then serve it.

    The bind/API-key check runs first, so a refused public bind fails before minutes of indexing.
    """
    check_bind(cfg.server, resolve_api_key(cfg.server))
    from sagegen.retrieval.factory import build_retriever, open_index

    if index is not None:
        if on_loading is not None:
            on_loading(f"loading index {index}")
        retriever = open_index(index, cfg.retrieval)
    else:
        if on_loading is not None:
            where = cfg.corpus.path or "the bundled corpus"
            on_loading(f"opening a {cfg.retrieval.kind} retriever over {where} (indexing it if needed)")
        retriever = build_retriever(cfg)
    serve(retriever, cfg.server, on_ready=on_ready)
