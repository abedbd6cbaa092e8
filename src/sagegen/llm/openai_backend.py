"""OpenAI-compatible chat backend: vLLM, SGLang, Ollama, llama.cpp server, OpenAI, Gemini (compatible API).

Direct async HTTP: the request JSON is built and the reply parsed here, with no SDK in between
(the ``openai`` SDK cost ~8 ms of CPU per call at 256 in flight, walking every message and
scanning a pool smaller than the concurrency; see bench/bench_generate.py). Requests go out through
``sagegen.llm.transport`` (aiohttp's keep-alive pool, one per event loop, which never hands out a
connection holding stray bytes; TLS via ``SSL_CERT_FILE``; environment proxies; gzip decoded).

``llm.base_url`` may be a list of replicas of one model (vLLM / SGLang servers): each request goes
to the endpoint with the fewest requests in flight (one free list per endpoint, so that is a scan
of a few counters); one that fails with a connection error or a 5xx is set aside for a backoff
(doubling while it keeps failing) and the request is retried at once on another, as a new try.
When every endpoint is set aside the usual backoff applies, on the one back soonest: the same
behaviour as one endpoint, ending in the pipeline's outage handling.

The retry loop is ours, so that every retry is bounded, logged, honours ``Retry-After`` with a
cap, and the final failure is one ``LLMError`` whose message never carries the API key.

Reasoning models (docs/models.md): the thinking is read wherever the server puts it
(``sagegen.llm.reasoning``) and kept out of ``Completion.text``; stop strings go on the wire only once
the model has answered without proof that it thinks (a server matches them inside the thinking), and a
reply whose stop fired inside a thought (no answer, some thinking) is sent again without them; each provider's
request rules come from ``sagegen.llm.providers``, and a parameter a 400 names as unsupported is
dropped for this backend and the request resent at once (recorded in ``notes``).

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
import re
import ssl
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

from sagegen.config import LLMConfig
from sagegen.errors import BackendError, ConfigError, LLMError, register_secret
from sagegen.llm.base import LLM, CallOptions, Message, apply_stop, note_try, tool_arguments
from sagegen.llm.providers import detect
from sagegen.llm.reasoning import lone_close, split_reasoning
from sagegen.llm.transport import HTTPConnectionError, Transport
from sagegen.records import Completion

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
#: Local servers (vLLM, Ollama, llama.cpp) accept any key; some proxies refuse a request without one.
PLACEHOLDER_KEY = "sk-no-key-required"
#: OpenAI rejects more than 4 stop sequences; the rest are applied to the returned text instead.
MAX_WIRE_STOPS = 4
#: Where the requests go when ``llm.base_url`` is unset (the SDK's own default and override).
DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: ``asyncio.wait_for`` makes a task per call before Python 3.12; ``asyncio.timeout`` (3.11+) does not.
_timeout = getattr(asyncio, "timeout", None)


class _Retryable(BackendError):
    """A failure worth another try; ``wait`` is the server's ``Retry-After`` when it sent one."""

    def __init__(
        self, message: str, wait: float | None = None, status: int | None = None, endpoint_down: bool = False
    ):
        super().__init__(message, wait)
        self.status = status
        #: A connection error or a 5xx: the endpoint is set aside and the next try goes elsewhere.
        self.endpoint_down = endpoint_down


class _Refused(LLMError):
    """A reply refused for good (4xx, not retried): its status and body, for ``_adapt`` to read the
    parameter the server names."""

    def __init__(self, message: str, status: int, body: bytes):
        super().__init__(message)
        self.status, self.body = status, body


def endpoint_label(url: str) -> str:
    """The endpoint as stored and shown: scheme, host, port and path; never userinfo or a query."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path.rstrip('/')}"


class _Endpoint:
    """One server of ``llm.base_url``: its URL and its counters (the transport holds the connections)."""

    def __init__(self, root: str):
        parts = urllib.parse.urlsplit(root)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"llm.base_url: {_masked_url(root)!r} is not an http(s) URL; give the server's "
                "API root with scheme and host, e.g. http://127.0.0.1:8000/v1"
            )
        if parts.password:
            register_secret(parts.password)
        self.label = endpoint_label(root)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.http_url = self.label + "/chat/completions" + (f"?{parts.query}" if parts.query else "")
        self.in_flight = 0
        self.calls = 0  # requests sent here
        self.failures = 0  # of them, connection errors and 5xx
        self.down_until = 0.0  # set aside until this monotonic time
        self.down_streak = 0  # failures in a row, for the set-aside's backoff

    def counts(self) -> dict[str, Any]:
        return {
            "endpoint": self.label,
            "calls": self.calls,
            "failures": self.failures,
            "in_flight": self.in_flight,
        }


class OpenAIBackend(LLM):
    """``LLM`` over any OpenAI-compatible ``/chat/completions`` endpoint, or several replicas of one."""

    def __init__(self, cfg: LLMConfig):
        if not cfg.model:
            raise ConfigError("llm.model: the openai backend needs a model name (e.g. llm.model=gpt-4o-mini)")
        self.cfg = cfg
        self.model = cfg.model
        self.base_url = cfg.base_url  # None means OPENAI_BASE_URL, else api.openai.com
        if isinstance(cfg.base_url, list):
            if not cfg.base_url:
                raise ConfigError("llm.base_url: an empty list; give one URL or a list of replicas")
            roots = list(cfg.base_url)
        else:
            roots = [cfg.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL]
        self.name = f"openai:{cfg.model}"
        self.endpoints = [_Endpoint(r.rstrip("/")) for r in roots]
        self.provider = detect(cfg.provider, roots[0], cfg.model)
        self._token_param = (
            self.provider.token_param if cfg.max_tokens_param == "auto" else cfg.max_tokens_param
        )
        self._return_reasoning = self.provider.return_reasoning
        #: Request fields a server refused as unsupported (a 400 naming them): never sent again.
        self._dropped: set[str] = set()
        #: Whether the model thinks (None: no reply yet); decides whether stops go on the wire.
        self.thinks: bool | None = None
        #: Replies have shown a lone ``</think>``: the chat template opens the block in the prompt.
        self._opens_in_prompt = False
        #: What this backend learned and changed on the way, once each (doctor and the run's end show them).
        self.notes: list[str] = []
        key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        if not key:
            if self._is_local():
                key = PLACEHOLDER_KEY
            else:
                where = self._where() if self.base_url else "the OpenAI API"
                raise ConfigError(
                    f"llm.api_key_env: environment variable {cfg.api_key_env!r} is not set; "
                    f"{where} needs an API key (set it, or point llm.base_url at a local server)"
                )
        self._key = key
        register_secret(key)  # masked in every error text, retry warnings included
        self._headers = {
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        self._transport = Transport()  # its pool belongs to the event loop of the calls
        self._turn = 0  # where the next endpoint scan starts

    def cache_identity(self) -> dict[str, Any]:
        """What besides the call itself decides the answer; the call cache keys on it. Not the URL:
        replicas of one model answer alike, so a call cached through one server is a hit through
        another (``name`` carries the model; llm.base_url is volatile on resume for the same reason)."""
        return {
            "extra_body": self.cfg.extra_body,
            "send_seed": self.cfg.send_seed,
            "reasoning_effort": self.cfg.reasoning_effort,
        }

    def endpoint_counts(self) -> list[dict[str, Any]]:
        """Per endpoint: requests sent, connection errors and 5xx among them, requests in flight now."""
        return [ep.counts() for ep in self.endpoints]

    def _where(self) -> str:
        return ", ".join(ep.label for ep in self.endpoints) if self.base_url else "api.openai.com"

    def _is_local(self) -> bool:
        """Servers on this machine or a private network (vLLM, Ollama, ...), which need no key."""
        if not self.base_url:
            return False
        urls = self.base_url if isinstance(self.base_url, list) else [self.base_url]
        return all(_is_local_url(u) for u in urls)

    def _pick(self) -> _Endpoint:
        """The endpoint with the fewest requests in flight among those not set aside (ties taken in
        turn, so sequential calls use every replica too); when all are set aside, the one back soonest."""
        eps = self.endpoints
        n = len(eps)
        if n == 1:
            return eps[0]
        now = time.monotonic()
        start = self._turn
        self._turn = (start + 1) % n
        best: _Endpoint | None = None
        for k in range(n):
            ep = eps[(start + k) % n]
            if ep.down_until <= now and (best is None or ep.in_flight < best.in_flight):
                best = ep
        return best if best is not None else min(eps, key=lambda ep: ep.down_until)

    def _set_aside(self, ep: _Endpoint) -> None:
        ep.failures += 1
        ep.down_streak += 1
        wait = min(self.cfg.retry_max_wait, self.cfg.retry_backoff * 2 ** (ep.down_streak - 1))
        ep.down_until = time.monotonic() + wait
        if len(self.endpoints) > 1:
            log.warning("%s: endpoint %s set aside for %.1fs", self.name, ep.label, wait)

    def _others_up(self, ep: _Endpoint) -> bool:
        now = time.monotonic()
        return any(o is not ep and o.down_until <= now for o in self.endpoints)

    async def aclose(self) -> None:
        await self._transport.aclose()

    def close(self) -> None:
        """After the loop: its shutdown has closed the connections; only the references are left."""
        self._transport.close()

    def note(self, text: str) -> None:
        """Record an adaptation once (a dropped parameter, stops taken off the wire)."""
        if text not in self.notes:
            self.notes.append(text)
            log.warning("%s: %s", self.name, text)

    def learn_from(self, other: OpenAIBackend) -> None:
        """Take what ``other`` (the same model) learned from the server: refused fields, the cap's name."""
        self._dropped, self._token_param = set(other._dropped), other._token_param

    def request_rules(self) -> str:
        """How this backend writes a request now, in words (``sagegen doctor`` prints it)."""
        temperature = self.provider.sampling and "temperature" not in self._dropped
        return (
            f"provider {self.provider.name}; token cap as {self._token_param}; temperature "
            f"{'sent' if temperature else 'not sent'}; stops "
            f"{'on the wire' if self.wire_stops() else 'applied to the answer text only'}; "
            f"reasoning_effort {self.cfg.reasoning_effort or 'server default'}"
        )

    def wire_stops(self) -> bool:
        """Whether this request's stop strings go on the wire (docs/models.md, "Stop strings")."""
        if self.cfg.wire_stops != "auto":
            return self.cfg.wire_stops == "on"
        if "stop" in self._dropped or self.provider.wire_stops is False:
            return False
        # Only once the model has answered without thinking: a server matches stops inside a thought.
        return self.thinks is False

    def _params(
        self, messages: Sequence[Message], o: CallOptions, send_stops: bool, cap: int | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in messages]}
        if self.provider.sampling:
            params["temperature"] = o.temperature
        params[self._token_param] = cap or o.max_tokens
        if o.stop and send_stops:
            params["stop"] = list(o.stop)[:MAX_WIRE_STOPS]
        if o.seed is not None and self.cfg.send_seed:
            params["seed"] = o.seed
        if o.tools:
            params["tools"] = list(o.tools)
        if self.cfg.reasoning_effort and self.provider.effort_field:
            params[self.provider.effort_field] = self.cfg.reasoning_effort
        if self.cfg.extra_body:
            params.update(self.cfg.extra_body)  # top-level fields, over ours (as the SDK merged them)
        for key in self._dropped:
            params.pop(key, None)
        return params

    async def _complete(self, messages: Sequence[Message], o: CallOptions) -> Completion:
        stops = list(o.stop)
        attempts = self.cfg.max_retries + 1
        started = time.monotonic()
        last = ""
        send_stops = self.wire_stops()
        cap: int | None = None  # the cap lowered to what the server's context has room for
        content = json.dumps(self._params(messages, o, send_stops), ensure_ascii=False).encode()
        attempt = adapted = 0
        while attempt < attempts:
            ep = self._pick()
            t0 = time.monotonic()
            try:
                data = await self._request(ep, content)
                comp = self._to_completion(data, stops, time.monotonic() - t0)
                ep.down_streak, ep.down_until = 0, 0.0
                note_try(200, time.monotonic() - t0)
                if send_stops and stops and self._stopped_in_thought(comp):
                    # The server matched a stop inside the thinking: no answer came. The same call
                    # without wire stops (applied to the answer text here instead) is the call asked for.
                    self.thinks = True
                    self.note(
                        "a stop string fired inside the model's thinking (no answer came back): "
                        "stops are applied to the answer text only from now on"
                    )
                    send_stops = False
                    content = json.dumps(self._params(messages, o, False, cap), ensure_ascii=False).encode()
                    continue
                return comp
            except LLMError as e:  # not retried (a 4xx other than the retryable ones)
                note_try(getattr(e, "status", None), time.monotonic() - t0, 0.0, str(e))
                room = _context_room(getattr(e, "body", b""), cap or o.max_tokens)
                if adapted < 6 and (room or self._adapt(e)):  # fixable here: send again at once
                    adapted += 1
                    cap = room or cap
                    params = self._params(messages, o, send_stops, cap)
                    content = json.dumps(params, ensure_ascii=False).encode()
                    continue
                raise
            except _Retryable as e:
                last = str(e)
                if e.endpoint_down:
                    self._set_aside(ep)
                if attempt + 1 >= attempts:
                    note_try(e.status, time.monotonic() - t0, 0.0, last)
                    break
                # Another endpoint is up: the request goes there at once (a try like any other).
                wait = 0.0 if e.endpoint_down and self._others_up(ep) else self._wait(attempt, e.wait)
                attempt += 1
                note_try(e.status, time.monotonic() - t0, wait, last)
                log.warning(
                    "%s: %s; retry %d/%d in %.1fs",
                    self.name,
                    f"{ep.label}: {last}" if len(self.endpoints) > 1 else last,
                    attempt,
                    attempts - 1,
                    wait,
                )
                if wait:
                    await asyncio.sleep(wait)
        raise LLMError(
            self._scrub(
                f"{self.name} at {self._where()}: gave up after {attempts} attempt(s) "
                f"in {time.monotonic() - started:.1f}s; last error: {last}"
            )
        )

    def _stopped_in_thought(self, comp: Completion) -> bool:
        """A reply that thought and then stopped with no answer and no tool call: the wire stop fired
        in the thinking (a reply cut at its cap says ``length`` and is the caller's to handle)."""
        return (
            comp.finish_reason == "stop"
            and not comp.text.strip()
            and not comp.tool_calls
            and bool(comp.reasoning)
        )

    def _adapt(self, e: LLMError) -> bool:
        """A 400 that names a parameter as unsupported: stop sending it (or send the token cap under
        the name the server asks for). True when the request is worth resending."""
        if getattr(e, "status", None) != 400:
            return False
        body = getattr(e, "body", b"")
        param, message = _error_param(body)
        low = message.lower()
        if "reasoning_content" in low and not self._return_reasoning:  # DeepSeek behind another host
            # This history lacks it already (no resend helps); turns from now on carry it back.
            self._return_reasoning = True
            self.note(
                "the server requires reasoning_content back on tool-call turns: it is sent back "
                "from now on (set llm.provider=deepseek to have it from the first call)"
            )
            return False
        if not any(w in low for w in _UNSUPPORTED_WORDS):
            return False
        if not param:
            param = next((p for p in _ADAPTABLE if re.search(rf"\b{p}\b", low)), "")
        # Calls in flight may meet the same refusal after another one adapted: they just resend.
        if param == "max_tokens":
            if self._token_param == "max_tokens":
                self._token_param = "max_completion_tokens"
                self.note(f"max_tokens refused ({message[:120]}): the cap is sent as max_completion_tokens")
            return True
        if param in _ADAPTABLE:
            if param not in self._dropped:
                self._dropped.add(param)
                self.note(f"{param} refused by the server ({message[:120]}): no longer sent")
            return True
        return False

    def _wait(self, attempt: int, retry_after: float | None) -> float:
        cap = self.cfg.retry_max_wait
        if retry_after is not None:
            # The server said when; a small jitter keeps many waiting callers from returning together.
            return min(cap, retry_after) + random.uniform(0, 0.1 * self.cfg.retry_backoff)
        # Exponential backoff with "equal jitter": never shorter than half the nominal wait.
        nominal = min(cap, self.cfg.retry_backoff * (2**attempt))
        return nominal / 2 + random.uniform(0, nominal / 2)

    async def _request(self, ep: _Endpoint, content: bytes) -> dict[str, Any]:
        """One HTTP round trip; returns the parsed body or raises ``_Retryable`` / ``LLMError``."""
        ep.in_flight += 1  # before any await: calls picking an endpoint meanwhile see this one
        ep.calls += 1
        timeout = self.cfg.timeout
        post = self._transport.request("POST", ep.http_url, self._headers, content)
        try:
            # One deadline for the whole call, a body trickling in included; a call cut by it closes
            # its connection (the transport never reuses one mid-response).
            if _timeout is not None:
                async with _timeout(timeout):
                    resp = await post
            else:  # Python 3.10
                resp = await asyncio.wait_for(post, timeout)
        except asyncio.TimeoutError:  # (TimeoutError is an OSError: first)
            raise _Retryable(f"timed out after {timeout:g}s") from None
        except ssl.SSLCertVerificationError as e:  # the same certificate next time: no retry helps
            raise LLMError(
                self._scrub(
                    f"{self.name} at {ep.label}: TLS certificate not trusted ({e.verify_message}); "
                    "for a private CA, point SSL_CERT_FILE at its PEM bundle (not retried)"
                )
            ) from None
        except (OSError, HTTPConnectionError) as e:
            # refused, reset, a TLS failure, a body cut short of its length, broken HTTP, ...
            raise _Retryable(f"connection error ({type(e).__name__}: {e})", endpoint_down=True) from None
        except ValueError as e:  # a request that is not valid HTTP (a header with a newline, ...)
            raise LLMError(self._scrub(f"{self.name} at {self._where()}: {e}")) from None
        finally:
            ep.in_flight -= 1
        status, headers, body = resp.status, resp.headers, resp.body
        if not 200 <= status < 300:
            msg = f"HTTP {status}: {_error_text(body)}"
            if status in RETRYABLE_STATUS or status >= 500:
                raise _Retryable(msg, _retry_after(headers), status, endpoint_down=status >= 500)
            raise _Refused(self._scrub(f"{self.name} at {self._where()}: {msg} (not retried)"), status, body)
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
            raise _Retryable(
                f"body is not a chat completion: {_snippet(json.dumps(data).encode())}", status=200
            ) from None

    def _read_completion(self, data: dict[str, Any], stops: list[str], seconds: float) -> Completion:
        choice = data["choices"][0]
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise _Retryable(
                f"chat completion without a message: {_snippet(json.dumps(data).encode())}", status=200
            )
        text = _content_text(message.get("content"))
        # The thinking: a field (vLLM >= 0.11 and Ollama: reasoning; SGLang, DeepSeek, older vLLM:
        # reasoning_content), or <think> text in content (a server without a reasoning parser).
        field = next((k for k in ("reasoning_content", "reasoning") if isinstance(message.get(k), str)), None)
        lone = lone_close(text)
        self._opens_in_prompt |= lone
        thought, text = self._thought_and_answer(text, has_field=field is not None)
        reasoning = "\n\n".join(t for t in (message.get(field) if field else "", thought) if t)
        calls = _tool_calls(message.get("tool_calls") or ())
        usage = data.get("usage") or {}
        reasoning_tokens = _reasoning_tokens(usage)
        self._note_thinking(bool(field and message.get(field)) or lone or bool(reasoning_tokens))
        # Only a provider that requires the thinking back on a tool-call turn gets it in the history.
        extra = (
            {"reasoning_content": message[field]}
            if calls and field and message.get(field) and self._return_reasoning
            else {}
        )
        return Completion(
            text=apply_stop(text, stops),  # stops on the answer: covers those not sent on the wire
            model=str(data.get("model") or self.model),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=choice.get("finish_reason"),
            seconds=seconds,
            tool_calls=tuple(calls),
            reasoning=reasoning,
            reasoning_tokens=reasoning_tokens,
            assistant_extra=extra,
        )

    def _thought_and_answer(self, text: str, *, has_field: bool) -> tuple[str, str]:
        """(thinking, answer) of a reply's content; with ``think_in_content: protocol`` all of it is
        the answer (a model trained on Search-R1's own <think> tags)."""
        if self.cfg.think_in_content != "reasoning":
            return "", text
        if self._opens_in_prompt and not has_field and "think>" not in text.lower():
            # A template that opens <think> in the prompt: a reply without </think> never left its
            # thought (cut at the cap): all of it is thinking, none of it an answer.
            return text.strip(), ""
        return split_reasoning(text)

    def _note_thinking(self, proof: bool) -> None:
        """Whether the model thinks: proof (a reasoning field, a lone </think>, reasoning tokens) once
        is enough; a reply without proof only says so while nothing proved it."""
        if proof:
            self.thinks = True
        elif self.thinks is None:
            self.thinks = False

    def _scrub(self, text: str) -> str:
        """Error bodies sometimes echo the key (OpenAI's 401 does, partially): never pass it on."""
        if self._key and self._key != PLACEHOLDER_KEY:
            text = text.replace(self._key, "***")
        return text


#: A 400's wording when it refuses a parameter (OpenAI: "Unsupported parameter", "Unsupported value:
#: 'temperature' does not support 0.7 with this model. Only the default (1) value is supported.";
#: vLLM/pydantic: "Extra inputs are not permitted").
_UNSUPPORTED_WORDS = (
    "unsupported",
    "not supported",
    "does not support",
    "only the default",
    "not permitted",
    "unrecognized",
    "unknown parameter",
    "not allowed",
)
#: Request fields sagegen may stop sending when a server refuses them (never model, messages, tools).
_ADAPTABLE = ("max_tokens", "temperature", "stop", "seed", "reasoning_effort")


_CONTEXT = re.compile(r"maximum context length is (\d+)", re.IGNORECASE)
_INPUT = re.compile(
    r"(\d+) (?:tokens )?in the messages|has (\d+) input tokens|(\d+) input tokens", re.IGNORECASE
)


def _context_room(body: bytes, asked: int) -> int | None:
    """A 400 saying prompt + cap exceed the model's context (vLLM, SGLang: "maximum context length is
    8192 tokens ... 808 in the messages"): the cap that fits, if any room is left; else None."""
    _, message = _error_param(body) if body else ("", "")
    ctx, used = _CONTEXT.search(message), _INPUT.search(message)
    if ctx is None or used is None:
        return None
    room = int(ctx.group(1)) - int(next(g for g in used.groups() if g)) - 8
    return room if 16 <= room < asked else None


def _error_param(body: bytes) -> tuple[str, str]:
    """(the refused parameter where the error names it in ``param``, the error's message)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "", body.decode("utf-8", "replace")[:500]
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict):
        param = err.get("param")
        return (param if isinstance(param, str) else ""), str(err.get("message") or err)[:500]
    return "", str(err)[:500]


def _content_text(content: Any) -> str:
    """A message's content as text: a string, or the text of its content parts (some servers)."""
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def _tool_calls(raw: Any) -> list[dict[str, Any]]:
    """The reply's tool calls as sagegen keeps them; Gemini 3's thought signature (``extra_content``)
    rides along, since it must come back with the call."""
    calls = []
    for i, tc in enumerate(raw):
        fn = tc.get("function") or {}
        call = {
            "id": tc.get("id") or f"call_{i}",
            "name": fn.get("name", ""),
            "arguments": tool_arguments(fn.get("arguments")),
        }
        if tc.get("extra_content") is not None:
            call["extra_content"] = tc["extra_content"]
        calls.append(call)
    return calls


def _reasoning_tokens(usage: dict[str, Any]) -> int:
    """Hidden reasoning tokens a provider reports (OpenAI, Gemini: ``completion_tokens_details``)."""
    details = usage.get("completion_tokens_details") or {}
    return int(details.get("reasoning_tokens") or 0) if isinstance(details, dict) else 0


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


def _is_local_url(url: str) -> bool:
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    if host == "localhost" or (host and "." not in host and ":" not in host):  # e.g. a compose service
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_unspecified


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


def _masked_url(url: str) -> str:
    """``url`` as written, for an error about a URL that may not even parse (``endpoint_label`` would
    rebuild it from parts it lacks): everything from the first ``:`` of a ``user:password@`` up to the
    last ``@`` is masked. Found by position, not by parsing, so a malformed URL never shows its password."""
    head, at, rest = url.rpartition("@")
    if not at:
        return url
    start = head.find("//") + 2 if "//" in head else 0
    user, colon, _ = head[start:].partition(":")
    return f"{head[:start]}{user}:***@{rest}" if colon else url
