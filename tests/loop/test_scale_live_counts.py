"""``--workers`` and ``--ray``: the parent's live call counts move while the workers' pairs run, not only
when a pair finishes; every call is still counted once. Two real worker processes (or two actors on a
local Ray) on the scripted fixture, whose calls sleep (blocking), so a pair takes several calls' time."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.killrun import _corpus, _rows
from sagegen.config import load_config
from sagegen.events import CallsCounted, PairFinished, PairStarted
from sagegen.loop.session import quick_defaults, run_generate

DELAY = 0.3  # seconds per call: a pair of 4+ calls outlasts several COUNTS_EVERY periods


@pytest.fixture
def executor(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "ray":
        if os.environ.get("CI") == "true":  # part of the CI install: missing is a failure, not a skip
            import ray
        else:
            ray = pytest.importorskip("ray")
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")  # loopback only
        try:
            yield "ray"
        finally:
            ray.shutdown()
    else:
        yield request.param


@pytest.mark.parametrize("executor", ["local", "ray"], indirect=True)
def test_two_workers_report_their_calls_before_their_first_pair_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, executor: str
) -> None:
    _corpus(tmp_path / "corpus.jsonl")
    monkeypatch.chdir(tmp_path)  # the config's paths are relative, for the workers too
    cfg = load_config(
        None,
        [
            *quick_defaults(),
            "pipeline.num_seeds=4",
            "pipeline.target=1-2",
            "pipeline.rounds=1",
            "pipeline.attempts=2",
            "pipeline.concurrency=2",
            "pipeline.workers=2",
            "corpus.path=corpus.jsonl",
            "retrieval.index_dir=idx",
            "judge.method=em",
            "llm.backend=scripted",
            f"llm.model=fixture:sage@{DELAY}",
            "llm.cache_path=c.sqlite",
            "pipeline.precheck=off",
            f"pipeline.executor={executor}",
        ],
    )
    events: list[Any] = []
    result = run_generate(cfg, tmp_path / "run", on_event=events.append)
    assert result.stats.errors == 0 and result.stats.done == 4
    # The parent announces a pair when its result arrives (a worker says nothing at the start).
    first = next(i for i, e in enumerate(events) if isinstance(e, PairStarted))
    early = [e for e in events[:first] if isinstance(e, CallsCounted)]
    # Counts sent only with a finished pair put exactly one CallsCounted (that pair's) before it.
    assert len(early) >= 2, [type(e).__name__ for e in events[: first + 2]]
    assert all(e.calls > 0 for e in early)
    # Nothing counted twice: the reports add up to the calls the workers booked in the ledger.
    counted = [e for e in events if isinstance(e, CallsCounted)]
    assert sum(e.calls for e in counted) == result.calls > sum(e.calls for e in early)
    assert sum(e.cached for e in counted) == result.cached
    booked = _rows(tmp_path / "run" / "ledger.sqlite", "SELECT COUNT(*) FROM llm_calls")
    assert booked == [(result.calls,)]
    assert sum(isinstance(e, PairFinished) for e in events) == 4
