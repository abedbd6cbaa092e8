"""``sagegen estimate`` on scripted pilots: per-seed costs add up to the ledger, projections scale, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_loop_helpers import DOCS, run_cli, write_corpus
from sagegen.config import load_config
from sagegen.errors import InputError
from sagegen.ledger.store import RunStore
from sagegen.loop.estimate import SeedCost, estimate, format_estimate, pilot_costs
from sagegen.loop.session import run_generate

SETS = [
    "llm.backend=scripted",
    "llm.model=fixture:sage",
    "judge.method=em",
    "pipeline.precheck=off",
    "pipeline.target=2",
    "pipeline.rounds=1",
    "pipeline.attempts=2",
    "llm.cache=false",
]


@pytest.fixture
def pilot(tmp_path: Path) -> Path:
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    cfg = load_config(
        None,
        [*SETS, f"corpus.path={corpus}", f"retrieval.index_dir={tmp_path / 'idx'}", "pipeline.num_seeds=12"],
    )
    run_generate(cfg, tmp_path / "run")
    return tmp_path / "run"


def test_per_seed_costs_add_up_to_the_ledger(pilot: Path) -> None:
    costs, usage = pilot_costs(pilot)
    assert len(costs) == 12
    assert sum(c.calls for c in costs) == sum(u["calls"] for u in usage.values())
    assert sum(c.prompt_tokens for c in costs) == sum(u["prompt_tokens"] for u in usage.values())
    assert sum(c.completion_tokens for c in costs) == sum(u["completion_tokens"] for u in usage.values())
    with RunStore.open(pilot) as store:
        assert sum(c.accepted for c in costs) == store.counts().get("output.dataset", 0)


def test_projection_scales_and_has_an_interval(pilot: Path) -> None:
    costs, usage = pilot_costs(pilot)
    accepted = sum(c.accepted for c in costs)
    assert accepted >= 1  # the fixture's solver needs 2 searches for a quarter of the questions
    same = estimate(costs, accepted, price_in=1.0, price_out=2.0)
    calls = sum(u["calls"] for u in usage.values())
    assert same["estimate"]["calls"] == pytest.approx(calls)
    assert same["estimate"]["seeds"] == pytest.approx(12)
    toks = [sum(u[k] for u in usage.values()) for k in ("prompt_tokens", "completion_tokens")]
    assert same["estimate"]["cost"] == pytest.approx(toks[0] / 1e6 + 2 * toks[1] / 1e6)
    big = estimate(costs, 10 * accepted, concurrency=4, throughput=100.0)
    assert big["estimate"]["calls"] == pytest.approx(10 * calls)
    lo, hi = big["interval"]["calls"]
    assert lo <= big["estimate"]["calls"] <= hi and lo < hi
    assert big["estimate"]["wall_seconds"] >= 10 * toks[1] / 100.0 - 1e-6  # server-bound at 100 tok/s
    assert "accepted pairs" in format_estimate(big)


def test_no_accepted_pair_and_no_pilot() -> None:
    costs = [SeedCost(i, 0, 5, 100, 10, 1.0) for i in range(4)]
    res = estimate(costs, 100)
    assert res["estimate"] is None and res["interval"] is None
    assert "no accepted pair in the pilot" in format_estimate(res)
    with pytest.raises(InputError, match="no finished seed"):
        estimate([], 100)


def test_cli_estimate_runs_a_pilot(tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus.jsonl", DOCS)
    sets = [x for s in [*SETS, "corpus.path=corpus.jsonl", "retrieval.index_dir=idx"] for x in ("-s", s)]
    r = run_cli(
        "estimate",
        "runs/pilot",
        "--pilot",
        "6",
        "--pairs",
        "50",
        "--price-in",
        "0.5",
        "--json",
        *sets,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["pilot_seeds"] == 6 and res["target_pairs"] == 50
    r2 = run_cli("estimate", "runs/missing", cwd=tmp_path)
    assert r2.returncode == 2 and "not a sagegen run directory" in r2.stderr
