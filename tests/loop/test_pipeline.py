"""The SAGE loop end to end on scripted models: every path of docs/design.md §1 (pass, too easy, incorrect,
feedback, resample, none, exhausted rounds, malformed output, judge disagreement, early stop, resume)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from sage_loop_helpers import (
    DOCS,
    OverlapRetriever,
    RoleScript,
    answer,
    final,
    infos,
    loop_pipeline,
    question_of,
    search,
    small_config,
)
from sagegen.config import Config
from sagegen.errors import LLMError
from sagegen.ledger.store import RunStore
from sagegen.loop.pipeline import Pipeline
from sagegen.loop.session import Components, run_generate

Msgs = Sequence[dict[str, Any]]
Q1 = "In which year was the engineer of the 1889 Paris tower born?"
Q2 = "In which year was the engineer of the tower on the river through northern France born?"


def gen_writes(question: str, ans: str = "1832", searches: int = 2) -> Callable[[Msgs], str]:
    return lambda m: search(f"query {infos(m)}") if infos(m) < searches else final(question, ans)


def solver_by_question(table: dict[str, tuple[int, str]]) -> Callable[[Msgs], str]:
    """Each question → (searches the solver makes, its answer)."""

    def respond(m: Msgs) -> str:
        n, ans = table[question_of(m)]
        return search(f"hop {infos(m)}") if infos(m) < n else answer(ans)

    return respond


def make(tmp: Path, cfg: Config, script: RoleScript) -> tuple[Pipeline, RunStore]:
    return loop_pipeline(tmp, cfg, script)


def lines(store: RunStore, name: str) -> list[dict[str, Any]]:
    path = store.run_dir / name
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


async def test_pass_in_round_one(tmp_path: Path) -> None:
    script = RoleScript(generator=gen_writes(Q1), solver=solver_by_question({Q1: (2, "1832")}))
    pipe, store = make(tmp_path, small_config(), script)
    stats = await pipe.run()
    assert stats.labels == {"pass": 1} and stats.done == 1
    (row,) = lines(store, "dataset.jsonl")
    assert (row["question"], row["answer"], row["label"], row["round"]) == (Q1, "1832", "pass", 1)
    assert (row["target"], row["difficulty"], row["avg_at_k"]) == (2, 2, 1.0)
    assert row["trace_ids"]["generation"] == "p0.r1.gen" and row["trace_ids"]["num_attempts"] == 2
    assert row["seed_doc_id"] in {d.id for d in DOCS} and row["supporting_ids"][0] == row["seed_doc_id"]
    (pair,) = store.pairs()
    assert pair.state == "pass" and len(pair.rounds) == 1 and len(pair.rounds[0].attempts) == 2
    seeds = [a.seed for a in pair.rounds[0].attempts]
    assert len(set(seeds)) == 2  # K independent samples need distinct seeds
    assert "reviser" not in script.roles
    usage = store.llm_usage()
    assert usage["generator"]["calls"] == 3 and usage["solver"]["calls"] == 6
    assert lines(store, "too_easy.jsonl") == [] and lines(store, "unsolved.jsonl") == []


async def test_too_easy_then_feedback_then_pass(tmp_path: Path) -> None:
    script = RoleScript(
        generator=gen_writes(Q1),
        reviser=gen_writes(Q2, searches=1),
        solver=solver_by_question({Q1: (1, "1832"), Q2: (3, "1832")}),
    )
    pipe, store = make(tmp_path, small_config(), script)
    await pipe.run()
    (pair,) = store.pairs()
    r1, r2 = pair.rounds
    assert r1.verdict is not None and r1.verdict.label == "too_easy" and r1.verdict.difficulty == 1
    # Early stop: the first attempt was already correct in 1 < 2 searches; the second never ran.
    assert r1.verdict.num_attempts == 1 and len(r1.attempts) == 1
    assert [e.kind for e in store.events(0)] == ["early_stop"]
    assert (
        r2.kind == "feedback" and r2.verdict is not None and r2.verdict.passed and r2.verdict.difficulty == 3
    )
    assert pair.state == "pass" and pair.qa is not None and pair.qa.round == 2 and pair.qa.question == Q2
    reviser_prompt = next(c for c in pipe.parts.generator.calls if "TOO EASY" in c["messages"][1]["content"])
    text = reviser_prompt["messages"][1]["content"]
    assert Q1 in text and "only 1 search," in text and "[search 1] hop 0" in text
    assert reviser_prompt["seed"] != pipe.parts.generator.calls[0]["seed"]  # each round its own seed


async def test_incorrect_then_feedback_then_pass(tmp_path: Path) -> None:
    script = RoleScript(
        generator=gen_writes(Q1, "1832"),
        reviser=gen_writes(Q2, "1832", searches=0),
        solver=solver_by_question({Q1: (2, "1889"), Q2: (2, "1832")}),
    )
    pipe, store = make(tmp_path, small_config(), script)
    await pipe.run()
    (pair,) = store.pairs()
    assert [r.verdict.label for r in pair.rounds if r.verdict] == ["incorrect", "pass"]
    assert pair.rounds[0].verdict.num_attempts == 2 and pair.rounds[0].verdict.avg_at_k == 0.0  # type: ignore[union-attr]
    prompt = next(
        c["messages"][1]["content"]
        for c in pipe.parts.generator.calls
        if "no search agent answered correctly" in c["messages"][1]["content"]
    )
    assert "its final answer: 1889" in prompt and "explain the discrepancy" in prompt
    assert lines(store, "dataset.jsonl")[0]["question"] == Q2


async def test_exhausting_the_rounds_keeps_the_pair_as_too_easy(tmp_path: Path) -> None:
    revisions = iter([Q2, Q2 + " (again)"])
    current: dict[str, str] = {}

    def reviser(m: Msgs) -> str:
        if not infos(m) and "q" not in current.get(str(id(m)), ""):
            current["q"] = next(revisions)
        return final(current["q"], "1832")

    table = {Q1: (1, "1832"), Q2: (1, "1832"), Q2 + " (again)": (1, "1832")}
    script = RoleScript(generator=gen_writes(Q1), reviser=reviser, solver=solver_by_question(table))
    pipe, store = make(tmp_path, small_config(rounds=3), script)
    stats = await pipe.run()
    assert stats.labels == {"too_easy": 1}
    (pair,) = store.pairs()
    assert [r.kind for r in pair.rounds] == ["generate", "feedback", "feedback"]
    assert all(r.verdict is not None and r.verdict.label == "too_easy" for r in pair.rounds)
    assert script.roles.count("reviser") == 2
    (row,) = lines(store, "too_easy.jsonl")
    assert row["label"] == "too_easy" and row["round"] == 3 and row["difficulty"] == 1
    assert lines(store, "dataset.jsonl") == []


async def test_exhausted_incorrect_pairs_are_kept_as_unsolved(tmp_path: Path) -> None:
    script = RoleScript(
        generator=gen_writes(Q1),
        reviser=gen_writes(Q1, searches=0),
        solver=solver_by_question({Q1: (2, "no idea")}),
    )
    pipe, store = make(tmp_path, small_config(rounds=2), script)
    await pipe.run()
    (row,) = lines(store, "unsolved.jsonl")
    assert row["label"] == "incorrect" and row["difficulty"] is None and row["round"] == 2


async def test_resample_strategy_starts_from_scratch_each_round(tmp_path: Path) -> None:
    script = RoleScript(generator=gen_writes(Q1), solver=solver_by_question({Q1: (1, "1832")}))
    pipe, store = make(tmp_path, small_config(rounds=3, strategy="resample"), script)
    await pipe.run()
    (pair,) = store.pairs()
    assert [r.kind for r in pair.rounds] == ["generate", "resample", "resample"]
    assert "reviser" not in script.roles
    gen_seeds = {
        c["seed"] for c in pipe.parts.generator.calls if "Seed passage" in c["messages"][1]["content"]
    }
    assert len(gen_seeds) == 3  # a fresh sample each round, not a replay
    assert pair.state == "too_easy"


async def test_none_strategy_runs_one_round(tmp_path: Path) -> None:
    script = RoleScript(generator=gen_writes(Q1), solver=solver_by_question({Q1: (1, "1832")}))
    pipe, store = make(tmp_path, small_config(rounds=3, strategy="none"), script)
    await pipe.run()
    (pair,) = store.pairs()
    assert len(pair.rounds) == 1 and pair.state == "too_easy"


async def test_malformed_generator_output_fails_the_pair_after_retries(tmp_path: Path) -> None:
    script = RoleScript(generator=lambda m: "I refuse to use tags.")
    cfg = small_config(rounds=2)
    cfg.generator.max_format_retries = 1
    pipe, store = make(tmp_path, cfg, script)
    stats = await pipe.run()
    assert stats.labels == {"failed": 1}
    (pair,) = store.pairs()
    assert pair.state == "failed" and pair.qa is None and pair.output is None
    assert [r.candidate for r in pair.rounds] == [None, None]
    assert script.roles == ["generator"] * 4  # 2 rounds × (1 try + 1 retry)
    traj = store.trajectory("p0.r1.gen")
    assert traj.status == "failed" and [s.event for s in traj.steps if s.kind == "event"] == [
        "malformed",
        "malformed",
        "gave_up",
    ]
    assert all(lines(store, f) == [] for f in ("dataset.jsonl", "too_easy.jsonl", "unsolved.jsonl"))


async def test_malformed_solver_output_is_survived_and_judged_incorrect(tmp_path: Path) -> None:
    script = RoleScript(generator=gen_writes(Q1), solver=lambda m: "blah blah, no tags at all")
    pipe, store = make(tmp_path, small_config(strategy="none"), script)
    await pipe.run()
    (pair,) = store.pairs()
    assert pair.state == "incorrect"
    for att in pair.rounds[0].attempts:
        traj = store.trajectory(att.trace_id)
        assert any(s.kind == "event" for s in traj.steps)
        assert not att.judgement.correct


@pytest.mark.parametrize(("judge_says", "label"), [("yes", "pass"), ("no", "incorrect")])
async def test_the_llm_judge_decides_over_string_match(tmp_path: Path, judge_says: str, label: str) -> None:
    # "G. Eiffel" is no exact match for "Gustave Eiffel" (yes: the judge overrules EM) and "Gustave
    # Eiffel's company" has high F1 (no: the judge overrules F1).
    solver_answer = "G. Eiffel" if judge_says == "yes" else "Gustave Eiffel's company"
    q = "Which engineer's company completed the tower in the city on the Seine?"
    script = RoleScript(
        generator=gen_writes(q, "Gustave Eiffel"),
        solver=solver_by_question({q: (2, solver_answer)}),
        judge=lambda m: (
            f"extracted_final_answer: {solver_answer}\nreasoning: r\ncorrect: {judge_says}\nconfidence: 90"
        ),
    )
    cfg = small_config(strategy="none")
    cfg.judge.method = "llm"
    pipe, store = make(tmp_path, cfg, script)
    await pipe.run()
    (pair,) = store.pairs()
    assert pair.state == label
    judgements = [a.judgement for a in pair.rounds[0].attempts]
    assert all(j.method == "llm" for j in judgements)
    assert all(j.correct == (judge_says == "yes") for j in judgements)
    assert store.llm_usage()["judge"]["calls"] == 2


async def test_early_stop_off_runs_every_attempt(tmp_path: Path) -> None:
    script = RoleScript(generator=gen_writes(Q1), solver=solver_by_question({Q1: (1, "1832")}))
    cfg = small_config(strategy="none", attempts=4, early_stop=False)
    pipe, store = make(tmp_path, cfg, script)
    await pipe.run()
    (pair,) = store.pairs()
    v = pair.rounds[0].verdict
    assert v is not None and v.num_attempts == 4 and v.avg_at_k == 1.0 and v.label == "too_easy"


async def test_an_llm_failure_leaves_the_pair_for_the_next_run_which_reuses_what_was_stored(
    tmp_path: Path,
) -> None:
    calls = {"solver": 0}

    def flaky_solver(m: Msgs) -> str:
        calls["solver"] += 1
        if calls["solver"] == 4:  # the 2nd attempt's 1st call (attempt 1 = 3 calls)
            raise LLMError("backend down")
        return solver_by_question({Q1: (2, "1832")})(m)

    cfg = small_config()
    script = RoleScript(generator=gen_writes(Q1), solver=flaky_solver)
    pipe, store = make(tmp_path, cfg, script)
    stats = await pipe.run()
    assert stats.errors == 1 and stats.done == 0
    assert [e.kind for e in store.events()] == ["pair_error"]
    (pair,) = store.pairs()
    assert pair.state == "running" and len(pair.rounds[0].attempts) == 1
    store.close()

    script2 = RoleScript(generator=gen_writes(Q1), solver=solver_by_question({Q1: (2, "1832")}))
    pipe2, store2 = make(tmp_path, cfg, script2)
    stats2 = await pipe2.run()
    assert stats2.labels == {"pass": 1}
    assert script2.roles == ["solver"] * 3  # the generation and attempt 0 came from the ledger
    (pair,) = store2.pairs()
    assert pair.state == "pass" and len(pair.rounds[0].attempts) == 2


async def test_concurrent_pairs_and_deduplication(tmp_path: Path) -> None:
    script = RoleScript(generator=gen_writes(Q1), solver=solver_by_question({Q1: (2, "1832")}))
    pipe, store = make(tmp_path, small_config(num_seeds=6, concurrency=3), script)
    stats = await pipe.run()
    assert stats.labels == {"pass": 6}
    assert len(lines(store, "dataset.jsonl")) == 1  # one question, written once
    assert store.counts()["output.duplicate"] == 5


def test_run_generate_resumes_and_rebuilds_outputs(tmp_path: Path) -> None:
    cfg = small_config(num_seeds=3)

    def parts() -> Components:
        script = RoleScript(
            generator=lambda m: gen_writes(f"{Q1} #{len(m)}")(m),
            solver=lambda m: solver_by_question({question_of(m): (2, "1832")})(m),
        )
        llm = script.llm()
        return Components(list(DOCS), OverlapRetriever(), llm, llm, llm)

    res = run_generate(cfg, tmp_path / "run", parts=parts())
    assert not res.resumed and res.counts["pass"] == 3 and res.counts["output.duplicate"] == 2
    data = tmp_path / "run" / "dataset.jsonl"
    before = data.read_text()
    with open(data, "a") as f:
        f.write('{"half a line')  # a kill in mid-append
    p2 = parts()
    res2 = run_generate(cfg, tmp_path / "run", parts=p2)
    assert res2.resumed and res2.stats.already_done == 3 and res2.calls == 0
    assert p2.generator.calls == []  # type: ignore[attr-defined]
    assert data.read_text() == before
    assert (tmp_path / "run" / "config.yaml").read_text() == cfg.dump()


async def test_a_dead_backend_stops_the_run_after_a_few_pairs(tmp_path: Path) -> None:
    from sagegen.errors import SagegenError

    def dead(m: Msgs) -> str:
        raise LLMError("connection refused")

    script = RoleScript(generator=dead)
    pipe, store = make(tmp_path, small_config(num_seeds=10, concurrency=1), script)
    with pytest.raises(SagegenError, match=r"3 pairs in a row failed.*connection refused"):
        await pipe.run()
    assert [e.kind for e in store.events()] == ["pair_error"] * 3
    assert store.counts().get("finished") == 0 and store.counts()["pairs"] == 3  # nothing marked done


async def test_passing_pairs_below_the_training_floor_are_kept_apart(tmp_path: Path) -> None:
    script = RoleScript(generator=gen_writes(Q1), solver=solver_by_question({Q1: (1, "1832")}))
    pipe, store = make(tmp_path, small_config(target=1, min_difficulty_for_dataset=2), script)
    await pipe.run()
    (pair,) = store.pairs()
    assert pair.state == "pass" and pair.output == "too_easy"
    assert lines(store, "dataset.jsonl") == [] and lines(store, "too_easy.jsonl")[0]["label"] == "pass"
