"""The retrieval server over a real socket: Search-R1 shapes, every bad-request class, auth, health, docs.

uvicorn runs in a background thread on 127.0.0.1 with an ephemeral port (``running_server``);
requests go through httpx over TCP, exactly as a training stack's client would send them.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.overlap import DOCS, LIMITS, WordOverlap
from helpers.serve_cli import start_serve, write_searchr1
from sagegen.config import ServerConfig
from sagegen.errors import ConfigError
from sagegen.records import Doc, Hit
from sagegen.server import (
    check_bind,
    create_app,
    is_loopback_host,
    prepare_server,
    resolve_api_key,
    running_server,
    serve,
)


@pytest.fixture(scope="module")
def toy() -> WordOverlap:
    return WordOverlap()


@pytest.fixture(scope="module")
def url(toy: WordOverlap) -> Iterator[str]:
    with running_server(create_app(toy, LIMITS)) as base:
        yield base


@pytest.fixture()
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=10) as c:
        yield c


def expected(retriever: WordOverlap, queries: list[str], k: int, scores: bool) -> dict:
    result = []
    for hits in WordOverlap(retriever.docs).search(queries, k):
        docs = [{"id": h.doc.id, "contents": h.doc.contents} for h in hits]
        result.append(
            [{"document": d, "score": h.score} for d, h in zip(docs, hits, strict=True)] if scores else docs
        )
    return {"result": result}


# --------------------------------------------------------------------------- wire shapes


def test_retrieve_with_scores_is_exact_search_r1_shape(client: httpx.Client, toy: WordOverlap) -> None:
    queries = ["capital of France", "who wrote Hamlet"]
    r = client.post("/retrieve", json={"queries": queries, "topk": 3, "return_scores": True})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body == expected(toy, queries, 3, scores=True)
    # The literal Search-R1 shape: keys, nesting and the contents = title + "\n" + text convention.
    first = body["result"][0][0]
    assert set(first) == {"document", "score"} and set(first["document"]) == {"id", "contents"}
    assert first["document"] == {
        "id": "p0",
        "contents": "Paris\nParis is the capital and largest city of France.",
    }
    assert body["result"][1][0]["document"]["id"] == "p3"


def test_retrieve_without_scores_returns_bare_documents(client: httpx.Client, toy: WordOverlap) -> None:
    queries = ["untitled rivers"]
    r = client.post("/retrieve", json={"queries": queries, "topk": 2, "return_scores": False})
    assert r.status_code == 200
    assert r.json() == expected(toy, queries, 2, scores=False)
    # An untitled passage's contents is its text alone (no leading newline).
    assert r.json()["result"][0][0] == {"id": "p4", "contents": DOCS[4].text}


@pytest.mark.parametrize("extra", [{}, {"topk": None}])
def test_topk_omitted_or_null_uses_default_and_scores_default_off(client: httpx.Client, extra: dict) -> None:
    r = client.post("/retrieve", json={"queries": ["France"], **extra})
    assert r.status_code == 200
    (hits,) = r.json()["result"]
    assert len(hits) == LIMITS.default_topk
    assert "score" not in hits[0] and "id" in hits[0]  # Search-R1's return_scores defaults to false


def test_blank_query_gets_no_hits_without_failing_the_batch(client: httpx.Client, toy: WordOverlap) -> None:
    toy.calls.clear()
    r = client.post("/retrieve", json={"queries": ["Berlin", "   ", ""], "topk": 1, "return_scores": True})
    assert r.status_code == 200
    result = r.json()["result"]
    assert [len(x) for x in result] == [1, 0, 0]
    assert result[0][0]["document"]["id"] == "p2"
    assert toy.calls == [(["Berlin"], 1)]  # blank queries never reach the retriever


def test_overlong_query_is_cut_without_failing_the_batch(client: httpx.Client, toy: WordOverlap) -> None:
    # One rollout's runaway query must not fail the other queries of a GRPO batch (Search-R1's client
    # reads ["result"] and would die on a 422): it is searched on its first max_query_chars characters.
    toy.calls.clear()
    long = "Berlin " + "x" * 200
    r = client.post("/retrieve", json={"queries": ["capital of France", long], "topk": 1})
    assert r.status_code == 200
    assert [len(x) for x in r.json()["result"]] == [1, 1]
    assert toy.calls == [(["capital of France", long[:64]], 1)]


def test_empty_query_list_is_answered_like_search_r1(client: httpx.Client, toy: WordOverlap) -> None:
    # Search-R1's trainer posts exactly this when no rollout searched in a turn, then reads
    # ["result"]; a 4xx would crash its training loop.
    toy.calls.clear()
    r = client.post("/retrieve", json={"queries": [], "topk": 3, "return_scores": True})
    assert r.status_code == 200 and r.json() == {"result": []}
    assert toy.calls == []


def test_accepts_json_content_type_with_charset(client: httpx.Client) -> None:
    body = json.dumps({"queries": ["Paris"], "topk": 1}).encode()
    r = client.post("/retrieve", content=body, headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 200 and r.json()["result"][0][0]["id"] == "p0"


# --------------------------------------------------------------------------- bad requests

J = "application/json"
BAD_REQUESTS = [
    # (label, body bytes or JSON object, content type, status, message fragment)
    ("missing queries", {"topk": 2}, J, 422, "queries: Field required"),
    (
        "queries is a string",
        {"queries": "capital of France"},
        J,
        422,
        "queries: Input should be a valid list",
    ),
    ("query not a string", {"queries": ["ok", 7]}, J, 422, "queries.1: Input should be a valid string"),
    ("query is null", {"queries": [None]}, J, 422, "queries.0: Input should be a valid string"),
    ("topk is a string", {"queries": ["a"], "topk": "3"}, J, 422, "topk: Input should be a valid integer"),
    ("topk is a float", {"queries": ["a"], "topk": 2.5}, J, 422, "topk: Input should be a valid integer"),
    ("topk is a bool", {"queries": ["a"], "topk": True}, J, 422, "topk: Input should be a valid integer"),
    ("topk zero", {"queries": ["a"], "topk": 0}, J, 422, "topk: Input should be greater than or equal to 1"),
    (
        "topk negative",
        {"queries": ["a"], "topk": -3},
        J,
        422,
        "topk: Input should be greater than or equal to 1",
    ),
    ("topk over max", {"queries": ["a"], "topk": 5}, J, 422, "topk: Input should be less than or equal to 4"),
    ("topk huge", {"queries": ["a"], "topk": 10**30}, J, 422, "topk"),
    ("too many queries", {"queries": ["a"] * 6}, J, 422, "queries: List should have at most 5 items"),
    (
        "return_scores not bool",
        {"queries": ["a"], "return_scores": "yes"},
        J,
        422,
        "return_scores: Input should be",
    ),
    ("misspelt field", {"queries": ["a"], "top_k": 2}, J, 422, "top_k: Extra inputs are not permitted"),
    ("body is a list", ["a", "b"], J, 422, "body: Input should be a valid dictionary"),
    ("body is a number", 3, J, 422, "body: Input should be a valid dictionary"),
    ("not JSON", b'{"queries": ["a"', J, 400, "request body is not valid JSON"),
    ("not UTF-8 JSON", b"\xff\xfe{", J, 400, "not valid JSON"),
    ("empty body", b"", J, 400, "request body is empty"),
    (
        "form content type",
        b"queries=a",
        "application/x-www-form-urlencoded",
        415,
        "Content-Type must be application/json",
    ),
    ("text content type", b'{"queries": ["a"]}', "text/plain", 415, "got text/plain"),
    ("no content type", b'{"queries": ["a"]}', None, 415, "got none"),
    ("body too large", {"queries": ["a" * 60] * 40}, J, 413, "request body too large (limit 2048 bytes"),
]


@pytest.mark.parametrize(
    ("label", "body", "ctype", "status", "fragment"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_request_gets_4xx_with_message(
    client: httpx.Client, label: str, body: object, ctype: str | None, status: int, fragment: str
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": ctype} if ctype else {}
    r = client.post("/retrieve", content=content, headers=headers)
    assert r.status_code == status, r.text
    payload = r.json()
    assert fragment in payload["error"], payload
    # The (possibly huge) offending input is never echoed back.
    assert "x" * 65 not in r.text


def test_chunked_body_over_limit_is_refused_while_streaming(client: httpx.Client) -> None:
    # No Content-Length: the limit must hold for a streamed body too.
    def chunks() -> Iterator[bytes]:
        yield b'{"queries": ["'
        for _ in range(10):
            yield b"a" * 500
        yield b'"]}'

    r = client.post("/retrieve", content=chunks(), headers={"content-type": J})
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and "too large" in r.json()["error"]


def test_wrong_method_and_unknown_route(client: httpx.Client) -> None:
    assert client.get("/retrieve").status_code == 405
    assert client.post("/nowhere", json={}).status_code == 404


def test_retriever_failure_is_a_500_with_message_and_server_survives() -> None:
    class Broken(WordOverlap):
        def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
            if "boom" in queries:
                raise RuntimeError("index file vanished")
            if "short" in queries:
                return []  # fewer result lists than queries: a retriever bug, reported not crashed on
            return super().search(queries, k)

    with running_server(create_app(Broken(), LIMITS)) as base, httpx.Client(base_url=base) as c:
        r = c.post("/retrieve", json={"queries": ["boom"]})
        assert r.status_code == 500
        assert r.json()["error"] == "retrieval failed: RuntimeError: index file vanished"
        r = c.post("/retrieve", json={"queries": ["short"]})
        assert r.status_code == 500 and "0 result lists for 1 queries" in r.json()["error"]
        assert c.post("/retrieve", json={"queries": ["Paris"], "topk": 1}).status_code == 200


def test_non_finite_scores_become_null_not_a_500() -> None:
    class Weird(WordOverlap):
        def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
            return [[Hit(doc=DOCS[0], score=math.nan), Hit(doc=DOCS[1], score=math.inf)] for _ in queries]

    with running_server(create_app(Weird(), LIMITS)) as base:
        r = httpx.post(f"{base}/retrieve", json={"queries": ["q"], "topk": 2, "return_scores": True})
    assert r.status_code == 200
    assert [h["score"] for h in r.json()["result"][0]] == [None, None]


# --------------------------------------------------------------------------- health and docs


def test_health(client: httpx.Client) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["kind"] == "word-overlap" and body["n_docs"] == len(DOCS)
    assert body["auth"] is False and body["max_topk"] == 4 and body["max_queries"] == 5


def test_openapi_and_docs(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) >= {"/retrieve", "/health"}
    op = spec["paths"]["/retrieve"]["post"]
    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    schema = spec["components"]["schemas"][ref]
    assert schema["required"] == ["queries"]
    assert (
        schema["properties"]["queries"]["maxItems"] == 5 and "minItems" not in schema["properties"]["queries"]
    )
    assert "maxLength" not in schema["properties"]["queries"]["items"]  # over-long queries: cut, not refused
    assert {"400", "401", "413", "415", "422"} <= set(op["responses"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


# --------------------------------------------------------------------------- concurrency


def test_concurrent_requests_each_get_their_own_answer(
    client: httpx.Client, url: str, toy: WordOverlap
) -> None:
    queries = ["capital of France", "Hamlet Shakespeare", "Berlin Germany", "Rhone", "Lyon city"] * 8

    def one(q: str) -> list[str]:
        r = client.post("/retrieve", json={"queries": [q], "topk": 3})  # httpx.Client is thread-safe
        assert r.status_code == 200
        return [d["id"] for d in r.json()["result"][0]]

    with ThreadPoolExecutor(max_workers=16) as pool:
        got = list(pool.map(one, queries))
    want = [[h.doc.id for h in hits] for hits in WordOverlap().search(queries, 3)]
    assert got == want


def test_slow_retrieval_does_not_block_the_event_loop() -> None:
    release = threading.Event()
    entered = threading.Event()

    class Slow(WordOverlap):
        def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
            entered.set()
            assert release.wait(10)
            return super().search(queries, k)

    with running_server(create_app(Slow(), LIMITS)) as base, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            httpx.post, f"{base}/retrieve", json={"queries": ["Paris"], "topk": 1}, timeout=15
        )
        assert entered.wait(10)
        # The search is still running in its worker thread; the server must still answer.
        t0 = time.perf_counter()
        assert httpx.get(f"{base}/health", timeout=5).status_code == 200
        assert time.perf_counter() - t0 < 2
        assert not pending.done()
        release.set()
        assert pending.result().json()["result"][0][0]["id"] == "p0"


# --------------------------------------------------------------------------- API key

KEY = "s3cret-key-do-not-print-0123456789"


@pytest.fixture(scope="module")
def secured(toy: WordOverlap) -> Iterator[str]:
    with running_server(create_app(toy, LIMITS, api_key=KEY)) as base:
        yield base


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"X-API-Key": "wrong"},
        {"Authorization": KEY},
        {"Authorization": "Bearer"},
    ],
    ids=["none", "wrong-bearer", "wrong-x-api-key", "no-bearer-scheme", "empty-bearer"],
)
def test_api_key_required(secured: str, headers: dict[str, str]) -> None:
    r = httpx.post(f"{secured}/retrieve", json={"queries": ["Paris"]}, headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert "API key" in r.json()["error"]
    assert KEY not in r.text


@pytest.mark.parametrize(
    "headers", [{"Authorization": f"Bearer {KEY}"}, {"authorization": f"bearer {KEY}"}, {"X-API-Key": KEY}]
)
def test_api_key_accepted(secured: str, headers: dict[str, str]) -> None:
    r = httpx.post(f"{secured}/retrieve", json={"queries": ["Paris"], "topk": 1}, headers=headers)
    assert r.status_code == 200 and r.json()["result"][0][0]["id"] == "p0"


def test_auth_is_checked_before_the_body(secured: str) -> None:
    # An unauthenticated client learns nothing about validation: 401, not 400/415/422.
    r = httpx.post(f"{secured}/retrieve", content=b"not json", headers={"content-type": "text/plain"})
    assert r.status_code == 401


def test_health_and_docs_stay_public_with_a_key(secured: str) -> None:
    health = httpx.get(f"{secured}/health")
    assert health.status_code == 200 and health.json()["auth"] is True
    assert httpx.get(f"{secured}/openapi.json").status_code == 200
    assert KEY not in health.text and KEY not in httpx.get(f"{secured}/openapi.json").text


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.org", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_non_loopback_bind_without_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAGEGEN_TEST_KEY", raising=False)
    cfg = ServerConfig(host="0.0.0.0", port=0, api_key_env="SAGEGEN_TEST_KEY")
    with pytest.raises(ConfigError, match=r"SAGEGEN_TEST_KEY.*or bind to 127\.0\.0\.1"):
        check_bind(cfg, resolve_api_key(cfg))
    # serve() refuses before binding anything.
    with pytest.raises(ConfigError, match="SAGEGEN_TEST_KEY"):
        serve(WordOverlap(), cfg, on_ready=lambda _url: pytest.fail("must not start"))
    monkeypatch.setenv("SAGEGEN_TEST_KEY", "   ")  # blank counts as unset
    with pytest.raises(ConfigError):
        check_bind(cfg, resolve_api_key(cfg))
    monkeypatch.setenv("SAGEGEN_TEST_KEY", KEY)
    check_bind(cfg, resolve_api_key(cfg))  # a key makes a public bind acceptable
    check_bind(ServerConfig(host="127.0.0.1"), None)  # loopback needs none


def test_prepared_server_reads_key_from_env_and_enforces_it_on_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAGEGEN_TEST_KEY", KEY)
    prepared = prepare_server(
        WordOverlap(), ServerConfig(port=0, api_key_env="SAGEGEN_TEST_KEY", log_level="warning")
    )
    assert prepared.url.startswith("http://127.0.0.1:") and not prepared.url.endswith(":0")
    worker = threading.Thread(target=prepared.run, daemon=True)
    worker.start()
    try:
        # The socket already listens, so a request made before uvicorn's loop runs simply waits.
        assert (
            httpx.post(f"{prepared.url}/retrieve", json={"queries": ["Paris"]}, timeout=10).status_code == 401
        )
        headers = {"X-API-Key": KEY}
        ok = httpx.post(f"{prepared.url}/retrieve", json={"queries": ["Paris"]}, headers=headers, timeout=10)
        assert ok.status_code == 200
        assert httpx.get(f"{prepared.url}/health", timeout=10).json()["auth"] is True
    finally:
        prepared.stop()
        worker.join(timeout=10)
    assert not worker.is_alive()


# --------------------------------------------------------------------------- real BM25 over a real corpus


def _load_searchr1(path: Path) -> list[Doc]:
    return [
        Doc.from_contents(str(r["id"]), r["contents"]) for r in map(json.loads, path.read_text().splitlines())
    ]


def test_real_bm25_over_hotpotqa_serves_what_the_index_returns(shared_data: Path, tmp_path: Path) -> None:
    index_mod = pytest.importorskip("sagegen.retrieval.index")
    from sagegen.config import RetrievalConfig

    docs = _load_searchr1(shared_data / "hotpotqa" / "corpus.jsonl")
    index_mod.build_index(docs, "bm25", RetrievalConfig(), tmp_path / "idx")
    bm25 = index_mod.open_index(tmp_path / "idx")
    questions = [
        json.loads(x) for x in (shared_data / "hotpotqa" / "questions.jsonl").read_text().splitlines()[:20]
    ]
    queries = [q["question"] for q in questions]
    local = bm25.search(queries, 5)

    with running_server(create_app(bm25, ServerConfig())) as base:
        health = httpx.get(f"{base}/health").json()
        r = httpx.post(
            f"{base}/retrieve", json={"queries": queries, "topk": 5, "return_scores": True}, timeout=30
        )
    assert r.status_code == 200
    assert health["kind"] == "bm25" and health["n_docs"] == len(docs) == 994
    served = r.json()["result"]
    assert len(served) == len(queries)
    for hits, items in zip(local, served, strict=True):
        assert [(h.doc.id, h.doc.contents, h.score) for h in hits] == [
            (i["document"]["id"], i["document"]["contents"], i["score"]) for i in items
        ]
    # And it is a real retriever: most questions find a supporting paragraph in the top 5.
    found = sum(
        bool(set(q["supporting"]) & {i["document"]["id"] for i in items})
        for q, items in zip(questions, served, strict=True)
    )
    assert found >= 17, found  # measured 20/20 with the default BM25; quality proper is tested elsewhere


# --------------------------------------------------------------------------- the `sagegen serve` command


def _stop(proc: Any) -> tuple[int, str]:
    import signal

    # What Ctrl-C sends: uvicorn finishes in-flight requests, then re-raises the signal, which
    # sagegen's main() reports as "interrupted" with the conventional exit status 130.
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=20)
    except Exception:
        proc.kill()
        raise
    return proc.returncode, err


def test_cli_serve_corpus_bm25_end_to_end(tmp_path: Path) -> None:
    from sagegen.config import load_config
    from sagegen.retrieval.factory import build_retriever
    from sagegen.retrieval.http import HTTPRetriever

    corpus = write_searchr1(tmp_path / "corpus.jsonl", DOCS)
    idx = tmp_path / "indexes"
    t0 = time.perf_counter()
    proc, base = start_serve(
        ["--corpus", str(corpus), "--kind", "bm25", "-s", f"retrieval.index_dir={idx}"], tmp_path
    )
    try:
        health = httpx.get(f"{base}/health", timeout=10).json()
        assert health["kind"] == "bm25" and health["n_docs"] == len(DOCS)
        raw = httpx.post(
            f"{base}/retrieve", json={"queries": ["Who wrote Hamlet?"], "topk": 1, "return_scores": True}
        )
        assert raw.json()["result"][0][0]["document"] == {"id": "p3", "contents": DOCS[3].contents}
        cfg = load_config(
            None, [f"corpus.path={corpus}", "retrieval.kind=bm25", f"retrieval.index_dir={idx}"]
        )
        queries = ["capital of Germany", "Rhone river Lyon", "largest city of France"]
        with HTTPRetriever(
            cfg.retrieval.http.model_copy(update={"url": base, "api_key_env": None})
        ) as remote:
            got = remote.search(queries, 3)
        local = build_retriever(cfg)  # reuses the index the server built
        assert as_rows(got) == as_rows(local.search(queries, 3))
    finally:
        rc, err = _stop(proc)
    assert rc == 130 and "Shutting down" in err, err
    assert "Traceback" not in err
    print(f"sagegen serve: start to stop {time.perf_counter() - t0:.1f}s")


def as_rows(results: list[list[Hit]]) -> list[list[tuple[str, str, float]]]:
    return [[(h.doc.id, h.doc.contents, h.score) for h in hits] for hits in results]


def test_cli_serve_index_dir(tmp_path: Path) -> None:
    from sagegen.config import RetrievalConfig
    from sagegen.retrieval.index import build_index

    build_index(DOCS, "bm25", RetrievalConfig(), tmp_path / "idx")
    proc, base = start_serve(["--index", str(tmp_path / "idx")], tmp_path)
    try:
        r = httpx.post(
            f"{base}/retrieve", json={"queries": ["Berlin Germany capital"], "topk": 2}, timeout=10
        )
        assert r.status_code == 200 and r.json()["result"][0][0]["id"] == "p2"
    finally:
        rc, err = _stop(proc)
    assert rc == 130 and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "SAGEGEN_API_KEY"),
        (["--index", "x", "--corpus", "y"], "cannot be combined|do not combine"),
        (["--kind", "nonsense"], "retrieval.kind"),
        (["--index", "does-not-exist"], "does-not-exist"),
    ],
    ids=["public-bind-without-key", "index-and-corpus", "bad-kind", "missing-index"],
)
def test_cli_serve_refuses_bad_invocations(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    import re
    import sys

    from sagegen.cli.main import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SAGEGEN_API_KEY", raising=False)
    monkeypatch.setattr(sys, "argv", ["sagegen", "serve", *args, "--port", "0"])
    with pytest.raises(SystemExit) as exit_:
        main()
    out, err = capsys.readouterr()
    assert exit_.value.code == 2, (out, err)
    assert re.search(message, " ".join(err.split())), err
    assert "Traceback" not in err and "/retrieve" not in out
