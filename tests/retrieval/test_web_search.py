"""WebSearchRetriever against recorded-shape responses served by a real loopback HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from sagegen.config import WebSearchConfig
from sagegen.errors import ConfigError
from sagegen.retrieval.base import Retriever
from sagegen.retrieval.web import WebSearchError, WebSearchRetriever

DATA = Path(__file__).parents[1] / "data" / "web"
KEY = "sk-test-SECRET-0123456789"


class FakeSearch:
    """Routes: POST /search (Serper), GET /searxng/search (SearXNG), plus failure modes by query."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def route(self, query: str, provider: str) -> None:
                if query == "boom":
                    return self.reply(500, b'{"message": "internal error"}')
                if query == "html":
                    return self.reply(200, b"<html>rate limited</html>", "text/html")
                if query == "list":
                    return self.reply(200, b"[1, 2]")
                if provider == "serper":
                    if self.headers.get("X-API-KEY") != KEY:
                        return self.reply(403, b'{"message": "Unauthorized.", "statusCode": 403}')
                    name = "serper_citibank.json" if "citibank" in query else "serper_empty.json"
                else:
                    name = "searxng_madison.json"
                return self.reply(200, (DATA / name).read_bytes())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(
                    {"method": "POST", "path": self.path, "body": body, "headers": dict(self.headers)}
                )
                self.route(body.get("q", ""), "serper")

            def do_GET(self) -> None:
                u = urlparse(self.path)
                params = {k: v[0] for k, v in parse_qs(u.query).items()}
                outer.requests.append(
                    {"method": "GET", "path": u.path, "params": params, "headers": dict(self.headers)}
                )
                if u.path != "/searxng/search" or params.get("format") != "json":
                    return self.reply(404, b"not found", "text/plain")
                self.route(params.get("q", ""), "searxng")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def fake() -> Iterator[FakeSearch]:
    f = FakeSearch()
    yield f
    f.close()


@pytest.fixture()
def serper(fake: FakeSearch, monkeypatch: pytest.MonkeyPatch) -> WebSearchRetriever:
    monkeypatch.setenv("TEST_SERPER_KEY", KEY)
    return WebSearchRetriever(
        WebSearchConfig(provider="serper", url=fake.url + "/search", api_key_env="TEST_SERPER_KEY", timeout=5)
    )


def test_serper_maps_organic_results(serper: WebSearchRetriever, fake: FakeSearch) -> None:
    assert isinstance(serper, Retriever)
    [hits] = serper.search(["when was citibank founded"], k=3)
    # answerBox first (its link duplicates organic #1, which is dropped), then organic in order.
    assert [h.doc.id for h in hits] == [
        "https://en.wikipedia.org/wiki/Citigroup",
        "https://www.citigroup.com/global/about-us/history",
        "https://www.britannica.com/money/Citibank",
    ]
    assert hits[0].doc.title == "Citigroup - Wikipedia"
    assert hits[0].doc.text.startswith("June 16, 1812 - Citibank was founded in 1812")
    assert hits[1].doc.text.startswith("Citi's history began on June 16, 1812")
    assert hits[1].score == pytest.approx(1 / 2) and hits[2].score == pytest.approx(1 / 3)
    req = fake.requests[0]
    assert req["method"] == "POST" and req["body"]["q"] == "when was citibank founded"
    assert req["headers"]["X-API-KEY"] == KEY


def test_serper_batch_and_empty(serper: WebSearchRetriever) -> None:
    out = serper.search(["citibank", "zzqxj nonexistent phrase"], k=10)
    assert len(out) == 2 and len(out[0]) == 4 and out[1] == []


def test_searxng(fake: FakeSearch, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    r = WebSearchRetriever(
        WebSearchConfig(provider="searxng", url=fake.url + "/searxng/", api_key_env="NO_SUCH_KEY_VAR")
    )
    [hits] = r.search(["james madison president years"], k=5)
    assert [h.doc.id for h in hits] == [
        "https://en.wikipedia.org/wiki/James_Madison",
        "https://www.whitehouse.gov/about-the-white-house/presidents/james-madison/",
        "https://millercenter.org/president/madison",
    ]  # the duplicate URL is dropped
    assert hits[0].score == 4.0 and "fourth president" in hits[0].doc.text
    assert hits[2].doc.text == ""
    req = fake.requests[0]
    assert req["params"] == {"q": "james madison president years", "format": "json", "pageno": "1"}
    assert "authorization" not in {k.lower() for k in req["headers"]}


def test_missing_key_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_SERPER_KEY", raising=False)
    with pytest.raises(ConfigError, match="TEST_SERPER_KEY"):
        WebSearchRetriever(WebSearchConfig(provider="serper", api_key_env="TEST_SERPER_KEY"))
    with pytest.raises(ConfigError, match="searxng needs the instance URL"):
        WebSearchRetriever(WebSearchConfig(provider="searxng"))


def test_wrong_key_error_is_clear_and_does_not_leak(
    fake: FakeSearch, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_SERPER_KEY", "sk-wrong-SECRET-999")
    r = WebSearchRetriever(
        WebSearchConfig(provider="serper", url=fake.url + "/search", api_key_env="TEST_SERPER_KEY")
    )
    with pytest.raises(WebSearchError) as e:
        r.search(["citibank"])
    msg = str(e.value)
    assert "HTTP 403" in msg and "check the API key" in msg and "SECRET" not in msg


@pytest.mark.parametrize(
    ("query", "match"), [("boom", "HTTP 500"), ("html", "non-JSON body"), ("list", "expected a JSON object")]
)
def test_server_errors(serper: WebSearchRetriever, query: str, match: str) -> None:
    with pytest.raises(WebSearchError, match=match) as e:
        serper.search([query])
    assert KEY not in str(e.value)


def test_unreachable_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SERPER_KEY", KEY)
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    r = WebSearchRetriever(
        WebSearchConfig(
            provider="serper", url=f"http://127.0.0.1:{port}/search", api_key_env="TEST_SERPER_KEY", timeout=2
        )
    )
    with pytest.raises(WebSearchError, match="failed: ConnectError") as e:
        r.search(["citibank"])
    assert KEY not in str(e.value)


async def test_solver_over_web_search(serper: WebSearchRetriever) -> None:
    """The agent runs unchanged over web results (the paper's test-time swap)."""
    from sagegen.agents.solver import solve
    from sagegen.config import SolverConfig
    from sagegen.llm.scripted import ScriptedLLM

    llm = ScriptedLLM(["<search> when was citibank founded </search>", "<answer> 1812 </answer>"])
    traj = await solve("When was Citibank founded?", llm, serper, SolverConfig())
    assert traj.answer == "1812" and traj.steps[1].hit_ids[0] == "https://en.wikipedia.org/wiki/Citigroup"
    assert "Doc 2(Title: Our History | Citi)" in traj.messages[3]["content"]
