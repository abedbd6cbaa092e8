"""``pipeline.executor: ray`` on a real local Ray (``ray.init(num_cpus=2)``), two pair workers, against one
process: the same dataset, every result in the driver's ledger, every call in the driver's call cache.

Under CI (``CI=true``) Ray is part of the test install (``sagegen[all]`` includes the ``ray`` extra), so a
missing Ray fails here instead of skipping.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from test_resume_sigkill import N, _corpus, _rows
from test_scale_workers import _outcome

if os.environ.get("CI") == "true":
    import ray
else:
    ray = pytest.importorskip("ray")

from sagegen.config import load_config
from sagegen.pipeline import quick_defaults, run_generate
from sagegen.records import Doc

RAY = ("pipeline.executor=ray", "pipeline.workers=2")


def _settings(cache: str, *extra: str) -> list[str]:
    return [*quick_defaults(), f"pipeline.num_seeds={N}", "pipeline.target=1-2", "pipeline.rounds=2",
            "pipeline.attempts=2", "pipeline.concurrency=2", "corpus.path=corpus.jsonl",
            "retrieval.index_dir=idx", "judge.method=em", "llm.backend=scripted",
            "llm.model=fixture:sage@0.02",
            f"llm.cache_path={cache}", "pipeline.precheck=off", *extra]


@pytest.fixture(scope="module")
def local_ray() -> Any:
    # Loopback only: the tests reach no other address (tests/conftest.py).
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


@pytest.fixture
def corpus_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _corpus(tmp_path / "corpus.jsonl")
    monkeypatch.chdir(tmp_path)  # the config's paths are relative: the Ray workers must resolve them alike
    return tmp_path


def test_two_ray_workers_make_the_same_dataset_as_one_process(local_ray: Any, corpus_dir: Path) -> None:
    one = run_generate(load_config(None, _settings("one.sqlite")), corpus_dir / "one" / "run", progress=False)
    spread = run_generate(load_config(None, _settings("ray.sqlite", *RAY)),
                          corpus_dir / "ray" / "run", progress=False)
    assert one.stats.errors == spread.stats.errors == 0
    expected = _outcome(corpus_dir / "one" / "run")
    assert _outcome(corpus_dir / "ray" / "run") == expected
    assert {p[4] for p in expected["pairs"]} >= {"pass", "too_easy"}
    # Counted in the driver from the workers' reports, and booked in the driver's ledger.
    assert spread.stats.done == N and spread.stats.calls == one.stats.calls > 0
    ledger = corpus_dir / "ray" / "run" / "ledger.sqlite"
    paid = _rows(ledger, "SELECT SUM(1 - cached), COUNT(DISTINCT session) FROM llm_calls")
    assert paid == [(one.stats.calls, 1)]
    # The calls went into the driver's cache file through the ledger actor, each once.
    assert _rows(corpus_dir / "ray.sqlite", "SELECT COUNT(*) FROM calls") == \
        _rows(corpus_dir / "one.sqlite", "SELECT COUNT(*) FROM calls")
    workers = [json.loads(m) for (m,) in _rows(ledger, "SELECT message FROM events WHERE kind='worker'")]
    assert sorted(w["worker"] for w in workers) == [0, 1]
    assert len({w["where"] for w in workers}) == 2 and sum(w["pairs"] for w in workers) == N

    # A rerun has nothing left to do and pays for nothing.
    again = run_generate(load_config(None, _settings("ray.sqlite", *RAY)),
                         corpus_dir / "ray" / "run", progress=False)
    assert again.resumed and again.stats.already_done == N and again.stats.calls == 0
    assert _outcome(corpus_dir / "ray" / "run") == expected


def test_a_worker_that_reads_another_corpus_stops_the_run_with_a_clear_error(
    local_ray: Any, corpus_dir: Path
) -> None:
    from sagegen.errors import ConfigError
    from sagegen.scale import run_pairs
    from sagegen.store import RunStore

    cfg = load_config(None, _settings("c.sqlite", *RAY))
    run = corpus_dir / "wrong" / "run"
    store, _ = RunStore.create_or_resume(run, cfg.model_dump(mode="json"), cfg.dump())
    session = store.begin_session()
    seen: list[Any] = []
    # The driver's corpus (what `docs` says) is not what the workers open from corpus.path.
    driver_docs = [Doc(id="elsewhere", title="Elsewhere", text="A passage only the driver has.")]
    with pytest.raises(ConfigError, match="is not the driver's") as err:
        run_pairs(cfg, run, list(range(N)), seen.append, session=session, docs=driver_docs)
    assert "same paths" in str(err.value) and "Traceback" not in str(err.value)
    assert seen == [] and _rows(run / "ledger.sqlite", "SELECT COUNT(*) FROM pairs") == [(0,)]
    store.close()
