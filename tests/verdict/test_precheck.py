"""The retriever-only shortcut pre-check: too easy without a solver call, evidence in feedback, compare."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sage_loop_helpers import DOCS, OverlapRetriever, RoleScript, answer, final, infos, loop_pipeline, search
from sage_loop_helpers import small_config as base_config
from sagegen.config import Config
from sagegen.ledger.store import RunStore
from sagegen.loop.pipeline import Pipeline
from sagegen.loop.session import Components
from sagegen.records import Candidate
from sagegen.verdict.precheck import answer_pattern, applies, sub_questions

Msgs = Sequence[dict[str, Any]]
EASY = "In which year was Gustave Eiffel born?"  # the Gustave Eiffel passage says 1832: one search
HARD = "In which year was the builder of the 1889 tower born?"  # its top passage (top-1) lacks 1832


def small_config(**pipeline: Any) -> Config:
    cfg = base_config(**{"precheck": "auto", **pipeline})  # the loop tests' config turns it off
    cfg.solver.topk = 1  # one passage per search keeps the tiny corpus from answering everything
    return cfg


def make(tmp: Path, cfg: Config, script: RoleScript) -> tuple[Pipeline, RunStore]:
    return loop_pipeline(tmp, cfg, script)


def writer(first: str, then: str = HARD, ans: str = "1832") -> Any:
    def respond(m: Msgs) -> str:
        return search("Eiffel") if infos(m) < 1 else final(first, ans)

    def revise(m: Msgs) -> str:
        return search("tower") if infos(m) < 1 else final(then, ans)

    return respond, revise


def solver(m: Msgs) -> str:
    return search(f"hop {infos(m)}") if infos(m) < 2 else answer("1832")


async def test_answer_in_top_passage_is_too_easy_without_a_solver_call(tmp_path: Path) -> None:
    gen, rev = writer(EASY)
    script = RoleScript(generator=gen, reviser=rev, solver=solver)
    pipe, store = make(tmp_path, small_config(rounds=1), script)
    await pipe.run()
    assert "solver" not in script.roles  # 0 solver calls
    pair = store.pair(0)
    assert pair is not None and pair.state == "too_easy"
    v = pair.rounds[0].verdict
    assert v is not None and v.source == "precheck" and v.num_attempts == 0 and v.difficulty == 1
    assert pair.rounds[0].attempts == ()
    trace = store.trajectory("p0.r1.pre")
    assert trace.agent == "precheck" and trace.steps[0].hit_ids[0] == "d4"
    assert pair.qa is not None and pair.qa.trace_ids["precheck"] == "p0.r1.pre"
    assert store.llm_usage().get("solver") is None


async def test_feedback_shows_the_giving_away_passage_then_the_solver_verifies(tmp_path: Path) -> None:
    gen, rev = writer(EASY)
    seen: list[str] = []

    def reviser(m: Msgs) -> str:
        seen.append(str(m[1]["content"]))
        return rev(m)

    script = RoleScript(generator=gen, reviser=reviser, solver=solver)
    pipe, store = make(tmp_path, small_config(rounds=2), script)
    await pipe.run()
    assert "born in Dijon in 1832" in seen[0]  # the evidence passage is in the too-easy feedback
    pair = store.pair(0)
    assert pair is not None and pair.state == "pass"
    r1, r2 = pair.rounds
    assert r1.verdict.source == "precheck" and r2.verdict.source == "solver" and r2.verdict.difficulty == 2


async def test_precheck_off_runs_the_solver(tmp_path: Path) -> None:
    gen, rev = writer(EASY)
    script = RoleScript(generator=gen, reviser=rev, solver=solver)
    pipe, store = make(tmp_path, small_config(rounds=1, precheck="off"), script)
    await pipe.run()
    assert script.roles.count("solver") == 3 * 2  # 2 attempts, 3 turns each
    pair = store.pair(0)
    assert pair is not None and pair.state == "pass" and pair.rounds[0].verdict.source == "solver"


async def test_compare_mode_runs_both_and_records_disagreement(tmp_path: Path) -> None:
    gen, rev = writer(EASY)
    script = RoleScript(generator=gen, reviser=rev, solver=solver)
    pipe, store = make(tmp_path, small_config(rounds=1, precheck_compare=True), script)
    await pipe.run()
    assert "solver" in script.roles
    ev = [e for e in store.events(0) if e.kind == "precheck_compare"]
    assert len(ev) == 1
    got = json.loads(ev[0].message)
    # the scripted solver took 2 searches (a pass at S=2): the pre-check said too easy, so they disagree
    assert got == {"agree": False, "solver_label": "pass", "difficulty": 2, "query": EASY, "evidence": "d4"}
    assert store.pair(0).state == "pass"  # the solvers decide in compare mode


async def test_precheck_skips_targets_of_one(tmp_path: Path) -> None:
    gen, rev = writer(EASY)
    script = RoleScript(generator=gen, reviser=rev, solver=solver)
    pipe, store = make(tmp_path, small_config(rounds=1, target=1), script)
    await pipe.run()
    assert "solver" in script.roles and store.pair(0).rounds[0].verdict.source == "solver"


def cand(answer: str, target: int = 2, plan: str = "") -> Candidate:
    return Candidate(
        question="q?", answer=answer, answer_type="entity", target=target, seed_doc_id="d1", plan=plan
    )


def test_safety_rules_and_sub_questions() -> None:
    assert applies(cand("1832"), "auto") and not applies(cand("12"), "auto") and applies(cand("12"), "on")
    assert not applies(cand("1832", target=1), "on") and not applies(cand("1832"), "off")
    pat = answer_pattern("The Seine")
    assert pat is not None and pat.search("river seine flows") and not pat.search("seineriver")
    plan = (
        "1. Who built the Garabit viaduct? Gustave Eiffel (Garabit viaduct). "
        "2. Which tower did his company design? The Eiffel Tower. 3. When was it completed? 1889"
    )
    assert sub_questions(plan) == [
        "Who built the Garabit viaduct?",
        "Which tower did his company design?",
        "When was it completed?",
    ]
    assert sub_questions("no steps here") == []


async def test_first_sub_question_shortcut(tmp_path: Path) -> None:
    q = "In which year was the designer of the famous wrought-iron landmark born?"  # top-1 is not d4
    plan = "1. Where was Gustave Eiffel born? Dijon. 2. When was he born? 1832"

    def gen(m: Msgs) -> str:
        return search("Eiffel") if infos(m) < 1 else final(q, "1832", plan)

    script = RoleScript(generator=gen, solver=solver)
    pipe, store = make(tmp_path, small_config(rounds=1, precheck_subquestions="none"), script)
    await pipe.run()
    assert store.pair(0).rounds[0].verdict.source == "solver"
    script2 = RoleScript(generator=gen, solver=solver)
    pipe2, store2 = make(tmp_path / "b", small_config(rounds=1), script2)
    await pipe2.run()
    v = store2.pair(0).rounds[0].verdict
    assert v.source == "precheck" and "solver" not in script2.roles
    assert store2.trajectory("p0.r1.pre").steps[0].query == "Where was Gustave Eiffel born?"


async def test_resume_after_a_failed_revision_repeats_no_call(tmp_path: Path) -> None:
    from sagegen.errors import LLMError

    gen, rev = writer(EASY)

    def broken(m: Msgs) -> str:
        raise LLMError("backend down")

    first = RoleScript(generator=gen, reviser=broken, solver=solver)
    pipe, store = make(tmp_path, small_config(rounds=2), first)
    await pipe.run()
    assert store.pair(0).state == "running" and first.roles.count("generator") == 2
    store.close()
    cfg = small_config(rounds=2)
    store2, resumed = RunStore.create_or_resume(tmp_path / "run", cfg.model_dump(mode="json"), cfg.dump())
    assert resumed
    second = RoleScript(generator=gen, reviser=rev, solver=solver)
    llm = second.llm()
    parts = Components(docs=list(DOCS), retriever=OverlapRetriever(), generator=llm, solver=llm, judge=llm)
    await Pipeline(cfg, store2, parts).run()
    # Round 1 (generation + pre-check) comes from the ledger: no generator call, still no solver call
    # for it; only round 2's revision and its solver attempts run.
    assert "generator" not in second.roles and second.roles.count("reviser") == 2
    pair = store2.pair(0)
    assert pair.state == "pass" and pair.rounds[0].verdict.source == "precheck"
