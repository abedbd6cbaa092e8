"""The OpenAI-compatible backend against real HTTP servers on loopback.

Fault tests run against ``FaultServer`` with its fast fake model: every failure mode is a real
socket event, and the server counts requests so the retry bounds are checked exactly. One slow
test puts the same proxy in front of llama-cpp-python's own OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
import email.utils
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.fault_server import BADJSON, NONJSON, NOTCOMPLETION, RESET, TRUNCATE, FaultServer, sleep, status
from helpers.keepalive_server import KeepAliveServer
from helpers.llama_server import running_llama_server
from sagegen.config import LLMConfig
from sagegen.errors import ConfigError, LLMError
from sagegen.llm.base import collect_tries
from sagegen.llm.factory import build_llm
from sagegen.llm.openai_backend import OpenAIBackend, _retry_after

KEY = "sk-test-9f8e7d6c5b4a39281706SECRET"
MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "ping"}]


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SAGEGEN_TEST_LLM_KEY", KEY)
    return "SAGEGEN_TEST_LLM_KEY"


def backend(url: str, key_env: str | None, **kw: object) -> OpenAIBackend:
    params: dict[str, object] = {
        "backend": "openai",
        "model": "fake-model",
        "base_url": url,
        "api_key_env": key_env,
        "timeout": 5.0,
        "max_retries": 3,
        "retry_backoff": 0.01,
        "retry_max_wait": 5.0,
        "cache": False,
    }
    params.update(kw)
    return OpenAIBackend(LLMConfig(**params))  # type: ignore[arg-type]


async def test_success_records_usage_and_sends_params(key_env: str) -> None:
    with FaultServer() as srv:
        llm = backend(srv.url, key_env)
        comp = await llm.complete(MSGS, max_tokens=33, temperature=0.3, stop=["\n\n"], seed=7)
        # Stops go on the wire once the model has answered without proof that it thinks (docs/models.md).
        await llm.complete(MSGS, max_tokens=33, temperature=0.3, stop=["\n\n"], seed=7)
    assert comp.text == "echo: ping"
    assert (comp.prompt_tokens, comp.completion_tokens) == (7, 3)
    assert comp.finish_reason == "stop" and comp.seconds > 0 and not comp.cached
    assert llm.name == "openai:fake-model"
    first, second = srv.requests
    assert first["path"] == "/v1/chat/completions"
    assert first["headers"]["authorization"] == f"Bearer {KEY}"
    body = first["json"]
    assert body["messages"] == MSGS
    assert (body["max_tokens"], body["temperature"], body["seed"]) == (33, 0.3, 7) and "stop" not in body
    assert second["json"]["stop"] == ["\n\n"]


async def test_transient_5xx_then_success(key_env: str) -> None:
    with FaultServer([status(500), status(503), status(502)]) as srv, collect_tries() as tries:
        llm = backend(srv.url, key_env)
        comp = await llm.complete(MSGS)
    assert comp.text == "echo: ping"
    assert len(srv.requests) == 4 and [t.status for t in tries] == [500, 503, 502, 200]


async def test_persistent_500_gives_up_after_bounded_retries(key_env: str) -> None:
    with FaultServer([status(500)] * 10) as srv:
        llm = backend(srv.url, key_env, max_retries=2)
        with pytest.raises(LLMError) as err:
            await llm.complete(MSGS)
    assert len(srv.requests) == 3  # 1 + max_retries, never more
    msg = str(err.value)
    assert "gave up after 3 attempt(s)" in msg and "HTTP 500" in msg and "openai:fake-model" in msg
    assert KEY not in msg


async def test_retry_after_seconds_is_honoured(key_env: str) -> None:
    with FaultServer([status(429, Retry_After="1")]) as srv:
        llm = backend(srv.url, key_env)
        comp = await llm.complete(MSGS)
    assert comp.text == "echo: ping"
    gap = srv.times[1] - srv.times[0]
    assert 1.0 <= gap < 2.5, gap  # the backoff alone would be ~10 ms


async def test_retry_after_http_date_is_honoured(key_env: str) -> None:
    # An HTTP date has 1 s granularity, and the first request may reach the server late on a busy
    # machine, so the wait itself varies; what must hold is that the retry comes at the named time.
    wall0, mono0 = time.time(), time.monotonic()
    when = email.utils.formatdate(wall0 + 2, usegmt=True)
    target = email.utils.parsedate_to_datetime(when).timestamp()
    with FaultServer([status(503, Retry_After=when)]) as srv:
        await backend(srv.url, key_env).complete(MSGS)
    retry_at = wall0 + (srv.times[1] - mono0)
    assert target - 0.05 <= retry_at < target + 1.5, (retry_at - target, srv.times)


async def test_retry_after_is_capped(key_env: str) -> None:
    with FaultServer([status(429, Retry_After="3600")]) as srv:
        llm = backend(srv.url, key_env, retry_max_wait=0.3)
        t0 = time.monotonic()
        await llm.complete(MSGS)
    assert time.monotonic() - t0 < 2.0


def test_retry_after_parsing() -> None:
    assert _retry_after({"retry-after": "2.5"}) == 2.5
    assert _retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert _retry_after({"retry-after": "soon"}) is None
    assert _retry_after({}) is None
    past = email.utils.formatdate(time.time() - 60, usegmt=True)
    assert _retry_after({"retry-after": past}) == 0.0


async def test_timeout_is_retried_and_bounded(key_env: str) -> None:
    with FaultServer([sleep(3.0)]) as srv:
        llm = backend(srv.url, key_env, timeout=0.5)
        t0 = time.monotonic()
        comp = await llm.complete(MSGS)
        elapsed = time.monotonic() - t0
    assert comp.text == "echo: ping" and len(srv.requests) == 2
    assert elapsed < 2.0, elapsed  # did not wait for the slow response


async def test_timeouts_exhaust_into_clear_error(key_env: str) -> None:
    with FaultServer([sleep(3.0)] * 3) as srv:
        llm = backend(srv.url, key_env, timeout=0.3, max_retries=1)
        with pytest.raises(LLMError, match=r"gave up after 2 attempt\(s\).*timed out after 0.3s"):
            await llm.complete(MSGS)
    assert len(srv.requests) == 2


@pytest.mark.parametrize(
    "fault",
    [TRUNCATE, NONJSON, BADJSON, NOTCOMPLETION, RESET],
    ids=["truncated", "nonjson", "badjson", "notcompletion", "reset"],
)
async def test_broken_responses_are_retried(key_env: str, fault: object) -> None:
    with FaultServer([fault, fault]) as srv:  # type: ignore[list-item]
        llm = backend(srv.url, key_env)
        comp = await llm.complete(MSGS)
    assert comp.text == "echo: ping"
    assert len(srv.requests) == 3


@pytest.mark.parametrize(
    ("fault", "expect"),
    [
        (TRUNCATE, "connection error"),
        (NONJSON, "not JSON"),
        (BADJSON, "not JSON"),
        (NOTCOMPLETION, "not a chat completion"),
        (RESET, "connection error"),
    ],
)
async def test_broken_responses_final_error_is_clear(key_env: str, fault: object, expect: str) -> None:
    with FaultServer([fault] * 5) as srv:  # type: ignore[list-item]
        llm = backend(srv.url, key_env, max_retries=1)
        with pytest.raises(LLMError, match=expect) as err:
            await llm.complete(MSGS)
    assert len(srv.requests) == 2 and KEY not in str(err.value)


async def test_every_fault_in_a_row_then_success(key_env: str) -> None:
    faults = [
        status(429, Retry_After="0"),
        status(500),
        status(503),
        sleep(2.0),
        TRUNCATE,
        NONJSON,
        BADJSON,
        RESET,
    ]
    with FaultServer(faults) as srv:
        llm = backend(srv.url, key_env, timeout=0.4, max_retries=len(faults))
        comp = await llm.complete(MSGS)
    assert comp.text == "echo: ping" and len(srv.requests) == len(faults) + 1


async def test_client_errors_fail_fast_without_leaking_the_key(key_env: str) -> None:
    leak = f'{{"error": {{"message": "Incorrect API key provided: {KEY}.", "code": "invalid_api_key"}}}}'
    with FaultServer([status(401, body=leak)]) as srv, pytest.raises(LLMError) as err:
        await backend(srv.url, key_env).complete(MSGS)
    assert len(srv.requests) == 1
    msg = str(err.value)
    assert "HTTP 401" in msg and "not retried" in msg and "Incorrect API key" in msg
    assert KEY not in msg and KEY[-12:] not in msg

    with FaultServer([status(400), status(404), status(422)]) as srv:
        llm = backend(srv.url, key_env)
        for code in (400, 404, 422):
            with pytest.raises(LLMError, match=f"HTTP {code}"):
                await llm.complete(MSGS)
    assert len(srv.requests) == 3


async def test_connection_refused_is_bounded(key_env: str) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    llm = backend(f"http://127.0.0.1:{port}/v1", key_env, max_retries=2)
    with (
        pytest.raises(LLMError, match=r"gave up after 3 attempt\(s\).*connection error"),
        collect_tries() as tries,
    ):
        await llm.complete(MSGS)
    assert len(tries) == 3 and all(t.status is None for t in tries)


async def test_native_tool_calls(key_env: str) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "search",
                "description": "Search the corpus.",
                "parameters": {
                    "type": "object",
                    "properties": {"query": {"type": "string"}},
                    "required": ["query"],
                },
            },
        }
    ]
    with FaultServer() as srv:
        comp = await backend(srv.url, key_env).complete(MSGS, tools=tools)
    assert comp.tool_calls == ({"id": "call_abc", "name": "search", "arguments": {"query": "ping"}},)
    assert comp.finish_reason == "tool_calls" and comp.text == ""
    assert srv.requests[0]["json"]["tools"] == tools


async def test_more_stops_than_the_wire_allows(key_env: str) -> None:
    with FaultServer() as srv:
        llm = backend(srv.url, key_env, wire_stops="on")
        comp = await llm.complete(MSGS, stop=["X", "Y", "Z", "W", "in"])
    assert srv.requests[0]["json"]["stop"] == ["X", "Y", "Z", "W"]
    assert comp.text == "echo: p"  # the fifth stop applied to the returned text, stop string dropped


async def test_max_completion_tokens_and_extra_body(key_env: str) -> None:
    with FaultServer() as srv:
        llm = backend(
            srv.url,
            key_env,
            max_tokens_param="max_completion_tokens",
            extra_body={"top_k": 5},
            send_seed=False,
        )
        await llm.complete(MSGS, max_tokens=9, seed=4)
    body = srv.requests[0]["json"]
    assert body["max_completion_tokens"] == 9 and "max_tokens" not in body and body["top_k"] == 5
    assert "seed" not in body


def test_missing_key_for_a_remote_endpoint_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAGEGEN_UNSET_KEY", raising=False)
    with pytest.raises(ConfigError, match="SAGEGEN_UNSET_KEY"):
        backend("https://generativelanguage.googleapis.com/v1beta/openai/", "SAGEGEN_UNSET_KEY")
    with pytest.raises(ConfigError, match="model"):
        OpenAIBackend(LLMConfig(backend="openai", model=None))
    for url in ("http://localhost:11434/v1", "http://10.1.2.3:8000/v1", "http://vllm:8000/v1"):
        backend(url, "SAGEGEN_UNSET_KEY")  # local or private servers need no key
    with pytest.raises(ConfigError):
        backend(None, "SAGEGEN_UNSET_KEY")  # type: ignore[arg-type]  # api.openai.com


async def test_local_server_needs_no_key() -> None:
    with FaultServer() as srv:
        comp = await backend(srv.url, None).complete(MSGS)
    assert comp.text == "echo: ping"
    assert srv.requests[0]["headers"]["authorization"].startswith("Bearer sk-no-key")


async def test_factory_builds_cached_openai_backend(key_env: str, tmp_path: Path) -> None:
    cfg = LLMConfig(
        backend="openai",
        model="fake-model",
        api_key_env=key_env,
        cache=True,
        cache_path=str(tmp_path / "c.sqlite"),
    )
    with FaultServer() as srv:
        cfg.base_url = srv.url
        llm = build_llm(cfg)
        a = await llm.complete(MSGS, seed=1)
        b = await llm.complete(MSGS, seed=1)
        c = await llm.complete(MSGS, seed=2)
    assert llm.name == "openai:fake-model"
    assert (a.cached, b.cached, c.cached) == (False, True, False) and a.text == b.text
    assert len(srv.requests) == 2


# --- llama-cpp-python's own OpenAI-compatible server, behind the fault proxy ---------------------


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_llama_server(tmp_path_factory.mktemp("llama_server"), n_ctx=2048, startup_s=60) as url:
        yield url


@pytest.mark.slow
@pytest.mark.ci
async def test_real_llama_cpp_server_through_fault_proxy(llama_server: str) -> None:
    faults = [status(503, Retry_After="0"), TRUNCATE, RESET]
    with FaultServer(faults, upstream=llama_server) as proxy:
        llm = backend(proxy.url, None, model="smollm2", timeout=120, max_retries=3)
        msgs = [{"role": "user", "content": "Name three colours."}]
        comp = await llm.complete(msgs, max_tokens=24, temperature=0.0, seed=3)
        assert len(proxy.requests) == 4  # three faults, then the real answer
        assert comp.text.strip() and comp.completion_tokens > 0 and comp.prompt_tokens > 0
        assert comp.finish_reason in ("stop", "length")

        cut = await llm.complete(
            [{"role": "user", "content": "Count from 1 to 20, separated by commas."}],
            max_tokens=80,
            temperature=0.0,
            stop=["7"],
        )
        assert "7" not in cut.text and cut.finish_reason == "stop"

        short = await llm.complete(msgs, max_tokens=4, temperature=0.0)
        assert short.completion_tokens <= 4 and short.finish_reason == "length"


# --- the connection pool and its lifetime (a keep-alive server that counts connections) -----------


def test_pool_follows_the_calls_in_flight() -> None:
    # 150 calls at once: more than httpx's default pool (100 connections, 20 kept alive), so a
    # default-sized client would hold calls back (the barrier never fills) and reconnect next wave.
    n = 150

    async def waves(llm: OpenAIBackend) -> list[str]:
        texts = []
        for _ in range(2):
            comps = await asyncio.gather(
                *(llm.complete([{"role": "user", "content": f"q{i}"}]) for i in range(n))
            )
            texts += [c.text for c in comps]
        return texts

    with KeepAliveServer(barrier=n) as srv:
        texts = asyncio.run(waves(backend(srv.url, None)))
        assert sorted(texts) == sorted([f"echo: q{i}" for i in range(n)] * 2)
        assert srv.requests == 2 * n and srv.peak == n  # all in flight at once, none queued
        assert srv.opened == n  # the second wave reused every connection of the first


def test_client_is_closed_inside_its_loop() -> None:
    async def some_calls() -> None:
        await asyncio.gather(*(llm.complete(MSGS) for _ in range(3)))

    with KeepAliveServer(barrier=3) as srv:
        llm = backend(srv.url, None)  # the object outlives both loops
        asyncio.run(some_calls())
        # The loop's own shutdown closed the connections (llm is still referenced: not garbage
        # collection), so nothing is left to fail later with "Event loop is closed".
        assert srv.opened == 3 and srv.wait_closed(), (srv.opened, srv.closed)
        asyncio.run(some_calls())  # a new loop gets a new client, closed the same way
        assert srv.opened == 6 and srv.wait_closed(), (srv.opened, srv.closed)

        async def explicit() -> None:
            await some_calls()
            await llm.aclose()
            assert srv.wait_closed(), (srv.opened, srv.closed)  # closed before the loop ends
            await some_calls()  # and usable again afterwards

        asyncio.run(explicit())
        assert srv.opened == 12 and srv.wait_closed()
    llm.close()  # after the loop: nothing to do but drop the references, and no error


@pytest.mark.parametrize(
    "body",
    [
        '{"choices": [{"message": null}]}',
        '{"choices": [42]}',
        '[{"choices": []}]',
        '{"choices": [{"message": {"content": 5}}]}',
        '{"choices": [{"message": {"content": "x", "tool_calls": [7]}}]}',
        '{"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": "many"}}',
    ],
    ids=["null-message", "number-choice", "list", "number-content", "bad-tool-call", "bad-usage"],
)
async def test_json_that_is_not_a_chat_completion_is_a_recorded_retry(key_env: str, body: str) -> None:
    with FaultServer([status(200, body=body)] * 2) as srv:
        llm = backend(srv.url, key_env)
        with collect_tries() as tries:
            comp = await llm.complete(MSGS)
    assert comp.text == "echo: ping" and len(srv.requests) == 3
    assert [t.status for t in tries] == [200, 200, 200]
    assert "not a chat completion" in tries[0].error or "without a message" in tries[0].error
    assert tries[0].wait > 0 and not tries[2].error
