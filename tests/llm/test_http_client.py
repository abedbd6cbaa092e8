"""HTTPRetriever against live servers on real sockets: ours (toy and real BM25), a Search-R1-shaped one,
a faulty one (5xx, garbage, wrong shapes, slowness) and none at all."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from helpers.overlap import DOCS, WordOverlap
from sagegen.config import HTTPRetrieverConfig, ServerConfig
from sagegen.errors import SagegenError
from sagegen.records import Doc
from sagegen.retrieval.base import Retriever
from sagegen.retrieval.http import HTTPRetriever
from sagegen.server import create_app, running_server

KEY = "client-side-secret-0123456789abcdef"


def http_cfg(url: str, **kw: Any) -> HTTPRetrieverConfig:
    kw.setdefault("api_key_env", None)
    kw.setdefault("backoff", 0.01)
    return HTTPRetrieverConfig(url=url, **kw)


@pytest.fixture(scope="module")
def toy_url() -> Iterator[str]:
    with running_server(create_app(WordOverlap(), ServerConfig(max_queries=4, max_topk=5))) as base:
        yield base


def as_tuples(results: list[list[Any]]) -> list[list[tuple[str, str, str, float]]]:
    return [[(h.doc.id, h.doc.title, h.doc.text, h.score) for h in hits] for hits in results]


# --------------------------------------------------------------------------- against our server


def test_same_results_as_the_local_retriever(toy_url: str) -> None:
    queries = ["capital of France", "who wrote Hamlet", "untitled rivers", "Berlin Germany"]
    with HTTPRetriever(http_cfg(f"{toy_url}/retrieve")) as remote:
        assert isinstance(remote, Retriever)
        got = remote.search(queries, 3)
    assert as_tuples(got) == as_tuples(WordOverlap().search(queries, 3))
    assert got[3][0].doc == DOCS[2]  # Doc round-trips through contents = title + "\n" + text
    assert got[2][0].doc == DOCS[4]  # ... including an untitled passage


def test_batches_larger_than_the_server_limit_are_split(toy_url: str) -> None:
    queries = [f"France {i}" for i in range(11)]  # the server refuses more than 4 per request
    with HTTPRetriever(http_cfg(toy_url, batch_size=4)) as remote:  # a bare base URL gets /retrieve
        got = remote.search(queries, 2)
    assert as_tuples(got) == as_tuples(WordOverlap().search(queries, 2))
    with (
        HTTPRetriever(http_cfg(toy_url, batch_size=100)) as remote,
        pytest.raises(
            SagegenError, match=r"rejected the request \(HTTP 422\): invalid request: queries: List"
        ),
    ):
        remote.search(queries, 2)


def test_empty_query_list_makes_no_request() -> None:
    # Nothing listens on this URL; an empty batch must not even try.
    with HTTPRetriever(http_cfg("http://127.0.0.1:9/retrieve")) as remote:
        assert remote.search([], 3) == []


def test_client_errors_are_not_retried_and_carry_the_server_message(toy_url: str) -> None:
    calls: list[str] = []
    with (
        running_server(_counting_proxy_app(toy_url, calls)) as proxy,
        HTTPRetriever(http_cfg(proxy, max_retries=3)) as remote,
        pytest.raises(SagegenError) as err,
    ):
        remote.search(["France"], 50)  # over max_topk=5
    assert "HTTP 422" in str(err.value) and "topk: Input should be less than or equal to 5" in str(err.value)
    assert len(calls) == 1


def _counting_proxy_app(upstream: str, calls: list[str]) -> FastAPI:
    import httpx

    app = FastAPI()

    @app.post("/retrieve")
    async def forward(request: Request) -> Response:
        calls.append("post")
        async with httpx.AsyncClient() as c:
            r = await c.post(
                f"{upstream}/retrieve", content=await request.body(), headers={"content-type": J}
            )
        return Response(r.content, status_code=r.status_code, media_type=J)

    return app


J = "application/json"


# --------------------------------------------------------------------------- API key


def test_api_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGEGEN_TEST_CLIENT_KEY", KEY)
    with running_server(create_app(WordOverlap(), ServerConfig(), api_key=KEY)) as base:
        with HTTPRetriever(http_cfg(base, api_key_env="SAGEGEN_TEST_CLIENT_KEY")) as remote:
            assert remote.search(["Hamlet"], 1)[0][0].doc.id == "p3"
            assert KEY not in repr(remote)
        monkeypatch.setenv("SAGEGEN_TEST_CLIENT_KEY", "wrong-key-9876")
        wrong = HTTPRetriever(http_cfg(base, api_key_env="SAGEGEN_TEST_CLIENT_KEY"))
        with wrong, pytest.raises(SagegenError, match=r"HTTP 401\): missing or wrong API key") as err:
            wrong.search(["Hamlet"], 1)
        assert "wrong-key-9876" not in str(err.value) and KEY not in str(err.value)
        monkeypatch.delenv("SAGEGEN_TEST_CLIENT_KEY")
        unset = HTTPRetriever(http_cfg(base, api_key_env="SAGEGEN_TEST_CLIENT_KEY"))
        with unset, pytest.raises(SagegenError, match="HTTP 401"):
            unset.search(["Hamlet"], 1)


def test_credentials_in_the_url_are_never_printed() -> None:
    with HTTPRetriever(
        http_cfg(f"http://user:{KEY}@127.0.0.1:{_free_port()}/retrieve", max_retries=0)
    ) as remote:
        with pytest.raises(SagegenError) as err:
            remote.search(["q"], 1)
        assert KEY not in str(err.value) and KEY not in repr(remote)
        assert "http://127.0.0.1:" in str(err.value)


# --------------------------------------------------------------------------- failures


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_gives_a_clear_error_after_retries() -> None:
    port = _free_port()  # bound then released: nothing listens there now
    t0 = time.perf_counter()
    remote = HTTPRetriever(http_cfg(f"http://127.0.0.1:{port}/retrieve", max_retries=2, backoff=0.05))
    with remote, pytest.raises(SagegenError) as err:
        remote.search(["capital of France"], 3)
    message = str(err.value)
    assert (
        f"retrieval server http://127.0.0.1:{port}/retrieve failed after 3 attempt(s): ConnectError"
        in message
    )
    assert "is the server running? start one with `sagegen serve`" in message
    assert time.perf_counter() - t0 >= 0.05 + 0.1  # backoff 0.05 then 0.1 between the three attempts


class Faulty:
    """A /retrieve that misbehaves on cue: ``script`` is consumed one response per request."""

    def __init__(self) -> None:
        self.script: list[Any] = []
        self.calls = 0
        self.app = FastAPI()
        good = WordOverlap()

        @self.app.post("/retrieve")
        async def retrieve(request: Request) -> Response:
            self.calls += 1
            body = await request.json()
            step = self.script.pop(0) if self.script else "ok"
            if step == "ok":
                hits = good.search(body["queries"], body["topk"])
                result = [
                    [{"document": {"id": h.doc.id, "contents": h.doc.contents}, "score": h.score} for h in hs]
                    for hs in hits
                ]
                return JSONResponse({"result": result})
            if isinstance(step, int):
                return PlainTextResponse(f"upstream trouble {step}", status_code=step)
            if isinstance(step, tuple) and step[0] == "sleep":
                import asyncio

                await asyncio.sleep(step[1])
                return JSONResponse({"result": [[] for _ in body["queries"]]})
            if isinstance(step, bytes):
                return Response(step, media_type=J)
            return JSONResponse(step)


@pytest.fixture(scope="module")
def faulty() -> Iterator[tuple[Faulty, str]]:
    f = Faulty()
    with running_server(f.app) as base:
        yield f, base


@pytest.fixture()
def fault(faulty: tuple[Faulty, str]) -> Iterator[tuple[Faulty, str]]:
    f, base = faulty
    f.script, f.calls = [], 0
    yield f, base
    f.script = []


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_transient_errors_are_retried_then_succeed(fault: tuple[Faulty, str], status: int) -> None:
    f, base = fault
    f.script = [status, status]
    with HTTPRetriever(http_cfg(base, max_retries=2)) as remote:
        got = remote.search(["capital of France"], 2)
    assert f.calls == 3
    assert [h.doc.id for h in got[0]] == ["p0", "p2"]


def test_persistent_5xx_fails_with_the_last_status(fault: tuple[Faulty, str]) -> None:
    f, base = fault
    f.script = [503, 503, 500]
    with (
        HTTPRetriever(http_cfg(base, max_retries=2)) as remote,
        pytest.raises(SagegenError, match=r"failed after 3 attempt\(s\): HTTP 500: upstream trouble 500"),
    ):
        remote.search(["q"], 1)
    assert f.calls == 3


def test_timeout_is_retried_and_reported(fault: tuple[Faulty, str]) -> None:
    f, base = fault
    f.script = [("sleep", 1.0), ("sleep", 1.0)]
    remote = HTTPRetriever(http_cfg(base, max_retries=1, timeout=0.2))
    with remote, pytest.raises(SagegenError, match=r"failed after 2 attempt\(s\): timed out after 0.2s"):
        remote.search(["q"], 1)


MALFORMED = [
    # (response, regex the error must contain after "sent a malformed response: ")
    (b"<html>Bad gateway</html>", r"not JSON: <html>Bad gateway</html>"),
    (b"", r"not JSON: \(empty body\)"),
    ({"results": []}, r'expected \{"result": \[\.\.\.\]\}'),
    ([1, 2], r'expected \{"result"'),
    ({"result": [[], []]}, r"2 result lists for 1 queries"),
    ({"result": ["nope"]}, r"result\[0\] is str, expected a list"),
    ({"result": [[{"document": {"id": "x"}, "score": 1}]]}, r"result\[0\]\[0\]: document has no 'contents'"),
    ({"result": [[{"document": "text", "score": 1.0}]]}, r"result\[0\]\[0\]\.document is str"),
    ({"result": [[{"document": {"id": "x", "contents": "a"}, "score": "hi"}]]}, r"\.score is 'hi'"),
    ({"result": [[7]]}, r"result\[0\]\[0\] is int, expected an object"),
]


@pytest.mark.parametrize(
    ("payload", "pattern"), MALFORMED, ids=[f"malformed{i}" for i in range(len(MALFORMED))]
)
def test_malformed_responses_give_clear_errors_without_retry(
    fault: tuple[Faulty, str], payload: Any, pattern: str
) -> None:
    f, base = fault
    f.script = [payload]
    remote = HTTPRetriever(http_cfg(base, max_retries=3))
    with remote, pytest.raises(SagegenError, match=r"sent a malformed response: .*" + pattern):
        remote.search(["q"], 1)
    assert f.calls == 1  # a well-delivered bad answer is not transient: no retry


# --------------------------------------------------------------------------- Search-R1's own shapes


def test_search_r1_shapes_without_scores_and_without_ids(fault: tuple[Faulty, str]) -> None:
    """Search-R1's server sends bare docs when scores are off, and its Lucene BM25 path sends
    {title, text, contents} with no id; dense corpora may carry integer ids and string scores."""
    f, base = fault
    f.script = [
        {
            "result": [
                [{"id": "d1", "contents": '"Quoted Title"\nbody one'}, {"id": 2, "contents": "no title here"}]
            ]
        },
        {"result": [[{"document": {"title": "T", "text": "x\ny", "contents": "T\nx\ny"}, "score": "7.5"}]]},
        {"result": [[{"document": {"id": "a", "contents": "A\nb"}, "score": None}]]},
    ]
    with HTTPRetriever(http_cfg(base)) as remote:
        (bare,) = remote.search(["q"], 2)
        (noid,) = remote.search(["q"], 1)
        (nulls,) = remote.search(["q"], 1)
    assert [(h.doc.id, h.doc.title, h.doc.text) for h in bare] == [
        ("d1", "Quoted Title", "body one"),
        ("2", "", "no title here"),
    ]
    assert [h.score for h in bare] == [1.0, 0.5]  # no scores: rank order is kept visible
    (hit,) = noid
    assert hit.doc.title == "T" and hit.doc.text == "x\ny" and hit.score == 7.5
    assert hit.doc.id.startswith("sha1-")
    again = HTTPRetriever._hit({"title": "T", "text": "x\ny", "contents": "T\nx\ny"}, "w", 0)
    assert again.doc.id == hit.doc.id  # derived ids are stable
    assert nulls[0].score == 1.0


def test_more_hits_than_asked_are_truncated(fault: tuple[Faulty, str]) -> None:
    f, base = fault
    f.script = [{"result": [[{"id": str(i), "contents": f"t{i}"} for i in range(10)]]}]
    with HTTPRetriever(http_cfg(base)) as remote:
        (hits,) = remote.search(["q"], 3)
    assert [h.doc.id for h in hits] == ["0", "1", "2"]


def test_bad_url_is_a_config_error() -> None:
    with pytest.raises(SagegenError, match="expected http"):
        HTTPRetriever(http_cfg("ftp://example.org/retrieve"))
    with pytest.raises(SagegenError, match="expected http"):
        HTTPRetriever(http_cfg("127.0.0.1:8000"))


# --------------------------------------------------------------------------- real BM25, real corpus


def test_real_bm25_local_and_remote_agree_on_ranks_and_scores(shared_data: Path, tmp_path: Path) -> None:
    from sagegen.config import RetrievalConfig
    from sagegen.retrieval.index import build_index, open_index

    corpus = [json.loads(x) for x in (shared_data / "hotpotqa" / "corpus.jsonl").read_text().splitlines()]
    docs = [Doc.from_contents(r["id"], r["contents"]) for r in corpus]
    build_index(docs, "bm25", RetrievalConfig(), tmp_path / "idx")
    local = open_index(tmp_path / "idx")
    questions = [
        json.loads(x)["question"]
        for x in (shared_data / "hotpotqa" / "questions.jsonl").read_text().splitlines()
    ]
    want = local.search(questions, 10)
    with (
        running_server(create_app(local, ServerConfig())) as base,
        HTTPRetriever(http_cfg(base, batch_size=32)) as remote,
    ):
        got = remote.search(questions, 10)
    assert len(got) == len(questions) == 100
    assert as_tuples(got) == as_tuples(want)  # same ids, same order, bit-identical scores
