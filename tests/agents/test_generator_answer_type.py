"""The answer-type check inside the SAGE loop: a mismatched answer is kept and labelled (candidate,
ledger, dataset row), and the reviser is told in its feedback prompt; the release profile is not."""

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
    loop_pipeline,
    question_of,
    search,
    small_config,
)
from sagegen.agents.generator import generate, revise
from sagegen.config import GeneratorConfig
from sagegen.errors import LLMError
from sagegen.llm.scripted import ScriptedLLM
from sagegen.records import Attempt, Candidate, Judgement, Trajectory, Verdict

SEED = DOCS[3]  # Gustave Eiffel
NOTE = "Your answer is not of the requested type"


@pytest.mark.parametrize(
    ("requested", "written", "found"),
    [
        ("number", "Helen Keller", "entity"),
        ("date", "New Orleans", "entity"),
        ("date", "1832", "date"),
        ("number", "1,200", "number"),
        ("entity", "Dijon", "entity"),
    ],
)
async def test_the_candidate_records_what_its_answer_reads_as(
    requested: str, written: str, found: str
) -> None:
    llm = ScriptedLLM([search("Dijon"), final("Which one is linked to the tower's engineer here?", written)])
    out = await generate(SEED, 2, requested, llm, OverlapRetriever(), GeneratorConfig())
    assert out.candidate is not None  # a mismatch never refuses the pair
    assert (out.candidate.answer, out.candidate.answer_type) == (written, requested)
    assert out.candidate.answer_type_found == found


def _too_easy(cand: Candidate) -> tuple[Trajectory, Verdict]:
    solver = Trajectory(
        agent="solver",
        answer=cand.answer,
        messages=(
            {"role": "system", "content": "s"},
            {"role": "user", "content": f"Question: {cand.question}"},
            {"role": "assistant", "content": f"<answer> {cand.answer} </answer>"},
        ),
    )
    attempt = Attempt(index=0, trajectory=solver, judgement=Judgement(correct=True))
    verdict = Verdict.decide([[attempt]], 3)
    return solver, verdict


async def _revision_prompt(
    written: str, requested: str, cfg: GeneratorConfig
) -> tuple[str, Candidate | None]:
    first = ScriptedLLM([final("Which one did the tower's engineer meet at the fair?", written)])
    out = await generate(SEED, 3, requested, first, OverlapRetriever(), cfg)
    assert out.candidate is not None
    solver, verdict = _too_easy(out.candidate)
    llm = ScriptedLLM([final("Which number is carved on the engineer's first bridge today?", "42")])
    rev = await revise(SEED, out.candidate, out.trajectory, solver, verdict, llm, OverlapRetriever(), cfg)
    return str(llm.calls[0]["messages"][-1]["content"]), rev.candidate


async def test_the_reviser_is_told_its_answer_is_not_of_the_requested_type() -> None:
    prompt, rev = await _revision_prompt("Helen Keller", "number", GeneratorConfig())
    assert NOTE in prompt and 'a number was asked for, but "Helen Keller" reads as an entity' in prompt
    assert rev is not None and rev.answer_type_found == "number"  # the revision is checked again


async def test_a_fitting_answer_gets_no_note() -> None:
    prompt, _ = await _revision_prompt("1889", "date", GeneratorConfig())
    assert NOTE not in prompt and "Your answering steps:" in prompt


async def test_the_release_profile_labels_but_keeps_its_own_prompt() -> None:
    cfg = GeneratorConfig(prompt_set="sage", feedback_search=False, feedback_prompt="release")
    prompt, rev = await _revision_prompt("Helen Keller", "number", cfg)
    assert NOTE not in prompt and prompt.startswith("Below are the output of a question generator agent")
    assert rev is not None and rev.answer_type_found == "number"


async def test_a_failing_generator_backend_propagates_as_before() -> None:
    class Down:
        name = "down"

        async def complete(self, messages: Sequence[dict[str, Any]], **kw: Any) -> Any:
            raise LLMError("connection refused")

    with pytest.raises(LLMError, match="connection refused"):
        await generate(SEED, 2, "entity", Down(), OverlapRetriever(), GeneratorConfig())  # type: ignore[arg-type]


async def test_a_mismatch_runs_through_the_loop_into_the_ledger_and_the_dataset(tmp_path: Path) -> None:
    q1 = "Which famous person did the engineer of the 1889 Paris tower once meet?"
    q2 = "How many metres tall was the tower of the engineer born in the mustard city?"

    def solver(m: Sequence[dict[str, Any]]) -> str:
        if question_of(m) == q1:
            return answer("Helen Keller")  # solved at once: too easy
        return search(f"hop {infos(m)}") if infos(m) < 2 else answer("300")

    script = RoleScript(
        generator=lambda m: final(q1, "Helen Keller"), reviser=lambda m: final(q2, "300"), solver=solver
    )
    cfg = small_config()
    cfg.generator.answer_types = ["number"]
    pipe, store = loop_pipeline(tmp_path, cfg, script)
    await pipe.run()
    (pair,) = store.pairs()
    r1, r2 = pair.rounds
    assert r1.candidate is not None and r1.candidate.answer_type_found == "entity"
    assert r2.candidate is not None and r2.candidate.answer_type_found == "number"
    reviser = next(c for c in pipe.parts.generator.calls if "TOO EASY" in c["messages"][1]["content"])
    assert '"Helen Keller" reads as an entity' in reviser["messages"][1]["content"]
    (row,) = [json.loads(x) for x in (store.run_dir / "dataset.jsonl").read_text().splitlines()]
    assert (row["answer"], row["answer_type"], row["answer_type_found"]) == ("300", "number", "number")
