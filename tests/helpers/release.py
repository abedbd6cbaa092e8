"""The authors' release as files (a fixture), for the import tests and the tests that read it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sagegen.prompts import render


@pytest.fixture
def release(tmp_path: Path) -> Path:
    root = tmp_path / "outputs" / "agentic_question_gen"
    docs = [f'Title: "Doc {i}"\nContent: some text {i}' for i in range(4)]
    write_jsonl(
        root / "initial_questions" / "wiki_x_with_search_20_20turn_2to10_steps.jsonl",
        [
            initial_row(docs[0], "Q0 first?", "1888", 3, "a date"),
            initial_row(docs[1], "Q1 first?", "Bain", 2, "an entity"),
            initial_row(docs[2], "Q2 first?", "42", 2, "a number"),
            initial_row(docs[3], "Q3 first?", "Oslo", 4, "an entity"),
        ],
    )
    write_jsonl(
        root / "feedbacks" / "wiki_x_gemini-2.5-flash_0turn.jsonl",
        [
            feedback_row("Q0 first?", "1888", 3, True, 1, "Q0 second?", "1888"),
            feedback_row("Q1 first?", "Bain", 2, False, 3, "Q1 second?", "Thomas Bain"),
            feedback_row("Q3 first?", "Oslo", 4, False, 2, None, None),
        ],
    )
    write_jsonl(
        root / "feedbacks" / "wiki_x_gemini-2.5-flash_0turn_gemini-2.5-flash_0turn.jsonl",
        [
            feedback_row("Q0 second?", "1888", 3, True, 2, "Q0 third?", "1888"),
        ],
    )
    write_jsonl(
        root / "processed_data" / "wiki_x_2nd_feedback.jsonl",
        [
            {"question": "Q2 first?", "answer": "42"},
            {"question": "Q0 third?", "answer": "1888"},
        ],
    )
    return root


def initial_row(doc: str, q: str, a: str, target: int | str, atype: str) -> dict[str, Any]:
    prompt = _gen_prompt(doc, target if isinstance(target, int) else 3, atype.split()[-1])
    return {
        "initial_doc": doc,
        "question": q,
        "answer": a,
        "model_response": _gen_transcript(prompt, ["first query", "second query"], q, a),
        "prompt": prompt,
        "search_steps": target,
        "answer_type": atype,
    }


def feedback_row(
    prev_q: str, prev_a: str, target: int, correct: bool, steps: int, new_q: str | None, new_a: str | None
) -> dict[str, Any]:
    answers = [prev_a if correct else "wrong"] * 4
    best = _solver(prev_q, steps, answers[0])
    return {
        "question": new_q,
        "answer": new_a,
        "model_answer": answers,
        "n_rollouts": 4,
        "best_of_n": int(correct),
        "random_of_n": int(correct),
        "random_n_search_steps": steps,
        "avg_of_n": 1.0 if correct else 0.0,
        "best_n_search_steps": steps,
        "best_response": best,
        "best_idx": 0,
        "n_correct": 4 if correct else 0,
        "search_steps": target,
        "model_response": None
        if new_q is None
        else f"<reason>r</reason><think>t</think><question>{new_q}</question><answer>{new_a}</answer>"
        "<search steps>1. x</search steps>",
        "pass_check": False,
        "search_agent_prompt": "p",
        "search_agent_response": "r",
        "data_generator_agent_prompt": "p",
        "data_generator_agent_response": "r",
        "prompt": "the feedback prompt",
        "feedback_type": "difficulty" if correct else "correctness",
        "prev_question": prev_q,
        "prev_answer": prev_a,
    }


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # pandas' to_json escapes "/" as "\/"; json.loads reads both the same
    path.write_text("".join(json.dumps(r).replace("/", "\\/") + "\n" for r in rows), encoding="utf-8")
    return path


def _gen_prompt(doc: str, target: int, atype: str) -> str:
    return (
        render("generator_system.j2", "sage", target=target, max_searches=20, answer_type=atype)
        + f"\nInitial document: \n{doc}\n"
    )


def _gen_transcript(prompt: str, queries: list[str], q: str, a: str) -> str:
    body = "".join(
        f'\n<think>step</think>\n<search>{x}</search>\n<information>Doc 1(Title: "T{i}") '
        f"text {i}</information>\n"
        for i, x in enumerate(queries)
    )
    return (
        prompt + body + f"<think>done</think>\n<question>{q}</question>\n<answer>{a}</answer>\n"
        "<answering steps>1. a 2. b</answering steps>"
    )


def _solver(q: str, searches: int, a: str) -> str:
    turns = "".join(
        f"\n<think>look</think>\n<search> s{i} </search>\n<information>Doc 1(Title: X) y</information>\n"
        for i in range(searches)
    )
    end = f"<think>ok</think>\n<answer>{a}</answer>"
    return render("solver_system.j2", "sage") + f" Question: {q}" + turns + end
