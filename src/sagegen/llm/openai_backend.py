"""OpenAI-compatible chat backend: vLLM, SGLang, Ollama, llama.cpp server, OpenAI, Gemini (compatible API).

Direct async HTTP on httpx: the request JSON is built and the reply parsed here, with no SDK in
between (the ``openai`` SDK cost ~8 ms of CPU per call at 256 in flight, walking every message and
scanning a pool smaller than the concurrency; see bench/bench_generate.py). One ``httpx.AsyncClient``
per connection, handed out from our own free list: the pool grows to the calls in flight, every
connection stays alive between calls, and taking one is O(1). (One shared httpx client with an
unbounded pool scans all its connections for each queued request and, in a burst, opens new ones
rather than wait for an idle one: 27 ms of CPU per call at 256 in flight, measured.) The clients
are closed inside the loop that opened them, when the loop ends (``asyncio.run`` closes async
generators) or on ``aclose()``.

The retry loop is ours, so that every retry is bounded, logged, honours ``Retry-After`` with a
cap, and the final failure is one ``LLMError`` whose message never carries the API key.

Retried: HTTP 408/409/425/429 and 5xx, connection errors and resets, timeouts, and 2xx bodies that
are truncated, not JSON or not a chat completion (a flaky proxy in front of a model server produces
all of these). Any other 4xx fails at once: retrying a bad request or a bad key only burns quota.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import logging
import os
import random
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from sagegen.config import LLMConfig
from sagegen.errors import BackendError, ConfigError, LLMError, register_secret
from sagegen.llm.base import Message, note_try
from sagegen.llm.scripted import _apply_stop
from sagegen.records import Completion

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
#: Local servers (vLLM, Ollama, llama.cpp) accept any key; some proxies refuse a request without one.
PLACEHOLDER_KEY = "sk-no-key-required"
#: OpenAI rejects more than 4 stop sequences; the rest are applied to the returned text instead.
MAX_WIRE_STOPS = 4
#: Where the requests go when ``llm.base_url`` is unset (the SDK's own default and override).
DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: Idle keep-alive connections are dropped after this long: below uvicorn's 5 s (vLLM, SGLang), so
#: we close an idle connection before the server does and never send on one it is closing.
KEEPALIVE_EXPIRY = 4.0


class _Retryable(BackendError):
    """A failure worth another try; ``wait`` is the server's ``Retry-After`` when it sent one."""

    def __init__(self, message: str, wait: float | None = None, status: int | None = None):
        super().__init__(message, wait)
        self.status = status


class OpenAIBackend:
    """``LLM`` over any OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(self, cfg: LLMConfig):
        if not cfg.model:
            raise ConfigError("llm.model: the openai backend needs a model name (e.g. llm.model=gpt-4o-mini)")
        self.cfg = cfg
        self.model = cfg.model
        self.base_url = cfg.base_url  # None means OPENAI_BASE_URL, else api.openai.com
        root = cfg.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        self._endpoint = root.rstrip("/") + "/chat/completions"
        self.name = f"openai:{cfg.model}"
        key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        if not key:
            if self._is_local():
                key = PLACEHOLDER_KEY
            else:
                where = self.base_url or "the OpenAI API"
                raise ConfigError(
                    f"llm.api_key_env: environment variable {cfg.api_key_env!r} is not set; "
                    f"{where} needs an API key (set it, or point llm.base_url at a local server)"
                )
        self._key = key
        register_secret(key)  # masked in every error text, retry warnings included
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                         "Accept": "application/json"}
        # Clients of one event loop: their connections belong to the loop that opened them.
        self._clients: list[httpx.AsyncClient] = []  # all of them, for closing
        self._idle: list[httpx.AsyncClient] = []  # those with no call in flight (most recent last)
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._closer: AsyncIterator[None] | None = None  # closes the clients when their loop ends
        self._ssl: ssl.SSLContext | None = None
        self.calls = 0  # HTTP requests sent, retries included
        self.retries = 0

    def cache_identity(self) -> dict[str, Any]:
        """What besides the call itself decides the answer; the call cache keys on it."""
        return {"base_url": self.base_url, "extra_body": self.cfg.extra_body,
                "max_tokens_param": self.cfg.max_tokens_param, "send_seed": self.cfg.send_seed}

    def _is_local(self) -> bool:
        """A server on this machine or a private network (vLLM, Ollama, ...), which needs no key."""
        if not self.base_url:
            return False
        host = (urllib.parse.urlsplit(self.base_url).hostname or "").lower()
        if host == "localhost" or (host and "." not in host and ":" not in host):  # e.g. a compose service
            return True
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return ip.is_loopback or ip.is_private or ip.is_unspecified

    async def _get_client(self) -> httpx.AsyncClient:
        """An idle connection's client, or a new one: there are as many as calls have been in flight."""
        loop = asyncio.get_running_loop()
        if self._client_loop is not loop:
            self._clients, self._idle, self._client_loop = [], [], loop
            # A started async generator is closed by the loop's own shutdown (asyncio.run,
            # pytest's runner): its ``finally`` then closes the clients while the loop still runs,
            # instead of garbage-collected clients failing later with "Event loop is closed".
            self._closer = _close_at_loop_end(self._clients)
            await self._closer.__anext__()
        if self._idle:
            return self._idle.pop()  # the most recently used: its connection is the least likely stale
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1,
                              keepalive_expiry=KEEPALIVE_EXPIRY)
        if self._ssl is None:  # built once: each client building its own costs ~30 ms of CPU
            self._ssl = httpx.create_ssl_context()
        client = httpx.AsyncClient(limits=limits, timeout=self.cfg.timeout, headers=self._headers,
                                   verify=self._ssl)
        self._clients.append(client)
        return client

    async def aclose(self) -> None:
        closer, self._closer, self._client_loop = self._closer, None, None
        self._clients, self._idle = [], []
        if closer is not None:
            await closer.aclose()  # type: ignore[attr-defined]

    def close(self) -> None:
        """After the loop: its shutdown has closed the clients; only the references are left."""
        self._closer, self._client_loop, self._clients, self._idle = None, None, [], []

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 512,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> Completion:
        params: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "temperature": temperature,
            self.cfg.max_tokens_param: max_tokens,
        }
        stops = list(stop or [])
        if stops:
            params["stop"] = stops[:MAX_WIRE_STOPS]
        if seed is not None and self.cfg.send_seed:
            params["seed"] = seed
        if tools:
            params["tools"] = list(tools)
        if self.cfg.extra_body:
            params.update(self.cfg.extra_body)  # top-level fields, over ours (as the SDK merged them)

        attempts = self.cfg.max_retries + 1
        started = time.monotonic()
        last = ""
        for attempt in range(attempts):
            t0 = time.monotonic()
            try:
                data = await self._request(params)
                comp = self._to_completion(data, stops, time.monotonic() - t0)
                note_try(200, time.monotonic() - t0)
                return comp
            except LLMError as e:  # not retried (a 4xx other than the retryable ones)
                note_try(getattr(e, "status", None), time.monotonic() - t0, 0.0, str(e))
                raise
            except _Retryable as e:
                last = str(e)
                if attempt + 1 >= attempts:
                    note_try(e.status, time.monotonic() - t0, 0.0, last)
                    break
                wait = self._wait(attempt, e.wait)
                note_try(e.status, time.monotonic() - t0, wait, last)
                self.retries += 1
                log.warning("%s: %s; retry %d/%d in %.1fs", self.name, last, attempt + 1,
                            attempts - 1, wait)
                await asyncio.sleep(wait)
        raise LLMError(self._scrub(
            f"{self.name} at {self.base_url or 'api.openai.com'}: gave up after {attempts} attempt(s) "
            f"in {time.monotonic() - started:.1f}s; last error: {last}"
        ))

    def _wait(self, attempt: int, retry_after: float | None) -> float:
        cap = self.cfg.retry_max_wait
        if retry_after is not None:
            # The server said when; a small jitter keeps many waiting callers from returning together.
            return min(cap, retry_after) + random.uniform(0, 0.1 * self.cfg.retry_backoff)
        # Exponential backoff with "equal jitter": never shorter than half the nominal wait.
        nominal = min(cap, self.cfg.retry_backoff * (2**attempt))
        return nominal / 2 + random.uniform(0, nominal / 2)

    async def _request(self, params: dict[str, Any]) -> dict[str, Any]:
        """One HTTP round trip; returns the parsed body or raises ``_Retryable`` / ``LLMError``."""
        client = await self._get_client()
        owner = self._clients
        content = json.dumps(params, ensure_ascii=False).encode()
        self.calls += 1
        try:
            # httpx's timeout is per socket operation; this bounds the whole call, trickling bodies included.
            resp = await asyncio.wait_for(client.post(self._endpoint, content=content),
                                          timeout=self.cfg.timeout)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            raise _Retryable(f"timed out after {self.cfg.timeout:g}s") from None
        except httpx.TransportError as e:  # refused, reset, a body cut short of its length, ...
            raise _Retryable(f"connection error ({type(e).__name__}: {e})") from None
        except httpx.HTTPError as e:
            raise _Retryable(f"{type(e).__name__}: {e}") from None
        finally:
            # Back to the free list, failed or not (httpcore drops a broken connection and the client
            # reconnects on its next call), unless aclose() retired this loop's clients meanwhile.
            if owner is self._clients:
                self._idle.append(client)
        status, body = resp.status_code, resp.content
        if not 200 <= status < 300:
            msg = f"HTTP {status}: {_error_text(body)}"
            if status in RETRYABLE_STATUS or status >= 500:
                raise _Retryable(msg, _retry_after(resp.headers), status)
            fatal = LLMError(self._scrub(
                f"{self.name} at {self.base_url or 'api.openai.com'}: {msg} (not retried)"
            ))
            fatal.status = status  # type: ignore[attr-defined]
            raise fatal
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise _Retryable(
                f"HTTP {status} with a body that is not JSON ({len(body)} bytes: {_snippet(body)})",
                status=status,
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
            raise _Retryable(f"HTTP {status} body is not a chat completion: {_snippet(body)}", status=status)
        return data

    def _to_completion(self, data: dict[str, Any], stops: list[str], seconds: float) -> Completion:
        try:
            return self._read_completion(data, stops, seconds)
        except (AttributeError, TypeError, ValueError):  # a field of the wrong type somewhere inside
            raise _Retryable(f"body is not a chat completion: {_snippet(json.dumps(data).encode())}",
                             status=200) from None

    def _read_completion(self, data: dict[str, Any], stops: list[str], seconds: float) -> Completion:
        choice = data["choices"][0]
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise _Retryable(f"chat completion without a message: {_snippet(json.dumps(data).encode())}",
                             status=200)
        text = message.get("content") or ""
        if not isinstance(text, str):  # some servers send content parts
            text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
        calls = []
        for i, tc in enumerate(message.get("tool_calls") or ()):
            fn = tc.get("function") or {}
            calls.append({"id": tc.get("id") or f"call_{i}", "name": fn.get("name", ""),
                          "arguments": _arguments(fn.get("arguments"))})
        usage = data.get("usage") or {}
        return Completion(
            text=_apply_stop(text, stops),  # also covers stops beyond the 4 sent on the wire
            model=str(data.get("model") or self.model),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=choice.get("finish_reason"),
            seconds=seconds,
            tool_calls=tuple(calls),
        )

    def _scrub(self, text: str) -> str:
        """Error bodies sometimes echo the key (OpenAI's 401 does, partially): never pass it on."""
        if self._key and self._key != PLACEHOLDER_KEY:
            text = text.replace(self._key, "***")
        return text


def _arguments(raw: Any) -> dict[str, Any] | str:
    """Tool arguments as a dict when they are a JSON object, else the raw string (malformed calls
    are the caller's to record, not ours to hide)."""
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
        except ValueError:
            return raw
        return parsed if isinstance(parsed, dict) else raw
    return ""


def _retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (delta seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


async def _close_at_loop_end(clients: list[httpx.AsyncClient]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for client in clients:
            await client.aclose()


def _error_text(body: bytes) -> str:
    """The server's own message (OpenAI's ``{"error": {"message": ...}}`` and its variants), else the
    start of the body."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        data = None
    if isinstance(data, dict):
        err = data.get("error", data)
        msg = err.get("message") if isinstance(err, dict) else err
        if msg:
            return str(msg)[:300]
    return _snippet(body)


def _snippet(body: bytes, n: int = 120) -> str:
    text = body.decode("utf-8", "replace").strip().replace("\n", " ")
    return repr(text[:n] + ("…" if len(text) > n else ""))
