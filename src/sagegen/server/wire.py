"""The wire format of ``POST /retrieve``: request and response models, validation errors, /health facts.

The response models only describe the API for /docs; responses are built as plain dicts and
encoded once (see :mod:`sagegen.server.app`).
"""

# No ``from __future__ import annotations``: pydantic must see the real annotations of the
# request model built inside request_model.
import contextlib
import json
import math
from collections.abc import Sequence, Sized
from typing import Annotated, Any

import pydantic_core
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr

from sagegen.config import ServerConfig
from sagegen.records import Hit
from sagegen.retrieval.base import Retriever
from sagegen.retrieval.index import DocStore


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


def _number_only(value: Any) -> Any:
    """``topk`` may be written 9 or 9.0 (JSON has one number type; many clients send floats), never
    "9" or true; pydantic's own integer check then refuses 2.5 ("a fractional part")."""
    if isinstance(value, (bool, str)):
        raise pydantic_core.PydanticCustomError("int_type", "Input should be a valid integer")
    return value


#: An integer, given as an integer or as a float with no fractional part.
WholeNumber = Annotated[int, BeforeValidator(_number_only)]


def request_model(cfg: ServerConfig) -> type[BaseModel]:
    """The request model with this server's limits baked in (so /docs shows them)."""
    # No length limit here: one over-long query would fail its whole batch with 422 (Search-R1's
    # client then dies on KeyError 'result' mid GRPO step), while Search-R1's own server answers it
    # (its dense encoder truncates every query to 256 tokens). The Answerer cuts such a query to
    # ``server.max_query_chars`` and searches that; the body size limit still bounds the request.

    class RetrieveRequest(BaseModel):
        # A typo such as "top_k" must not silently fall back to the default topk.
        model_config = ConfigDict(extra="forbid")

        # An empty list is allowed on purpose: Search-R1's trainer (llm_agent/generation.py) posts
        # {"queries": []} whenever no rollout searched in a turn and reads ["result"] back, so a 4xx
        # here would crash its training loop. The answer is simply {"result": []}.
        queries: list[StrictStr] = Field(
            max_length=cfg.max_queries,
            description=f"Up to {cfg.max_queries} query strings; a longer one than {cfg.max_query_chars} "
            'characters is searched on its first ones (an empty list gets {"result": []}).',
            examples=[["Who wrote Hamlet?", "capital of France"]],
        )
        topk: WholeNumber | None = Field(
            None,
            ge=1,
            le=cfg.max_topk,
            description=f"Passages per query, 1 to {cfg.max_topk}; omitted or null means {cfg.default_topk}.",
        )
        return_scores: StrictBool = Field(False, description="Wrap each document as {document, score}.")

    return RetrieveRequest


def _format_loc(loc: Sequence[Any]) -> str:
    parts = [str(x) for x in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def validation_payload(exc: RequestValidationError) -> tuple[int, dict[str, Any]]:
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


def json_safe_score(score: float) -> float | None:
    value = float(score)
    # json.dumps(nan) is not JSON; Starlette refuses it with a 500, so send null instead.
    return value if math.isfinite(value) else None


def render(per_query: list[list[Hit]], return_scores: bool) -> list[list[dict[str, Any]]]:
    """The ``result`` list: bare documents, or ``{document, score}`` with ``return_scores``."""
    if return_scores:
        return [
            [
                {"document": {"id": h.doc.id, "contents": h.doc.contents}, "score": json_safe_score(h.score)}
                for h in hits
            ]
            for hits in per_query
        ]
    return [[{"id": h.doc.id, "contents": h.doc.contents} for h in hits] for hits in per_query]


def encode_result(per_query: list[list[Hit]], return_scores: bool) -> bytes:
    """``{"result": render(...)}`` as the response body, compact UTF-8 JSON."""
    return _to_json({"result": render(per_query, return_scores)})


def encode_positions(store: DocStore, per_query: list[list[tuple[int, float]]], return_scores: bool) -> bytes:
    """``encode_result(to_hits(store, per_query), ...)``, read straight from the stored passages.

    For a retriever over a :class:`DocStore` the server searches positions (``search_ids``) and
    never builds the Docs and Hits that ``search`` returns: at 256 queries x top-3 they cost more
    than all of the HTTP and JSON work (tests/server/test_server_encode.py checks the two agree)."""

    doc = store.served
    if return_scores:
        rows: list[list[Any]] = [
            [{"document": doc(i), "score": json_safe_score(s)} for i, s in hits] for hits in per_query
        ]
    else:
        rows = [[doc(i) for i, _ in hits] for hits in per_query]
    return _to_json({"result": rows})


def _to_json(result: dict[str, Any]) -> bytes:
    # pydantic-core's encoder writes it at 3-4x the speed of json.dumps (which was a third of the
    # HTTP overhead at 256 queries per request). Text that UTF-8 cannot carry (a lone surrogate
    # from a corpus' "\ud800" escape) makes it refuse; such a response is sent \u-escaped by json.
    try:
        return pydantic_core.to_json(result)
    except pydantic_core.PydanticSerializationError:
        return json.dumps(result, separators=(",", ":")).encode()


def served_corpus_hash(retriever: Retriever) -> str | None:
    """The hash of the passages served (``corpus_hash`` of a loaded index's manifest), else None."""
    manifest = getattr(retriever, "manifest", None)
    value = manifest.get("corpus_hash") if isinstance(manifest, dict) else None
    return value if isinstance(value, str) else None


def describe(retriever: Retriever) -> tuple[str, int | None]:
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
    if n_docs is None and isinstance(retriever, Sized):
        with contextlib.suppress(TypeError):
            n_docs = len(retriever)
    return str(kind), n_docs
