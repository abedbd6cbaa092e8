"""The OpenAI backend over its HTTP transport (sagegen.llm.transport) against raw loopback servers.

Each server here writes its replies byte by byte the way some real server or proxy does (chunked
bodies, ``Connection: close``, an HTTP/1.0 body that ends with the connection, a keep-alive
connection the server drops while idle, TLS), and the tests go through the OpenAI backend, so
what is checked is what a run sees: the completion, how many connections were opened, and no
retry where none is due.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from typing import Any

import pytest

from helpers.loop_server import chat_completion
from helpers.raw_http_server import RawHTTPServer, plain, write_chunked
from sagegen.config import LLMConfig
from sagegen.errors import LLMError
from sagegen.llm.base import collect_tries
from sagegen.llm.openai_backend import OpenAIBackend

MSGS = [{"role": "user", "content": "ping"}]
USAGE = {"prompt_tokens": 3, "completion_tokens": 2}

Writer = Callable[[asyncio.StreamWriter, bytes], Any]


def _payload(n: int) -> bytes:
    return json.dumps(chat_completion(f"reply {n}", "m", USAGE, id_=f"c{n}")).encode()


def raw_server(
    write: Writer, *, close_after_reply: bool = False, ssl_context: ssl.SSLContext | None = None
) -> RawHTTPServer:
    """The raw server answering request ``n`` with the chat completion ``reply n``, written by ``write``;
    ``close_after_reply``: the server drops the connection after each reply without saying so."""

    async def answer(w: asyncio.StreamWriter, n: int, head: bytes, body: bytes) -> None:
        await write(w, body)
        if close_after_reply:
            await w.drain()
            w.close()

    return RawHTTPServer(answer, reply=lambda n, request: _payload(n), ssl_context=ssl_context)


async def content_length(w: asyncio.StreamWriter, body: bytes) -> None:
    w.write(plain(body))


async def chunked(w: asyncio.StreamWriter, body: bytes) -> None:
    await write_chunked(w, body)


async def connection_close(w: asyncio.StreamWriter, body: bytes) -> None:
    w.write(plain(body, extra="Connection: close\r\n"))


async def http10_until_close(w: asyncio.StreamWriter, body: bytes) -> None:
    w.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + body)
    await w.drain()
    w.close()


def backend(url: str, **kw: Any) -> OpenAIBackend:
    params: dict[str, Any] = {
        "backend": "openai",
        "model": "m",
        "base_url": url,
        "timeout": 5.0,
        "max_retries": 2,
        "retry_backoff": 0.01,
        "cache": False,
    }
    params.update(kw)
    return OpenAIBackend(LLMConfig(**params))


async def three_calls(llm: OpenAIBackend) -> list[str]:
    out = []
    for _ in range(3):
        out.append((await llm.complete(MSGS)).text)
        await asyncio.sleep(0.05)  # lets a close by the server reach the client between calls
    return out


def test_keep_alive_reuses_one_connection_and_sends_a_proper_request() -> None:
    with raw_server(content_length) as srv, collect_tries() as tries:
        assert asyncio.run(three_calls(backend(srv.base_url))) == ["reply 1", "reply 2", "reply 3"]
    assert srv.opened == 1 and srv.requests == 3 and len(tries) == 3 and not any(t.error for t in tries)
    head = srv.heads[0].lower()
    assert head.startswith(b"post /v1/chat/completions http/1.1\r\n")
    assert b"\r\nhost: 127.0.0.1:%d\r\n" % srv.port in head and b"authorization: bearer " in head


def test_a_chunked_body_in_small_pieces_is_read_whole() -> None:
    with raw_server(chunked) as srv, collect_tries() as tries:
        assert asyncio.run(three_calls(backend(srv.base_url))) == ["reply 1", "reply 2", "reply 3"]
    assert srv.opened == 1 and not any(t.error for t in tries)


@pytest.mark.parametrize(
    "write", [connection_close, http10_until_close], ids=["connection-close", "http-1.0"]
)
def test_a_last_response_is_read_and_the_next_call_opens_a_new_connection(write: Writer) -> None:
    with raw_server(write) as srv, collect_tries() as tries:
        assert asyncio.run(three_calls(backend(srv.base_url))) == ["reply 1", "reply 2", "reply 3"]
    assert srv.opened == 3 and srv.requests == 3
    assert not any(t.error for t in tries)  # no retry: each reply said it was the last


def test_an_idle_connection_the_server_dropped_is_not_reused() -> None:
    # The server closes after each reply without saying so (a keep-alive timeout on its side):
    # the client sees the close while idle and opens a fresh connection instead of failing a try.
    with raw_server(content_length, close_after_reply=True) as srv, collect_tries() as tries:
        assert asyncio.run(three_calls(backend(srv.base_url))) == ["reply 1", "reply 2", "reply 3"]
    assert srv.opened == 3 and not any(t.error for t in tries)


def test_tls_with_certificate_verification(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    with raw_server(content_length, ssl_context=server_ctx) as srv:
        # Unknown to certifi's roots: one clear failure at once (the same certificate would fail
        # every retry), saying what to do; nothing was sent over the unverified connection.
        with collect_tries() as tries, pytest.raises(LLMError, match=r"not trusted.*SSL_CERT_FILE"):
            asyncio.run(backend(srv.base_url, api_key_env=None).complete(MSGS))
        assert len(tries) == 1 and srv.requests == 0

        # A private CA named by SSL_CERT_FILE (a company's, or a self-signed vLLM's), as httpx reads it.
        pem = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(pem))
        monkeypatch.setenv("SSL_CERT_FILE", str(pem))
        texts = asyncio.run(three_calls(backend(srv.base_url, api_key_env=None)))
        assert texts == ["reply 1", "reply 2", "reply 3"]
        assert srv.opened == 1 and srv.requests == 3  # one TLS connection (the handler sees handshaken ones)


def test_a_server_that_breaks_http_is_a_connection_error() -> None:
    async def garbage(w: asyncio.StreamWriter, body: bytes) -> None:
        w.write(b"NOT HTTP AT ALL\r\n\r\n")

    gave_up = pytest.raises(LLMError, match="gave up after 3")
    with raw_server(garbage) as srv, collect_tries() as tries, gave_up:
        asyncio.run(backend(srv.base_url).complete(MSGS))
    assert all("connection error" in t.error and "HTTP/1.1" in t.error for t in tries)
