"""Where a model is served is not what it answers: ``llm.base_url`` may change on resume (a replica added,
a server moved to another port) and the call cache keys on the model, not on the URL; a change of model
still refuses the resume and misses the cache.

The servers are real HTTP servers on loopback: replicas that name themselves in each reply
(tests/helpers/replica_server.py), and a server playing the ``sage`` fixture so that a real
``sagegen generate`` process runs the SAGE loop over HTTP (tests/helpers/fixture_server.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.fixture_server import FixtureServer
from helpers.replica_server import Replica
from sage_loop_helpers import run_cli, write_corpus
from sagegen.config import Config, LLMConfig
from sagegen.ledger.store import VOLATILE_KEYS, config_diff
from sagegen.llm.factory import build_llm

MSGS = [{"role": "user", "content": "q0"}]


def test_base_url_is_volatile_in_every_llm_section_and_the_model_is_not() -> None:
    assert {"llm.base_url", "solver_llm.base_url", "judge_llm.base_url", "solver_llms.*.base_url"} <= set(
        VOLATILE_KEYS
    )
    assert not {"llm.model", "llm.extra_body", "llm.send_seed", "llm.reasoning_effort"} & set(VOLATILE_KEYS)
    # How a request is written (the cap's field name, the provider's rules, stops on the wire or applied
    # to the answer text) changes nothing the model answers (docs/models.md).
    assert {"llm.max_tokens_param", "llm.provider", "llm.wire_stops"} <= set(VOLATILE_KEYS)

    def cfg(url: object, model: str = "m") -> dict:
        llm = {"backend": "openai", "model": model, "base_url": url}
        return Config(llm=llm, judge_llm=llm, solver_llms=[llm]).model_dump(mode="json")

    a = cfg("http://127.0.0.1:8001/v1")
    assert config_diff(a, cfg(["http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1"])) == []
    assert config_diff(a, cfg("http://10.0.0.7:9000/v1")) == []
    assert "llm.model: 'm' -> 'm2'" in config_diff(a, cfg("http://127.0.0.1:8001/v1", "m2"))


def _cached(url: str | list[str], path: Path, **kw: object):
    params: dict[str, object] = {
        "backend": "openai",
        "model": "m",
        "base_url": url,
        "api_key_env": None,
        "max_retries": 0,
        "cache": True,
        "cache_path": str(path),
    }
    params.update(kw)
    return build_llm(LLMConfig(**params))  # type: ignore[arg-type]


async def test_a_call_cached_through_one_server_is_a_hit_through_another(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    with Replica("a") as a, Replica("b") as b, Replica("c") as c:
        first = await _cached(a.url, path).complete(MSGS, seed=1)
        # Another port, then a list of two replicas: both are hits, answered as server a did.
        moved = await _cached(b.url, path).complete(MSGS, seed=1)
        listed = await _cached([b.url, c.url], path).complete(MSGS, seed=1)
        assert (first.text, first.cached) == ("a: q0", False)
        assert (moved.text, moved.cached) == (listed.text, listed.cached) == ("a: q0", True)
        assert (a.requests, b.requests, c.requests) == (1, 0, 0)
        # What decides the answer still does: another model, other request extras, another seed.
        other_model = await _cached(b.url, path, model="m2").complete(MSGS, seed=1)
        extras = await _cached(b.url, path, extra_body={"top_k": 20}).complete(MSGS, seed=1)
        no_seed = await _cached(b.url, path, send_seed=False).complete(MSGS, seed=1)
        reseeded = await _cached(b.url, path).complete(MSGS, seed=2)
    assert [x.cached for x in (other_model, extras, no_seed, reseeded)] == [False] * 4
    assert other_model.text == "b: q0" and b.requests == 4


def _generate(cwd: Path, out: str, n: int, url: str | list[str], *sets: str):
    urls = url if isinstance(url, str) else f"[{', '.join(url)}]"
    base = [
        "corpus.path=corpus.jsonl",
        "retrieval.index_dir=idx",
        "llm.backend=openai",
        "llm.model=m",
        "llm.api_key_env=SAGEGEN_NO_SUCH_KEY",
        "judge.method=em",
        "pipeline.precheck=off",
        "pipeline.concurrency=1",
        "pipeline.target=2",
        f"llm.base_url={urls}",
        *sets,
    ]
    args = ["generate", "--out", out, "--no-progress", "-n", str(n)]
    for s in base:
        args += ["-s", s]
    return run_cli(*args, cwd=cwd, timeout=240)


def _dataset(run: Path) -> list[tuple[str, str]]:
    rows = [json.loads(x) for x in (run / "dataset.jsonl").read_text().splitlines()]
    return sorted((r["question"], r["answer"]) for r in rows)


@pytest.fixture
def corpus_cwd(tmp_path: Path) -> Path:
    write_corpus(tmp_path / "corpus.jsonl")
    return tmp_path


def test_resume_with_a_replica_added_then_a_port_changed_repeats_no_call(corpus_cwd: Path) -> None:
    off = "llm.cache=false"  # so that every call not repeated is the ledger's doing, not the cache's
    with FixtureServer() as ref:
        assert _generate(corpus_cwd, "ref", 3, ref.url, off).returncode == 0
    assert ref.requests > 0
    with FixtureServer() as a, FixtureServer() as b, FixtureServer() as c:
        steps = [(1, a.url), (2, [a.url, b.url]), (3, c.url)]  # one URL, two replicas, a new port
        for n, url in steps:
            res = _generate(corpus_cwd, "run", n, url, off)
            assert res.returncode == 0, res.stderr
            assert "different configuration" not in res.stderr
        assert a.requests > 0 and b.requests > 0 and c.requests > 0
        # The three sessions together made exactly the calls of the one uninterrupted run.
        assert a.requests + b.requests + c.requests == ref.requests
        seen = c.requests
        other = _generate(corpus_cwd, "run", 3, c.url, off, "llm.model=m2")
        assert other.returncode == 2 and "llm.model: 'm' -> 'm2'" in other.stderr, other.stderr
        assert "Traceback" not in other.stderr and c.requests == seen
    assert _dataset(corpus_cwd / "run") == _dataset(corpus_cwd / "ref") != []


def test_a_new_run_through_other_servers_is_answered_from_the_cache(corpus_cwd: Path) -> None:
    cache = "llm.cache_path=cache.sqlite"
    with FixtureServer() as a, FixtureServer() as b, FixtureServer() as c:
        assert _generate(corpus_cwd, "first", 3, a.url, cache).returncode == 0
        again = _generate(corpus_cwd, "second", 3, [b.url, c.url], cache)
        assert again.returncode == 0, again.stderr
        assert a.requests > 0 and (b.requests, c.requests) == (0, 0)
        assert _dataset(corpus_cwd / "second") == _dataset(corpus_cwd / "first") != []
        other = _generate(corpus_cwd, "third", 3, b.url, cache, "llm.model=m2")
        assert other.returncode == 0, other.stderr
        assert b.requests > 0  # another model: every call misses
