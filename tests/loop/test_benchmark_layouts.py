"""``sagegen eval`` reads the layouts public benchmark releases use, and names the flags otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sagegen.errors import InputError
from sagegen.loop.benchmark_fields import Fields
from sagegen.loop.evaluate import load_benchmark


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("rows", "expect"),
    [
        # FlashRAG
        ([{"id": "a", "question": "Q1?", "golden_answers": ["x", "y"]}], [("a", "Q1?", ("x", "y"))]),
        # idx + a string answer, no id (the layout in the issue)
        (
            [{"idx": 0, "question": "Q1?", "answer": "x"}, {"idx": 1, "question": "Q2?", "answer": "y"}],
            [("0", "Q1?", ("x",)), ("1", "Q2?", ("y",))],
        ),
        # HotpotQA: _id and answer
        (
            [{"_id": "5a8b", "question": "Q1?", "answer": "yes", "type": "comparison"}],
            [("5a8b", "Q1?", ("yes",))],
        ),
        # answers as a list, no id field at all: the line number is the id
        (
            [{"question": "Q1?", "answers": ["x"]}, {"question": "Q2?", "answer": ["y", "z"]}],
            [("1", "Q1?", ("x",)), ("2", "Q2?", ("y", "z"))],
        ),
    ],
)
def test_public_layouts_are_read(tmp_path: Path, rows: list[dict], expect: list[tuple]) -> None:
    items = load_benchmark(_write(tmp_path / "b.jsonl", rows))
    assert [(i.id, i.question, i.golden_answers) for i in items] == expect


def test_shared_hotpotqa_and_bamboogle_files_load(shared_data: Path) -> None:
    assert len(load_benchmark(shared_data / "hotpotqa" / "questions.jsonl")) == 100
    assert len(load_benchmark(shared_data / "bamboogle.jsonl")) == 125


def test_other_layouts_are_mapped_with_flags(tmp_path: Path) -> None:
    row = {"qid": "t1", "query": "Q1?", "target": {"aliases": ["x"]}, "gold": "x"}
    path = _write(tmp_path / "t.jsonl", [row])
    with pytest.raises(InputError) as e:
        load_benchmark(path)
    msg = str(e.value)
    assert "t.jsonl" in msg and "line 1" in msg and "'question'" in msg
    assert "--id-field" in msg and "--question-field" in msg and "--answer-field" in msg
    items = load_benchmark(path, fields=Fields(id="qid", question="query", answer="gold"))
    assert [(i.id, i.question, i.golden_answers) for i in items] == [("t1", "Q1?", ("x",))]
    with pytest.raises(InputError, match=r"line 1, field 'target'.*--answer-field"):
        load_benchmark(path, fields=Fields(id="qid", question="query", answer="target"))


def test_missing_answers_and_duplicate_ids_name_the_line(tmp_path: Path) -> None:
    rows = [{"id": "a", "question": "Q?", "answer": "x"}, {"id": "b", "question": "Q?"}]
    path = _write(tmp_path / "b.jsonl", rows)
    with pytest.raises(InputError, match=r"line 2, field 'golden_answers'.*golden_answers, answers, answer"):
        load_benchmark(path)
    dup = _write(tmp_path / "d.jsonl", [{"idx": 1, "question": "Q?", "answer": "x"}] * 2)
    with pytest.raises(InputError, match=r"line 2, field 'id'.*duplicate id '1'"):
        load_benchmark(dup)


def test_cli_eval_flags_map_a_layout(tmp_path: Path) -> None:
    from sage_loop_helpers import run_cli, write_corpus

    bench = _write(tmp_path / "odd.jsonl", [{"key": "k1", "q": "Who wrote Hamlet?", "gold": "Shakespeare"}])
    common = [
        "-s",
        f"corpus.path={write_corpus(tmp_path / 'corpus.jsonl')}",
        "-s",
        "llm.backend=scripted",
        "-s",
        "llm.model=fixture:sage",
        "-s",
        "judge.method=em",
        "-s",
        f"retrieval.index_dir={tmp_path / 'idx'}",
        "--out",
        str(tmp_path / "ev"),
    ]
    res = run_cli("eval", str(bench), *common, cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    err = " ".join(res.stderr.split())  # the console wraps long lines
    assert "odd.jsonl, line 1, field 'question'" in err and "--question-field" in err
    res = run_cli(
        "eval",
        str(bench),
        "--id-field",
        "key",
        "--question-field",
        "q",
        "--answer-field",
        "gold",
        *common,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(x) for x in (tmp_path / "ev" / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["k1"] and rows[0]["golden_answers"] == ["Shakespeare"]
