"""``llm.base_url`` as a list of replicas: least-in-flight routing, a replica that dies or fails is set
aside and its requests go to the others, all down is the usual bounded failure, counts in the ledger.

Every replica is a real keep-alive HTTP server on loopback (tests/helpers/replica_server.py).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.replica_server import Replica
from sagegen.config import LLMConfig
from sagegen.errors import LLMError
from sagegen.ledger.store import RunStore
from sagegen.llm.base import collect_tries
from sagegen.llm.openai_backend import OpenAIBackend, endpoint_label


def backend(urls: list[str], **kw: object) -> OpenAIBackend:
    params: dict[str, object] = {
        "backend": "openai",
        "model": "m",
        "base_url": urls,
        "api_key_env": None,
        "timeout": 5.0,
        "max_retries": 3,
        "retry_backoff": 0.01,
        "retry_max_wait": 5.0,
        "cache": False,
    }
    params.update(kw)
    return OpenAIBackend(LLMConfig(**params))  # type: ignore[arg-type]


def ask(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"q{i}"}]


@pytest.mark.parametrize("n", [2, 3])
def test_calls_spread_by_fewest_in_flight(n: int) -> None:
    # Every replica holds its replies until 4 requests are open on it: the calls are only all
    # answered if the client sent exactly 4 to each (fewest in flight), none queued behind another.
    reps = [Replica(f"r{i}", barrier=4) for i in range(n)]
    for r in reps:
        r.__enter__()
    try:
        llm = backend([r.url for r in reps])

        async def burst() -> list[str]:
            return [c.text for c in await asyncio.gather(*(llm.complete(ask(i)) for i in range(4 * n)))]

        texts = asyncio.run(burst())
    finally:
        for r in reps:
            r.__exit__()
    assert [r.requests for r in reps] == [4] * n and [r.peak for r in reps] == [4] * n
    assert sorted(t.split(": ")[1] for t in texts) == sorted(f"q{i}" for i in range(4 * n))
    assert {c["endpoint"]: (c["calls"], c["failures"], c["in_flight"]) for c in llm.endpoint_counts()} == {
        r.url: (4, 0, 0) for r in reps
    }


def test_a_faster_replica_takes_more_of_the_calls() -> None:
    with Replica("slow", delay=0.2) as slow, Replica("fast", delay=0.01) as fast:
        llm = backend([slow.url, fast.url])

        async def lanes() -> None:
            async def lane(k: int) -> None:
                for i in range(10):
                    await llm.complete(ask(100 * k + i))

            await asyncio.gather(*(lane(k) for k in range(4)))

        asyncio.run(lanes())
    assert slow.requests + fast.requests == 40
    assert fast.requests > 2 * slow.requests  # the slow one keeps requests in flight longer


@pytest.mark.parametrize("n", [2, 3])
def test_a_replica_that_dies_mid_run_is_set_aside(n: int) -> None:
    reps = [Replica(f"r{i}", delay=0.02) for i in range(n)]
    for r in reps:
        r.__enter__()
    dead = reps[0]
    try:
        # A long set-aside (first backoff 30 s): once dead, the replica gets no request again here.
        llm = backend([r.url for r in reps], retry_backoff=30.0, retry_max_wait=60.0)
        tries_of: list[list] = []

        async def run() -> list[str]:
            done = 0

            async def lane(k: int) -> list[str]:
                nonlocal done
                out = []
                for i in range(12):
                    with collect_tries() as tries:
                        out.append((await llm.complete(ask(100 * k + i))).text)
                    tries_of.append(list(tries))
                    done += 1
                    if done == 30:  # a third of the way: the replica dies under load
                        dead.kill()
                return out

            return [t for lane_out in await asyncio.gather(*(lane(k) for k in range(8))) for t in lane_out]

        texts = asyncio.run(run())
    finally:
        for r in reps:
            r.__exit__()
    assert len(texts) == 96  # every call answered, by the replicas still alive after the death
    counts = {c["endpoint"]: c for c in llm.endpoint_counts()}
    assert all(c["in_flight"] == 0 for c in counts.values())
    failed = counts[dead.url]["failures"]
    assert failed >= 1 and all(counts[r.url]["failures"] == 0 for r in reps[1:])
    # Each failure was one try of a call that then went at once to another replica (no wait).
    retried = [t for t in tries_of if len(t) > 1]
    assert sum(len(t) - 1 for t in retried) == failed
    for t in retried:
        assert [x.status for x in t] == [None] * (len(t) - 1) + [200]
        assert all("connection error" in x.error and x.wait == 0.0 for x in t[:-1])
    assert sum(c["calls"] for c in counts.values()) == 96 + failed
    assert counts[dead.url]["calls"] < 30 + 8  # nothing after the death but the failures


def test_a_replica_answering_5xx_is_set_aside_and_retried_later() -> None:
    with Replica("bad", fail_with=503) as bad, Replica("good", delay=0.01) as good:
        llm = backend([bad.url, good.url], retry_backoff=0.3)

        async def run() -> None:
            for i in range(5):  # one after another: the first goes to "bad" (first in turn), then "good"
                assert (await llm.complete(ask(i))).text == f"good: q{i}"
            await asyncio.sleep(0.35)  # the set-aside is over: "bad" is tried again (its turn comes
            for i in range(2):  # within two calls), fails again, and is set aside for longer (0.6 s)
                assert (await llm.complete(ask(10 + i))).text == f"good: q{10 + i}"

        asyncio.run(run())
    assert bad.requests == 2 and good.requests == 7
    assert {c["endpoint"]: c["failures"] for c in llm.endpoint_counts()} == {bad.url: 2, good.url: 0}


def test_all_endpoints_down_is_one_bounded_error_without_credentials() -> None:
    with Replica("a", fail_with=500) as a, Replica("b", fail_with=502) as b:
        urls = [a.url.replace("http://", "http://user:pw-SECRET@") + "?key=QSECRET", b.url]
        llm = backend(urls, max_retries=3)

        async def run() -> None:
            await llm.complete(ask(0))

        with pytest.raises(LLMError) as err:
            asyncio.run(run())
    assert a.requests + b.requests == 4  # 1 + max_retries, spread over both, never more
    msg = str(err.value)
    assert "gave up after 4 attempt(s)" in msg and a.url in msg and b.url in msg
    assert "SECRET" not in msg and "user" not in msg
    assert [c["endpoint"] for c in llm.endpoint_counts()] == [a.url, b.url]
    assert endpoint_label(urls[0]) == a.url


def test_endpoint_counts_are_booked_in_the_ledger(tmp_path: Path) -> None:
    with Replica("a", delay=0.01) as a, Replica("b", delay=0.01) as b:
        llm = backend([a.url, b.url], retry_backoff=30.0, retry_max_wait=60.0)
        store, _ = RunStore.create_or_resume(tmp_path / "run", {"x": 1}, "x: 1\n")
        store.begin_session()
        store.watch_endpoints(llm.name, llm)

        async def run() -> None:
            await asyncio.gather(*(llm.complete(ask(i)) for i in range(6)))
            b.kill()
            for i in range(3):
                await llm.complete(ask(10 + i))
            store.record_call("solver", llm.name, 3, 2, 0.1, False)  # a booking carries the counts

        asyncio.run(run())
        store.end_session("completed")
        store.close()
    with RunStore.open(tmp_path / "run") as ro:
        rows = {
            r["endpoint"]: (r["model"], r["calls"], r["failures"], r["in_flight"])
            for r in ro.endpoint_stats()
        }
    assert rows[a.url][0] == "openai:m" and rows[a.url][2:] == (0, 0)
    assert rows[b.url][2] == 1  # the call that met the dead replica (its turn came), then went to a
    assert rows[a.url][1] + rows[b.url][1] == 6 + 3 + 1


def _sim(slots: int) -> tuple[subprocess.Popen[str], str]:
    """bench/sim_llm_server.py: a simulated OpenAI-compatible server following sagegen's protocol."""
    sim = Path(__file__).parents[2] / "bench" / "sim_llm_server.py"
    proc = subprocess.Popen(
        [sys.executable, str(sim), "--slots", str(slots), "--time-scale", "0.01"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    assert line.startswith("port "), line
    return proc, f"http://127.0.0.1:{int(line.split()[1])}/v1"


def test_generate_over_two_replicas_shows_both_in_status(tmp_path: Path) -> None:
    from sage_loop_helpers import write_corpus
    from sagegen.cli.display import format_status
    from sagegen.config import load_config
    from sagegen.loop.session import run_generate

    write_corpus(tmp_path / "corpus.jsonl")
    sims = [_sim(4), _sim(4)]
    try:
        urls = [u for _, u in sims]
        cfg = load_config(
            None,
            [
                "llm.backend=openai",
                f"llm.base_url=[{urls[0]}, {urls[1]}]",
                "llm.model=sim",
                "llm.cache=false",
                "judge.method=llm",
                "pipeline.num_seeds=4",
                "pipeline.concurrency=4",
                "pipeline.rounds=1",
                "pipeline.attempts=2",
                f"corpus.path={tmp_path / 'corpus.jsonl'}",
                f"retrieval.index_dir={tmp_path / 'idx'}",
            ],
        )
        run_generate(cfg, tmp_path / "run")
    finally:
        for proc, _ in sims:
            proc.terminate()
            proc.wait(timeout=10)
    with RunStore.open(tmp_path / "run") as store:
        rows = store.endpoint_stats()
        text = format_status(store)
        tries = sum(t["tries"] for t in store.try_stats().values())
    assert sorted(r["endpoint"] for r in rows) == sorted(urls) and all(r["calls"] > 0 for r in rows)
    assert sum(r["calls"] for r in rows) == tries  # every request booked, on one of the two
    assert all((r["failures"], r["in_flight"]) == (0, 0) for r in rows)
    for r in rows:
        assert f"endpoint {r['endpoint']} (openai:sim): {r['calls']} requests, 0 failed" in text


def test_an_environment_proxy_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    # The requests for a remote endpoint go to the proxy named by HTTP_PROXY (here a replica on
    # loopback that answers whatever it is sent), as they did through the SDK; the remote host
    # itself is never contacted (the test's network guard would refuse it).
    monkeypatch.setenv("SAGEGEN_TEST_PROXY_KEY", "sk-proxy-test")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with Replica("proxy") as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        llm = backend(["http://models.example.com/v1"], api_key_env="SAGEGEN_TEST_PROXY_KEY")
        text = asyncio.run(llm.complete(ask(1))).text
    assert text == "proxy: q1" and proxy.requests == 1
