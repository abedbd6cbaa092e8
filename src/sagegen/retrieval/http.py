"""A Retriever backed by any Search-R1-compatible ``POST /retrieve`` server (ours or Search-R1's).

Both response shapes are understood: ``{"document": {...}, "score": s}`` items (``return_scores``
true, which we always ask for) and bare document dicts (servers that ignore the flag). Documents
need ``contents`` (title, newline, text) or ``title``/``text``; ``id`` is optional because
Search-R1's Lucene BM25 path sends none, in which case a stable id is derived from the contents.

Connection errors, timeouts, 429 and 5xx are retried with exponential backoff; any other 4xx is
the caller's mistake and fails at once with the server's message. Error messages name the URL
(without credentials) and never the API key.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from sagegen.config import HTTPRetrieverConfig
from sagegen.errors import SagegenError, register_secret
from sagegen.records import Doc, Hit

_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_BACKOFF = 30.0


def _endpoint(url: str) -> str:
    """The full /retrieve URL; a bare ``http://host:port`` gets ``/retrieve`` appended."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SagegenError(f"retrieval.http.url={_redact(url)!r}: expected http(s)://host:port/retrieve")
    path = parts.path if parts.path not in ("", "/") else "/retrieve"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _redact(url: str) -> str:
    """The URL without user:password@, for messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[1], parts.path, parts.query, ""))


def _snippet(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _server_message(response: httpx.Response) -> str:
    """The server's own explanation: our ``error`` field, FastAPI's ``detail``, or the raw text."""
    try:
        data = response.json()
    except ValueError:
        return _snippet(response.text) or response.reason_phrase
    if isinstance(data, dict):
        for key in ("error", "detail", "message"):
            if key in data:
                value = data[key]
                return _snippet(value if isinstance(value, str) else str(value))
    return _snippet(response.text)


class HTTPRetriever:
    """``search(queries, k)`` over HTTP; a drop-in for a local index.

    Thread-safe (one pooled ``httpx.Client``), so async callers can use ``asyncio.to_thread``.
    """

    kind = "http"

    def __init__(self, cfg: HTTPRetrieverConfig, *, transport: httpx.BaseTransport | None = None) -> None:
        self.cfg = cfg
        self.url = _endpoint(cfg.url)
        self._shown_url = _redact(self.url)
        headers = {"Accept": "application/json", "User-Agent": "sagegen-http-retriever"}
        key = os.environ.get(cfg.api_key_env, "").strip() if cfg.api_key_env else ""
        register_secret(key)  # masked in any error text (sagegen.errors.scrub)
        if key:
            # Sent as a bearer token; our server also accepts X-API-Key. Search-R1's ignores it.
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(timeout=cfg.timeout, headers=headers, transport=transport)
        self._lock = threading.Lock()
        self._closed = False

    # -- Retriever protocol ------------------------------------------------------------------

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        if isinstance(queries, str):
            raise TypeError("search() takes a sequence of queries, not one string")
        if k < 1:
            raise SagegenError(f"k must be at least 1, got {k}")
        queries = list(queries)
        results: list[list[Hit]] = []
        for start in range(0, len(queries), self.cfg.batch_size):
            results.extend(self._retrieve(queries[start : start + self.cfg.batch_size], k))
        return results

    # -- plumbing ----------------------------------------------------------------------------

    def _retrieve(self, queries: list[str], k: int) -> list[list[Hit]]:
        payload = {"queries": queries, "topk": k, "return_scores": True}
        attempts = self.cfg.max_retries + 1
        last = ""
        refused = False
        for attempt in range(attempts):
            if attempt:
                time.sleep(min(self.cfg.backoff * 2 ** (attempt - 1), _MAX_BACKOFF))
            try:
                response = self._client.post(self.url, json=payload)
            except httpx.TimeoutException as e:
                last, refused = f"timed out after {self.cfg.timeout:g}s ({type(e).__name__})", False
                continue
            except httpx.TransportError as e:
                last, refused = f"{type(e).__name__}: {e}", isinstance(e, httpx.ConnectError)
                continue
            if response.status_code in _RETRYABLE_STATUS:
                last, refused = f"HTTP {response.status_code}: {_server_message(response)}", False
                continue
            if response.status_code >= 400:
                raise SagegenError(
                    f"retrieval server {self._shown_url} rejected the request "
                    f"(HTTP {response.status_code}): {_server_message(response)}"
                )
            return self._parse(response, queries, k)
        hint = " (is the server running? start one with `sagegen serve`)" if refused else ""
        raise SagegenError(
            f"retrieval server {self._shown_url} failed after {attempts} attempt(s): {last}{hint}"
        )

    def _parse(self, response: httpx.Response, queries: list[str], k: int) -> list[list[Hit]]:
        where = f"retrieval server {self._shown_url} sent a malformed response"
        try:
            data = response.json()
        except ValueError:
            raise SagegenError(f"{where}: not JSON: {_snippet(response.text) or '(empty body)'}") from None
        if not isinstance(data, dict) or not isinstance(data.get("result"), list):
            raise SagegenError(f'{where}: expected {{"result": [...]}}, got {_snippet(str(data))}')
        result = data["result"]
        if len(result) != len(queries):
            raise SagegenError(f"{where}: {len(result)} result lists for {len(queries)} queries")
        out: list[list[Hit]] = []
        for qi, items in enumerate(result):
            if not isinstance(items, list):
                raise SagegenError(f"{where}: result[{qi}] is {type(items).__name__}, expected a list")
            out.append(
                [
                    self._hit(item, f"{where}: result[{qi}][{rank}]", rank)
                    for rank, item in enumerate(items[:k])
                ]
            )
        return out

    @staticmethod
    def _hit(item: Any, where: str, rank: int) -> Hit:
        if not isinstance(item, dict):
            raise SagegenError(f"{where} is {type(item).__name__}, expected an object")
        if "document" in item:
            doc, score = item["document"], item.get("score")
            if not isinstance(doc, dict):
                raise SagegenError(f"{where}.document is {type(doc).__name__}, expected an object")
        else:
            doc, score = item, None
        contents = doc.get("contents")
        if isinstance(contents, str):
            raw_id = doc.get("id", doc.get("docid"))
            doc_id = str(raw_id) if raw_id is not None else _content_id(contents)
            parsed = Doc.from_contents(doc_id, contents)
        elif isinstance(doc.get("text"), str):
            title = doc.get("title")
            title = title if isinstance(title, str) else ""
            raw_id = doc.get("id", doc.get("docid"))
            text = doc["text"]
            doc_id = str(raw_id) if raw_id is not None else _content_id(f"{title}\n{text}")
            parsed = Doc(id=doc_id, title=title, text=text)
        else:
            raise SagegenError(f"{where}: document has no 'contents' (or 'text') string")
        return Hit(doc=parsed, score=_score(score, where, rank))

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._client.close()
                self._closed = True

    def __enter__(self) -> HTTPRetriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HTTPRetriever(url={self._shown_url!r})"


def _content_id(contents: str) -> str:
    # Stable across runs and machines, so ledgers and traces can refer to the passage.
    return "sha1-" + hashlib.sha1(contents.encode("utf-8")).hexdigest()[:16]


def _score(value: Any, where: str, rank: int) -> float:
    if value is None:
        # No score sent: keep the server's order visible to anything that sorts by score.
        return 1.0 / (rank + 1)
    if isinstance(value, bool):
        raise SagegenError(f"{where}.score is a boolean, expected a number")
    try:
        score = float(value)  # Search-R1 documents scores loosely; numeric strings are accepted.
    except (TypeError, ValueError):
        raise SagegenError(f"{where}.score is {_snippet(repr(value), 60)}, expected a number") from None
    if math.isnan(score):
        return -math.inf
    return score
