"""The run ledger: fresh/resume, config-change refusal, the read API, dedup and output rebuilding."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from sage_loop_helpers import SCRIPTED_RUN_SETS, run_cli, small_config, write_corpus
from sagegen.config import Config
from sagegen.errors import ConfigError, SagegenError
from sagegen.ids import derive_seed
from sagegen.ledger.damage import LedgerError
from sagegen.ledger.store import RunStore, config_diff
from sagegen.records import Candidate, Judgement, QAPair, Step, Trajectory, Verdict


def _open(run: Path, cfg: Config, **kw: bool) -> tuple[RunStore, bool]:
    return RunStore.create_or_resume(run, cfg.model_dump(mode="json"), cfg.dump(), **kw)


def _qa(idx: int, question: str, label: str = "pass") -> QAPair:
    return QAPair(
        id=f"r-{idx}",
        question=question,
        answer="1889",
        answer_type="date",
        target=2,
        difficulty=2,
        avg_at_k=0.5,
        label=label,
        round=1,
        seed_doc_id="d1",
    )  # type: ignore[arg-type]


def _fill(store: RunStore) -> None:
    store.begin_session()
    store.add_pair(0, "d1", 2, "date")
    cand = Candidate(question="When?", answer="1889", answer_type="date", target=2, seed_doc_id="d1")
    gen = Trajectory(
        agent="generator", question="When?", steps=(Step(kind="search", query="q", hit_ids=("d2",)),)
    )
    store.add_round(0, 1, "generate", cand, "p0.r1.gen", gen)
    for a, ok in enumerate([True, False]):
        traj = Trajectory(
            agent="solver",
            question="When?",
            answer="1889" if ok else "x",
            steps=tuple(Step(kind="search", query=f"s{i}") for i in range(2 + a)),
        )
        store.add_attempt(0, 1, a, 100 + a, f"p0.r1.a{a}", traj, Judgement(correct=ok, method="em"))
    store.set_verdict(
        0, 1, Verdict(correct=True, difficulty=2, passed=True, avg_at_k=0.5, label="pass", num_attempts=2)
    )
    store.record_call("generator", "m", 10, 5, 0.5, False)
    store.record_call("solver", "m", 20, 4, 0.25, True)
    store.event("early_stop", "msg", 0, 1)
    store.finish_pair(0, "pass", 1, _qa(0, "When?"), "dataset", "when")


def test_fresh_then_resume_and_the_read_api(tmp_path: Path) -> None:
    cfg = small_config()
    store, resumed = _open(tmp_path / "run", cfg)
    assert not resumed
    _fill(store)
    store.end_session("completed")
    store.close()
    assert (tmp_path / "run" / "config.yaml").read_text() == cfg.dump()

    store, resumed = _open(tmp_path / "run", cfg)
    assert resumed
    store.close()
    with RunStore.open(tmp_path / "run") as ro:
        assert ro.config == cfg.model_dump(mode="json")
        (pair,) = ro.pairs()
        assert (pair.index, pair.state, pair.target, pair.answer_type, pair.output) == (
            0,
            "pass",
            2,
            "date",
            "dataset",
        )
        assert pair.qa is not None and pair.qa.question == "When?"
        (rnd,) = pair.rounds
        assert rnd.kind == "generate" and rnd.candidate is not None and rnd.verdict is not None
        assert [(a.index, a.seed, a.num_searches, a.judgement.correct) for a in rnd.attempts] == [
            (0, 100, 2, True),
            (1, 101, 3, False),
        ]
        assert ro.trajectory("p0.r1.a1").answer == "x"
        assert ro.trajectory(rnd.gen_trace_id or "").agent == "generator"
        with pytest.raises(KeyError):
            ro.trajectory("nope")
        assert [tid for tid, _ in ro.trajectories(agent="solver")] == ["p0.r1.a0", "p0.r1.a1"]
        counts = ro.counts()
        assert counts["pairs"] == 1 and counts["pass"] == 1 and counts["finished"] == 1
        assert counts["attempts"] == 2 and counts["output.dataset"] == 1 and counts["llm_calls"] == 2
        assert ro.round_stats() == {1: {"generated": 1, "pass": 1}}
        assert ro.label_means() == {"pass": {"pairs": 1, "difficulty": 2.0, "avg_at_k": 0.5, "round": 1.0}}
        usage = ro.llm_usage()
        assert usage["generator"]["calls"] == 1 and usage["solver"]["cached"] == 1
        assert usage["solver"]["prompt_tokens"] == 20
        assert [e.kind for e in ro.events(0)] == ["early_stop"]
        assert [s["status"] for s in ro.sessions()] == ["completed"]
        assert list(ro.pairs(state="too_easy")) == []
        # read-only means read-only
        with pytest.raises(LedgerError, match=r"ledger\.sqlite: cannot write") as err:
            ro.event("x", "y")
        assert isinstance(err.value.__cause__, sqlite3.OperationalError)


def test_ledger_is_wal(tmp_path: Path) -> None:
    store, _ = _open(tmp_path / "run", small_config())
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_changed_config_is_refused_naming_the_keys(tmp_path: Path) -> None:
    store, _ = _open(tmp_path / "run", small_config())
    store.close()
    changed = small_config(rounds=2, target="3-5")
    with pytest.raises(ConfigError) as e:
        _open(tmp_path / "run", changed)
    msg = str(e.value)
    assert "pipeline.rounds: 3 -> 2" in msg and "pipeline.target: 2 -> '3-5'" in msg
    assert "--new-run" in msg and "--force" in msg
    assert "pipeline.attempts" not in msg  # only the keys that differ


def test_volatile_keys_may_change_and_force_starts_over(tmp_path: Path) -> None:
    store, _ = _open(tmp_path / "run", small_config())
    _fill(store)
    store.close()
    bigger = small_config(num_seeds=50, concurrency=8)
    bigger.llm.timeout = 5
    store, resumed = _open(tmp_path / "run", bigger)
    assert resumed and store.config["pipeline"]["num_seeds"] == 50
    store.close()
    store, resumed = _open(tmp_path / "run", small_config(rounds=1), force=True)
    assert not resumed and store.counts()["pairs"] == 0
    store.close()


def test_config_diff_lists_nested_keys() -> None:
    a, b = Config().model_dump(mode="json"), small_config().model_dump(mode="json")
    diff = config_diff(a, b)
    assert "judge.method: 'llm' -> 'em'" in diff and "pipeline.attempts: 4 -> 2" in diff
    assert not any(d.startswith("pipeline.num_seeds") for d in diff)  # volatile


def test_dedup_and_rebuild_outputs(tmp_path: Path) -> None:
    store, _ = _open(tmp_path / "run", small_config())
    for i, (q, out) in enumerate(
        [
            ("Q one?", "dataset"),
            ("Q two?", "too_easy"),
            ("Q one?", "dataset"),
            ("Q one?", "too_easy"),
            ("Q three?", "unsolved"),
        ]
    ):
        store.add_pair(i, "d1", 2, "date")
        label = {"dataset": "pass", "too_easy": "too_easy", "unsolved": "incorrect"}[out]
        key = store.finish_pair(i, label, 1, _qa(i, q, label), out, q.lower())
        if key:
            store.append_output(key, _qa(i, q, label))
    # Duplicates are per output file: the same question may be accepted once and kept as too easy once.
    assert [p.output for p in store.pairs()] == ["dataset", "too_easy", "duplicate", "too_easy", "unsolved"]
    data = tmp_path / "run" / "dataset.jsonl"
    good = data.read_text()
    data.write_text(good + '{"format_version": 1, "id": "r-9", "quest')  # killed mid-line
    (tmp_path / "run" / "unsolved.jsonl").unlink()
    assert store.rebuild_outputs() == {"dataset": 1, "too_easy": 2, "unsolved": 1, "ambiguous": 0}
    assert data.read_text() == good
    assert [json.loads(x)["id"] for x in (tmp_path / "run" / "too_easy.jsonl").read_text().splitlines()] == [
        "r-1",
        "r-3",
    ]
    store.close()


def test_open_refuses_a_non_run_directory(tmp_path: Path) -> None:
    with pytest.raises(SagegenError, match="not a sagegen run directory"):
        RunStore.open(tmp_path)


def test_derive_seed_is_stable_and_distinct() -> None:
    assert derive_seed(0, "solve", 3, 2, 1) == derive_seed(0, "solve", 3, 2, 1)
    assert derive_seed(0, "solve", 3, 2, 1) == 466820691  # pinned: cache keys must survive releases
    seeds = {derive_seed(0, "solve", p, r, a) for p in range(20) for r in range(3) for a in range(4)}
    assert len(seeds) == 240 and all(0 <= s < 2**31 for s in seeds)


def test_cli_refuses_a_changed_config_and_new_run_starts_beside_it(tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus.jsonl")
    base = [
        "generate",
        "--out",
        "runs/x",
        "--no-progress",
        *SCRIPTED_RUN_SETS,
        "-s",
        "llm.cache_path=cache.sqlite",
        "-n",
        "2",
    ]
    first = run_cli(*base, cwd=tmp_path, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "pairs      2 finished of 2" in first.stdout
    refused = run_cli(*base, "--rounds", "1", cwd=tmp_path, timeout=120)
    assert refused.returncode == 2
    assert "different configuration" in refused.stderr and "pipeline.rounds: 2 -> 1" in refused.stderr
    assert "Traceback" not in refused.stderr
    again = run_cli(*base, "--rounds", "1", "--new-run", cwd=tmp_path, timeout=120)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "runs" / "x-2" / "ledger.sqlite").is_file()
    status = run_cli("status", "runs/x", cwd=tmp_path, timeout=120)
    assert status.returncode == 0 and "pairs 2:" in status.stdout and "llm generator:" in status.stdout
