"""Several solvers (agreement, difficulty of the strongest) and the ambiguity check."""

from __future__ import annotations

import json
from collections.abc import Sequence
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
    role,
    search,
    small_config,
)
from sagegen.config import Config, load_config
from sagegen.errors import ConfigError
from sagegen.ledger.store import RunStore
from sagegen.llm.scripted import ScriptedLLM
from sagegen.loop.pipeline import Pipeline
from sagegen.loop.session import Components
from sagegen.records import Attempt, Judgement, Step, Trajectory, Verdict
from sagegen.verdict.agreement import parse_ambiguity

Msgs = Sequence[dict[str, Any]]
Q = "In which year was the engineer of the 1889 Paris tower born?"


def gen(m: Msgs) -> str:
    return search("Eiffel") if infos(m) < 1 else final(Q, "1832")


def solver_llm(searches: int, ans: str) -> ScriptedLLM:
    return ScriptedLLM(responder=lambda m: search(f"hop {infos(m)}") if infos(m) < searches else answer(ans))


def config(**pipeline: Any) -> Config:
    cfg = small_config(rounds=1, precheck="off", **pipeline)
    return cfg


def make(tmp: Path, cfg: Config, solvers: list[ScriptedLLM], judge: Any = None) -> tuple[Pipeline, RunStore]:
    store, _ = RunStore.create_or_resume(tmp / "run", cfg.model_dump(mode="json"), cfg.dump())
    g = RoleScript(generator=gen).llm()
    parts = Components(
        docs=list(DOCS),
        retriever=OverlapRetriever(),
        generator=g,
        solver=solvers[0],
        judge=judge,
        extra_solvers=solvers[1:],
    )
    return Pipeline(cfg, store, parts), store


@pytest.mark.parametrize(("need", "state"), [(2, "incorrect"), (1, "pass")])
async def test_two_solvers_that_disagree(tmp_path: Path, need: int, state: str) -> None:
    a, b = solver_llm(2, "1832"), solver_llm(2, "1889")  # b is wrong
    pipe, store = make(tmp_path, config(min_solvers_agree=need), [a, b])
    await pipe.run()
    pair = store.pair(0)
    assert pair is not None and pair.state == state
    v = pair.rounds[0].verdict
    assert v.solvers_agree == 1 and v.num_attempts == 4  # 2 solvers x K=2
    assert [x.index for x in pair.rounds[0].attempts] == [0, 1, 2, 3]
    assert len(b.calls) == 2 * 3  # solver 2 ran its own K attempts (3 turns each)
    usage = store.llm_usage()
    assert usage["solver"]["calls"] == 6 and usage["solver2"]["calls"] == 6


async def test_difficulty_is_the_strongest_solvers(tmp_path: Path) -> None:
    # The strongest (first) needs 3 searches, a weaker one guesses right after 1: difficulty 3, a pass at
    # S=2; the minimum over all solvers would have called it too easy.
    strong, weak = solver_llm(3, "1832"), solver_llm(1, "1832")
    pipe, store = make(tmp_path, config(min_solvers_agree=2, early_stop=False), [strong, weak])
    await pipe.run()
    v = store.pair(0).rounds[0].verdict
    assert v.label == "pass" and v.difficulty == 3 and v.solvers_agree == 2 and v.avg_at_k == 1.0


async def test_strongest_failing_falls_to_the_next_solver(tmp_path: Path) -> None:
    strong, weak = solver_llm(2, "Paris"), solver_llm(1, "1832")
    pipe, store = make(tmp_path, config(min_solvers_agree=1), [strong, weak])
    await pipe.run()
    v = store.pair(0).rounds[0].verdict
    assert v.label == "too_easy" and v.difficulty == 1 and v.avg_at_k == 0.0  # Avg@K of the first solver


def test_solver_llms_config() -> None:
    cfg = load_config(None, ["solver_llms=[{backend: scripted, model: a}, {backend: scripted, model: b}]"])
    assert [c.model for c in cfg.solver_llms] == ["a", "b"]
    cfg2 = load_config(None, ["solver_llms=[{backend: scripted}]", "solver_llm={backend: scripted}"])
    with pytest.raises(ConfigError, match="either solver_llm or solver_llms"):
        Components.from_config(cfg2)


def ambiguity_judge(reply: str) -> tuple[ScriptedLLM, list[str]]:
    prompts: list[str] = []

    def respond(m: Msgs) -> str:
        content = str(m[-1]["content"])
        if "[intended_answer]" in content:
            prompts.append(content)
            return reply
        assert role(m) == "judge"
        return "correct: yes"

    return ScriptedLLM(responder=respond), prompts


@pytest.mark.parametrize(
    ("reply", "output"),
    [
        ("reasoning: two engineers fit.\nother_answer: 1834\nambiguous: yes", "ambiguous"),
        ("reasoning: only one.\nother_answer: none\nambiguous: no", "dataset"),
        ("I cannot tell.", "dataset"),  # unreadable: recorded, the pair is kept
    ],
)
async def test_ambiguity_check(tmp_path: Path, reply: str, output: str) -> None:
    judge, prompts = ambiguity_judge(reply)
    cfg = config(ambiguity_check=True)
    pipe, store = make(tmp_path, cfg, [solver_llm(2, "1832")], judge=judge)
    await pipe.run()
    pair = store.pair(0)
    assert pair.state == "pass" and pair.output == output
    assert len(prompts) == 1 and Q in prompts[0] and "1832" in prompts[0]
    assert "Gustave Eiffel was a French civil engineer" in prompts[0]  # retrieved evidence is shown
    ev = [json.loads(e.message) for e in store.events(0) if e.kind == "ambiguity"]
    assert ev[0]["ambiguous"] is (output == "ambiguous") and ev[0]["readable"] is (reply != "I cannot tell.")
    lines, data = (read(store.run_dir / f) for f in ("ambiguous.jsonl", "dataset.jsonl"))
    assert (len(lines), len(data)) == ((1, 0) if output == "ambiguous" else (0, 1))
    if lines:
        assert json.loads(lines[0])["label"] == "ambiguous"
    assert store.llm_usage()["ambiguity"]["calls"] == 1
    # A resumed run reads the stored answer back instead of asking again.
    again = await pipe.ambiguity(0, 1, pair.rounds[0].candidate, [])
    assert again is (output == "ambiguous") and len(prompts) == 1


def read(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_parse_ambiguity() -> None:
    got = parse_ambiguity("**reasoning:** x\n**other_answer:** None\n**ambiguous:** No")
    assert got is not None and not got.ambiguous and got.other_answer is None
    assert parse_ambiguity("ambiguous: maybe") is None


async def test_ambiguity_check_skips_passes_below_the_training_floor(tmp_path: Path) -> None:
    judge, prompts = ambiguity_judge("ambiguous: yes")
    cfg = config(ambiguity_check=True, min_difficulty_for_dataset=3)
    pipe, store = make(tmp_path, cfg, [solver_llm(2, "1832")], judge=judge)
    await pipe.run()
    assert prompts == [] and store.pair(0).output == "too_easy"
    assert "ambiguity" not in store.llm_usage()


def _att(i: int, right: bool, searches: int) -> Attempt:
    traj = Trajectory(
        agent="solver", question="q", steps=tuple(Step(kind="search", query=f"s{n}") for n in range(searches))
    )
    return Attempt(index=i, trajectory=traj, judgement=Judgement(correct=right))


def test_one_verdict_rule_for_one_solver_several_and_the_precheck() -> None:
    one = Verdict.decide([[_att(0, False, 1), _att(1, True, 4), _att(2, True, 2)]], target=3)
    assert (one.correct, one.difficulty, one.label, one.num_attempts) == (True, 2, "too_easy", 3)
    assert one.avg_at_k == 2 / 3 and one.solvers_agree is None and one.source == "solver"
    # the strongest solver that solved it sets the difficulty, not a weaker solver's lucky short guess
    two = Verdict.decide([[_att(0, True, 5)], [_att(1, True, 1)]], target=3, min_agree=2)
    assert (two.passed, two.difficulty, two.solvers_agree, two.num_attempts) == (True, 5, 2, 2)
    short = Verdict.decide([[_att(0, True, 5)], [_att(1, False, 1)]], target=3, min_agree=2)
    assert short.label == "incorrect" and short.solvers_agree == 1
    pre = Verdict.decide([[_att(0, True, 1)]], target=3, source="precheck")
    assert pre.label == "too_easy" and pre.num_attempts == 0 and pre.source == "precheck"
