"""Web search as a retriever: Serper (Google results) or a SearXNG instance.

For the paper's "swap the corpus for web search at test time": each organic result becomes
``Hit(Doc(id=url, title=title, text=snippet))``. The API key is read from the environment
variable named in config and is never put in an error message or log line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import httpx

from sagegen.config import WebSearchConfig
from sagegen.errors import ConfigError, SagegenError, register_secret
from sagegen.records import Doc, Hit

SERPER_URL = "https://google.serper.dev/search"


class WebSearchError(SagegenError):
    """A web search request failed (HTTP error, bad body, unreachable server)."""


class WebSearchRetriever:
    """``Retriever`` over a web search API; ``cfg.provider`` picks Serper or SearXNG."""

    def __init__(self, cfg: WebSearchConfig, *, client: httpx.Client | None = None):
        self.cfg = cfg
        self.provider = cfg.provider
        if cfg.provider == "serper":
            self.url = cfg.url or SERPER_URL
            env = cfg.api_key_env
            key = os.environ.get(env) if env else None
            if not key:
                raise ConfigError(
                    f"retrieval.web: provider serper needs an API key in the environment variable "
                    f"{env or '(retrieval.web.api_key_env is unset)'}"
                )
            register_secret(key)
            self._headers = {"X-API-KEY": key, "Content-Type": "application/json"}
        else:
            if not cfg.url:
                raise ConfigError(
                    "retrieval.web.url: provider searxng needs the instance URL, e.g. http://127.0.0.1:8888"
                )
            base = cfg.url.rstrip("/")
            self.url = base if base.endswith("/search") else base + "/search"
            env = cfg.api_key_env
            # SearXNG is usually open; a key (for a proxy in front of it) is optional.
            key = os.environ.get(env) if env else None
            register_secret(key)
            self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = client or httpx.Client(timeout=cfg.timeout, follow_redirects=True)

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        return [self._one(q, k) for q in queries]

    def close(self) -> None:
        self._client.close()

    def _one(self, query: str, k: int) -> list[Hit]:
        try:
            if self.provider == "serper":
                r = self._client.post(self.url, headers=self._headers, json={"q": query, "num": max(k, 10)})
            else:
                r = self._client.get(
                    self.url, headers=self._headers, params={"q": query, "format": "json", "pageno": 1}
                )
        except httpx.HTTPError as e:
            raise WebSearchError(
                f"{self.provider} search at {self.url} failed: {type(e).__name__}: {e}"
            ) from None
        if r.status_code != 200:
            hint = " (check the API key)" if r.status_code in (401, 403) else ""
            raise WebSearchError(
                f"{self.provider} search at {self.url} returned HTTP {r.status_code}{hint}: "
                f"{_safe_body(r.text)}"
            )
        try:
            data = r.json()
        except ValueError:
            raise WebSearchError(
                f"{self.provider} search at {self.url} returned a non-JSON body: {_safe_body(r.text)}"
            ) from None
        if not isinstance(data, dict):
            raise WebSearchError(f"{self.provider} search at {self.url}: expected a JSON object")
        results = parse_serper(data) if self.provider == "serper" else parse_searxng(data)
        return results[:k]


def _safe_body(text: str) -> str:
    return " ".join(text.split())[:200]


def _hit(url: Any, title: Any, text: Any, score: float) -> Hit | None:
    if not isinstance(url, str) or not url:
        return None
    return Hit(doc=Doc(id=url, title=str(title or "").strip(), text=str(text or "").strip()), score=score)


def parse_serper(data: dict[str, Any]) -> list[Hit]:
    """Serper's ``organic`` results (``title``, ``link``, ``snippet``, ``position``), best first.

    An ``answerBox`` (Google's direct answer) with a source link comes first, as a search user sees it.
    """
    hits: list[Hit] = []
    box = data.get("answerBox")
    if isinstance(box, dict):
        text = " - ".join(str(x) for x in (box.get("answer"), box.get("snippet")) if x)
        h = _hit(box.get("link"), box.get("title"), text, 1.0) if text else None
        if h:
            hits.append(h)
    organic = data.get("organic") or []
    for i, r in enumerate(organic if isinstance(organic, list) else []):
        if not isinstance(r, dict):
            continue
        pos = r.get("position")
        pos = pos if isinstance(pos, int) else i + 1
        h = _hit(r.get("link"), r.get("title"), r.get("snippet"), 1.0 / max(pos, 1))
        if h and all(h.doc.id != x.doc.id for x in hits):
            hits.append(h)
    return hits


def parse_searxng(data: dict[str, Any]) -> list[Hit]:
    """SearXNG's ``results`` (``url``, ``title``, ``content``, ``score``) in the engine's order."""
    hits: list[Hit] = []
    results = data.get("results") or []
    for i, r in enumerate(results if isinstance(results, list) else []):
        if not isinstance(r, dict):
            continue
        score = r.get("score")
        h = _hit(
            r.get("url"),
            r.get("title"),
            r.get("content"),
            float(score) if isinstance(score, (int, float)) else 1.0 / (i + 1),
        )
        if h and all(h.doc.id != x.doc.id for x in hits):
            hits.append(h)
    return hits
