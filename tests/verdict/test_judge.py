"""Answer normalisation, EM/F1 on known SQuAD cases, and the BrowseComp-style LLM judge."""

from __future__ import annotations

import pytest

from sagegen.config import JudgeConfig
from sagegen.errors import ConfigError, LLMError
from sagegen.llm.scripted import ScriptedLLM
from sagegen.verdict.judge import exact_match, f1_score, judge_answer, normalize_answer, parse_grader


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("The Beatles", "beatles"),
        ("  A  tale of Two Cities!  ", "tale of two cities"),
        ("U.S.A.", "usa"),
        ("an apple, the pear; a fig", "apple pear fig"),
        ("Theatre", "theatre"),  # "the" only as a whole word
        ("", ""),
    ],
)
def test_normalize_answer(raw: str, norm: str) -> None:
    assert normalize_answer(raw) == norm


def test_exact_match_many_golden() -> None:
    assert exact_match("the Denver Broncos", ["Denver Broncos", "Broncos"]) == 1.0
    assert exact_match("Broncos!", ["Denver Broncos", "Broncos"]) == 1.0
    assert exact_match("Denver", ["Denver Broncos"]) == 0.0
    assert exact_match(None, ["x"]) == 0.0
    assert exact_match("x", "x") == 1.0


def test_f1_known_squad_values() -> None:
    # SQuAD v1.1 evaluate-v1.1.py values, computed by hand:
    # pred "Denver Broncos" vs gold "Broncos": p=1/2, r=1 -> 2/3.
    assert f1_score("Denver Broncos", ["Broncos"]) == pytest.approx(2 / 3)
    # pred "the Carolina Panthers team" vs "Carolina Panthers": p=2/3, r=1 -> 0.8.
    assert f1_score("the Carolina Panthers team", ["Carolina Panthers"]) == pytest.approx(0.8)
    # max over golden answers
    assert f1_score("Santa Clara, California", ["Levi's Stadium", "Santa Clara"]) == pytest.approx(0.8)
    assert f1_score("Paris", ["London"]) == 0.0
    assert f1_score(None, ["x"]) == 0.0
    assert f1_score("", ["x"]) == 0.0
    # repeated tokens count once per occurrence (Counter intersection)
    assert f1_score("the the cat cat", ["cat"]) == pytest.approx(2 * 0.5 * 1 / 1.5)


def test_f1_yes_no_only_exact() -> None:
    assert f1_score("yes it is", ["yes"]) == 0.0
    assert f1_score("no", ["no"]) == 1.0
    assert f1_score("yes", ["yes indeed"]) == 0.0


WELL_FORMED = """extracted_final_answer: James Madison

reasoning: The response names James Madison, which is the correct answer.

correct: yes

confidence: 95%"""


@pytest.mark.parametrize(
    ("text", "correct", "extracted"),
    [
        (WELL_FORMED, True, "James Madison"),
        (WELL_FORMED.replace("correct: yes", "correct: no"), False, "James Madison"),
        (
            "**extracted_final_answer:** Paris\n**reasoning:** matches\n**correct:** Yes\n**confidence:** 80",
            True,
            "Paris",
        ),
        ("extracted_final_answer: None\nreasoning: no answer\ncorrect: no\nconfidence: 100", False, None),
        ("Extracted_Final_Answer: 1999\nReasoning: same year.\nCorrect: TRUE", True, "1999"),
        ("correct: 'no'", False, None),
        ("The answers match.\ncorrect: yes.", True, None),
        ("reasoning: the answer is incorrect: it differs\ncorrect: no", False, None),
        ("extracted_final_answer: X\ncorrect：yes", True, "X"),
        ("correct: yes\n... on reflection ...\ncorrect: no", False, None),
    ],
)
def test_parse_grader_variants(text: str, correct: bool, extracted: str | None) -> None:
    reply = parse_grader(text)
    assert reply is not None
    assert reply.correct is correct
    assert reply.extracted == extracted


def test_parse_grader_fields() -> None:
    reply = parse_grader(WELL_FORMED)
    assert reply is not None
    assert reply.reasoning == "The response names James Madison, which is the correct answer."
    assert reply.confidence == 95


@pytest.mark.parametrize(
    "text",
    [
        "",
        "I think it is right.",
        "incorrect: yes",
        "correct answer: yes",
        "the [correct_answer]: yes",
        "correct: maybe",
    ],
)
def test_parse_grader_malformed(text: str) -> None:
    assert parse_grader(text) is None


async def test_judge_llm_well_formed() -> None:
    llm = ScriptedLLM([WELL_FORMED])
    j = await judge_answer("Who was president?", "Madison", ["James Madison"], llm, JudgeConfig())
    assert j.correct and j.method == "llm" and j.extracted == "James Madison"
    assert j.em == 0.0 and j.f1 == pytest.approx(2 / 3)
    assert "confidence 95" in j.reason
    prompt = llm.calls[0]["messages"][0]["content"]
    assert "[question]: Who was president?" in prompt and "[response]: Madison" in prompt
    assert "[correct_answer]: James Madison" in prompt and "correct: Answer 'yes'" in prompt
    assert llm.calls[0]["temperature"] == 0.0


async def test_judge_multiple_golden_in_prompt() -> None:
    llm = ScriptedLLM(["correct: no"])
    j = await judge_answer("q", "x", ["a", "b"], llm, JudgeConfig())
    assert not j.correct
    assert "[correct_answer]: a OR b (any one of these is correct)" in llm.calls[0]["messages"][0]["content"]


async def test_judge_retry_then_parse() -> None:
    llm = ScriptedLLM(["I cannot decide.", WELL_FORMED])
    j = await judge_answer("q", "Madison", ["James Madison"], llm, JudgeConfig())
    assert j.correct and j.method == "llm" and len(llm.calls) == 2
    retry = llm.calls[1]["messages"]
    assert [m["role"] for m in retry] == ["user", "assistant", "user"]
    assert "did not follow the required format" in retry[-1]["content"]


@pytest.mark.parametrize(("pred", "expect"), [("James Madison president", True), ("Madison", False)])
async def test_judge_falls_back_to_f1(pred: str, expect: bool) -> None:
    llm = ScriptedLLM(["garbage", "more garbage"])
    j = await judge_answer(
        "q", pred, ["James Madison"], llm, JudgeConfig(f1_threshold=0.8, em_shortcut=False)
    )
    assert j.method == "f1_fallback" and j.correct is expect
    assert "unreadable judge reply" in j.reason and len(llm.calls) == 2


async def test_judge_llm_errors_fall_back() -> None:
    llm = ScriptedLLM([LLMError("HTTP 500"), LLMError("HTTP 500")])
    j = await judge_answer("q", "James Madison", ["Madison, James"], llm, JudgeConfig(em_shortcut=False))
    assert j.method == "f1_fallback" and j.correct and "HTTP 500" in j.reason


async def test_em_shortcut_skips_llm() -> None:
    llm = ScriptedLLM([])
    j = await judge_answer("q", "the Beatles", ["Beatles"], llm, JudgeConfig())
    assert j.correct and j.method == "em" and llm.calls == []
    # without the shortcut the LLM decides, even on an exact match
    llm = ScriptedLLM(["correct: no"])
    j = await judge_answer("q", "the Beatles", ["Beatles"], llm, JudgeConfig(em_shortcut=False))
    assert not j.correct and j.em == 1.0 and len(llm.calls) == 1


@pytest.mark.parametrize("pred", [None, "", "   "])
async def test_no_prediction_is_incorrect_without_a_call(pred: str | None) -> None:
    llm = ScriptedLLM([])
    j = await judge_answer("q", pred, ["x"], llm, JudgeConfig())
    assert not j.correct and llm.calls == [] and j.extracted is None and j.method == "none"


async def test_em_and_f1_methods_need_no_llm() -> None:
    j = await judge_answer("q", "Denver Broncos", ["Broncos"], None, JudgeConfig(method="em"))
    assert not j.correct and j.method == "em"
    j = await judge_answer(
        "q", "Denver Broncos", ["Broncos"], None, JudgeConfig(method="f1", f1_threshold=0.6)
    )
    assert j.correct and j.method == "f1" and j.f1 == pytest.approx(2 / 3)
    with pytest.raises(ConfigError, match="judge LLM"):
        await judge_answer("q", "Denver", ["Broncos"], None, JudgeConfig(method="llm"))
