"""The generator and reviser loops on a scripted model: searching, finishing, forcing, malformed output."""

from __future__ import annotations

import pytest

from sage_loop_helpers import DOCS, OverlapRetriever, final, search
from sagegen.agents.generator import check_pair, generate, render_trace, revise
from sagegen.config import GeneratorConfig
from sagegen.errors import ConfigError
from sagegen.llm.scripted import ScriptedLLM
from sagegen.records import Attempt, Judgement, Step, Trajectory, Verdict
from sagegen.targets import parse_target

SEED = DOCS[3]  # Gustave Eiffel


async def test_generate_searches_then_writes_the_pair() -> None:
    llm = ScriptedLLM(
        [
            search("Dijon"),
            search("Dijon mustard"),
            final(
                "In which year was the engineer born in the city famous for its mustard?",
                "1832",
                "1. city known for mustard -> Dijon (d5)",
            ),
        ]
    )
    retriever = OverlapRetriever()
    out = await generate(SEED, 3, "date", llm, retriever, GeneratorConfig(), seed=42, temperature=0.5)
    cand, traj = out.candidate, out.trajectory
    assert cand is not None
    assert cand.question.startswith("In which year")
    assert (cand.answer, cand.answer_type, cand.target, cand.round) == ("1832", "date", 3, 1)
    assert cand.plan.startswith("1. city known for mustard")
    assert cand.seed_doc_id == "d4" and cand.supporting_ids[0] == "d4" and "d5" in cand.supporting_ids
    assert traj.agent == "generator" and traj.status == "answered" and traj.num_searches == 2
    assert retriever.queries == ["Dijon", "Dijon mustard"]
    # The prompt names S and the answer type; every call carries the seed and the search stop.
    system, user = llm.calls[0]["messages"][0]["content"], llm.calls[0]["messages"][1]["content"]
    assert "3 separate searches" in system and "a date" in system and "Gustave Eiffel" in user
    assert all(c["seed"] == 42 and c["temperature"] == 0.5 for c in llm.calls)
    assert "</search>" in llm.calls[0]["stop"]
    # The search results were fed back in Search-R1's <information> format.
    assert llm.calls[1]["messages"][-1]["content"].startswith("<information>Doc 1(Title: ")
    assert traj.messages[-1]["content"].rstrip().endswith("</answering_steps>")


async def test_forced_finalisation_after_the_search_budget() -> None:
    cfg = GeneratorConfig(max_searches=2)
    llm = ScriptedLLM(
        [search("a"), search("b"), search("c"), final("Which city is the engineer from?", "Dijon")]
    )
    retriever = OverlapRetriever()
    out = await generate(SEED, 3, "entity", llm, retriever, cfg)
    assert out.candidate is not None and out.candidate.answer == "Dijon"
    assert out.trajectory.status == "forced"
    assert retriever.queries == ["a", "b"]  # the third search was never run
    events = [s.event for s in out.trajectory.steps if s.kind == "event"]
    assert events == ["search_budget_exhausted", "forced_final"]
    forced_call = llm.calls[3]
    assert "used all 2 of your searches" in forced_call["messages"][-1]["content"]
    assert "</search>" not in forced_call["stop"]  # no searching allowed any more


async def test_malformed_output_is_recorded_and_retried() -> None:
    llm = ScriptedLLM(
        [
            "<think>hmm</think> I am not sure what to do.",  # neither search nor final
            "<question> How was Eiffel's tower built? </question>\n<answer> iron </answer>",  # a how-question
            final("Which city was the tower's engineer born in?", "Dijon"),
        ]
    )
    out = await generate(SEED, 2, "entity", llm, OverlapRetriever(), GeneratorConfig(max_format_retries=2))
    assert out.candidate is not None and out.candidate.answer == "Dijon"
    malformed = [s.text for s in out.trajectory.steps if s.event == "malformed"]
    assert len(malformed) == 2
    assert malformed[0] == "the reply had neither a <search> nor a final <question>/<answer>."
    assert "how/why questions are not allowed" in malformed[1]
    assert "could not be used: how/why" in llm.calls[2]["messages"][-1]["content"]


async def test_a_question_alone_gets_asked_for_its_answer_and_junk_is_no_answer() -> None:
    llm = ScriptedLLM(
        [
            "<question> Which city was Eiffel born in? </question>",
            "I am not sure what to do.",  # plain text that is no entity
            "<answer> Dijon </answer>",
        ]
    )
    out = await generate(SEED, 2, "entity", llm, OverlapRetriever(), GeneratorConfig(max_format_retries=2))
    assert out.candidate is not None and out.candidate.answer == "Dijon"
    events = [s.event for s in out.trajectory.steps if s.kind == "event"]
    assert events == ["untagged_question", "malformed", "untagged_answer"]


@pytest.mark.parametrize(
    ("text", "kind", "expect"),
    [
        ("1889.", "date", "1889"),
        ("The answer is 1889.", "number", "1889"),
        ("The answer is a number of 1,889.", "number", "1,889"),
        ("Final answer: July 4, 1776", "date", "July 4, 1776"),
        ("Answer: 42", "number", "42"),
        ("forty", "number", None),
        ("Dijon", "entity", "Dijon"),
        ("I think so", "entity", None),
        ("<answer> x </answer>", "entity", None),
        ("A very long answer with far too many words in it", "entity", None),
    ],
)
def test_untagged_answer(text: str, kind: str, expect: str | None) -> None:
    from sagegen.agents.generator import untagged_answer

    assert untagged_answer(text, 12, kind) == expect


async def test_malformed_output_gives_up_after_the_retry_budget() -> None:
    llm = ScriptedLLM(["nonsense"] * 3)
    out = await generate(SEED, 2, "number", llm, OverlapRetriever(), GeneratorConfig(max_format_retries=1))
    assert out.candidate is None
    assert out.trajectory.status == "failed"
    assert [s.event for s in out.trajectory.steps if s.kind == "event"] == [
        "malformed",
        "malformed",
        "gave_up",
    ]
    assert len(llm.calls) == 2


@pytest.mark.parametrize(
    ("question", "answer", "problem"),
    [
        ("Which city hosts the tower?", "Paris", None),
        ("How many towers did Eiffel build?", "3", None),
        ("Why was the tower built?", "for a fair", "how/why"),
        ("How did Eiffel build it?", "iron", "how/why"),
        ("According to the passage, who built it?", "Eiffel", "stand alone"),
        (
            "Which engineer born in 1832?",
            "a very long answer that goes on and on and on for many words indeed ok",
            "short",
        ),
        ("Who was born in Dijon in 1832?", "Dijon", "contains its own answer"),
        ("Is there a number that can be added to the end of this sentence?", "1889", "yes/no"),
        ("Was Eiffel born in Dijon?", "yes", "yes/no"),
        ("The question", "The date", "placeholder"),
        ("Which year was the tower completed?", "the short answer", "placeholder"),
        (None, "x", "no <question>"),
        ("Which?", "", "no <answer>"),
    ],
)
def test_check_pair(question: str | None, answer: str, problem: str | None) -> None:
    got = check_pair(question, answer, GeneratorConfig())
    assert (got is None) if problem is None else (got is not None and problem in got)


def _solver(answer: str, searches: int) -> Trajectory:
    msgs: list[dict[str, str]] = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "Question: q"},
    ]
    steps = []
    for i in range(searches):
        msgs += [
            {"role": "assistant", "content": f"<think>t{i}</think><search> solver query {i} </search>"},
            {"role": "user", "content": f"<information>Doc 1(Title: T{i}) passage {i}</information>"},
        ]
        steps.append(Step(kind="search", query=f"solver query {i}"))
    msgs.append({"role": "assistant", "content": f"<answer> {answer} </answer>"})
    return Trajectory(agent="solver", steps=tuple(steps), answer=answer, messages=tuple(msgs))


async def _first_candidate() -> tuple[object, Trajectory]:
    llm = ScriptedLLM([search("Eiffel Dijon"), final("Where was the tower's engineer born?", "Dijon")])
    out = await generate(SEED, 3, "entity", llm, OverlapRetriever(), GeneratorConfig())
    return out.candidate, out.trajectory


async def test_revise_too_easy_shows_the_shortcut_and_both_traces() -> None:
    cand, own = await _first_candidate()
    solver = _solver("Dijon", 1)
    verdict = Verdict.decide([[Attempt(index=0, trajectory=solver, judgement=Judgement(correct=True))]], 3)
    assert verdict.label == "too_easy"
    llm = ScriptedLLM(
        [search("Dijon mustard"), final("Where was the engineer of the 1889 Paris tower born?", "Dijon")]
    )
    out = await revise(
        DOCS[3], cand, own, solver, verdict, llm, OverlapRetriever(), GeneratorConfig(), round=2
    )  # type: ignore[arg-type]
    prompt = llm.calls[0]["messages"][1]["content"]
    assert "TOO EASY" in prompt and "only 1 search," in prompt and "at least 3" in prompt
    assert "explain the shortcut" in prompt
    assert "[search 1] Eiffel Dijon" in prompt  # its own trace
    assert "[search 1] solver query 0" in prompt  # the solver's trace
    assert out.candidate is not None and out.candidate.round == 2
    assert out.trajectory.agent == "reviser"
    # The revision keeps the evidence the first pair cited (non-empty, or the check would be vacuous).
    assert cand.supporting_ids and set(cand.supporting_ids) <= set(out.candidate.supporting_ids)  # type: ignore[attr-defined]


async def test_revise_incorrect_asks_for_a_grounded_correction() -> None:
    cand, own = await _first_candidate()
    solver = _solver("Paris", 2)
    verdict = Verdict.decide([[Attempt(index=0, trajectory=solver, judgement=Judgement(correct=False))]], 3)
    llm = ScriptedLLM([final("Which city in eastern France was the tower's engineer born in?", "Dijon")])
    await revise(DOCS[3], cand, own, solver, verdict, llm, OverlapRetriever(), GeneratorConfig())  # type: ignore[arg-type]
    prompt = llm.calls[0]["messages"][1]["content"]
    assert "no search agent answered correctly" in prompt and "its final answer: Paris" in prompt
    assert "explain the discrepancy" in prompt and "supported by retrieved text" in prompt


def test_render_trace_clips_and_keeps_the_latest_entries() -> None:
    traj = _solver("x", 30)
    text = render_trace(traj, GeneratorConfig(feedback_max_entries=4, feedback_message_chars=60))
    assert text.count("\n") <= 4
    assert "solver query 29" in text and "solver query 0 " not in text


@pytest.mark.parametrize(
    ("spec", "values"),
    [(3, (3,)), ("4", (4,)), ("3-7", (3, 4, 5, 6, 7)), ({"3": 1, "5": 3}, (3, 5))],
)
def test_parse_target(spec: object, values: tuple[int, ...]) -> None:
    import random

    t = parse_target(spec)  # type: ignore[arg-type]
    assert t.values == values
    draws = {t.sample(random.Random(i)) for i in range(200)}
    assert draws == set(values)


def test_parse_target_distribution_weights_and_errors() -> None:
    import random

    t = parse_target({"3": 1, "5": 3})
    assert t.weights == (0.25, 0.75)
    rng = random.Random(0)
    fives = sum(t.sample(rng) == 5 for _ in range(4000))
    assert 2800 < fives < 3200
    for bad in ("7-3", "x", 0, {"3": -1}, {}, {"a": 1}):
        with pytest.raises(ConfigError, match=r"pipeline\.target"):
            parse_target(bad)  # type: ignore[arg-type]


async def test_a_plain_text_question_gets_asked_for_its_answer() -> None:
    # SmolLM2-135M writes its question without tags; the loop takes it and asks for the answer.
    llm = ScriptedLLM(["What year did Gustave Eiffel design the Eiffel Tower?", "1889."])
    out = await generate(SEED, 2, "date", llm, OverlapRetriever(), GeneratorConfig())
    assert out.candidate is not None
    assert (out.candidate.question, out.candidate.answer) == (
        "What year did Gustave Eiffel design the Eiffel Tower?",
        "1889",
    )
    assert [s.event for s in out.trajectory.steps if s.kind == "event"] == [
        "untagged_question",
        "untagged_answer",
    ]
    assert "Question: What year did Gustave Eiffel design" in llm.calls[1]["messages"][-1]["content"]


async def test_a_plain_text_question_with_a_tagged_answer() -> None:
    llm = ScriptedLLM(["Question: Which city was Gustave Eiffel born in?", "<answer> Dijon </answer>"])
    out = await generate(SEED, 2, "entity", llm, OverlapRetriever(), GeneratorConfig())
    assert out.candidate is not None and out.candidate.answer == "Dijon"
    assert out.candidate.question == "Which city was Gustave Eiffel born in?"


async def test_a_question_without_its_answer_or_closing_tag_is_completed() -> None:
    llm = ScriptedLLM(
        [
            "The question:\n<question> Which city was Gustave Eiffel born in? It is a city. Blah",
            "<answer> Dijon </answer>",
        ]
    )
    out = await generate(SEED, 2, "entity", llm, OverlapRetriever(), GeneratorConfig())
    assert out.candidate is not None
    assert (out.candidate.question, out.candidate.answer) == (
        "Which city was Gustave Eiffel born in?",
        "Dijon",
    )


async def test_a_plain_text_pair_in_one_reply() -> None:
    llm = ScriptedLLM(["Question: When was the engineer of the Garabit viaduct born?\n\nThe answer: 1832."])
    out = await generate(SEED, 2, "date", llm, OverlapRetriever(), GeneratorConfig())
    assert out.candidate is not None and len(llm.calls) == 1
    assert (out.candidate.question, out.candidate.answer) == (
        "When was the engineer of the Garabit viaduct born?",
        "1832",
    )


async def test_a_refused_plain_question_is_forgotten() -> None:
    llm = ScriptedLLM(
        [
            "Is there a number at the end of this sentence?",  # a yes/no question
            "The answer is 1889.",  # completes it: refused as yes/no
            "Which year did the Paris tower open?\nAnswer: 1889",  # a new pair, not the old question again
        ]
    )
    out = await generate(SEED, 2, "number", llm, OverlapRetriever(), GeneratorConfig(max_format_retries=2))
    assert out.candidate is not None
    assert out.candidate.question == "Which year did the Paris tower open?" and out.candidate.answer == "1889"
    events = [s.event for s in out.trajectory.steps if s.kind == "event"]
    assert events == ["untagged_question", "untagged_answer", "malformed", "untagged_answer"]


async def test_a_model_that_only_ever_asks_new_questions_still_ends() -> None:
    # Each reply is a fresh plain-text question without an answer: one free ask, then retries run out.
    replies = [f"Which town number {i} lies on the river Seine?" for i in range(20)]
    llm = ScriptedLLM(replies)
    out = await generate(SEED, 2, "entity", llm, OverlapRetriever(), GeneratorConfig(max_format_retries=2))
    assert out.candidate is None and out.trajectory.status == "failed"
    assert len(llm.calls) == 4  # 1 + the free ask + 2 retries
    last_prompt = llm.calls[3]["messages"][-1]["content"]
    assert "could not be used" in last_prompt and "Which town number 2" in last_prompt


@pytest.mark.parametrize("seed", range(40))
async def test_the_loop_always_ends_within_its_bound(seed: int) -> None:
    import random

    rng = random.Random(seed)
    pool = [
        search("Dijon"),
        "<search></search>",
        "nonsense",
        "Which town lies on the river Seine today?",
        "The answer is 1889.",
        "Answer: Dijon",
        "<question> Which city hosts the Eiffel Tower? </question>",
        "<answer> Paris </answer>",
        "<question> The question </question>",
        "Is it true?",
        final("Which city was the engineer of the tower born in?", "Dijon"),
        "<question> unclosed and long",
    ]
    llm = ScriptedLLM(responder=lambda m: rng.choice(pool))
    cfg = GeneratorConfig(max_searches=rng.randint(0, 3), max_format_retries=rng.randint(0, 3))
    out = await generate(SEED, 2, rng.choice(["entity", "date", "number"]), llm, OverlapRetriever(), cfg)
    assert len(llm.calls) <= cfg.max_searches + cfg.max_format_retries + 4
    assert (out.candidate is None) == (out.trajectory.status == "failed")
    if out.candidate is not None:
        assert check_pair(out.candidate.question, out.candidate.answer, cfg) is None
