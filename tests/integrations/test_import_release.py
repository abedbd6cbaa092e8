"""``sagegen import`` of the authors' release outputs.

The fixture files are written here in the release's layout, with the fields its writer code
produces (initial_question_gen.py, feedback_gen.py, process_generated_data.py; see
``sagegen.integrations.sage_release``). Their transcripts use our own ``sage`` prompts, which like
the release's mention ``<think>`` twice before the model's first turn.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers.release import _solver, write_jsonl
from sagegen.analysis.analyze import analyze_run
from sagegen.export.api import export_run
from sagegen.integrations.sage_release import import_release, split_release_transcript
from sagegen.ledger.store import RunStore


def test_import_maps_rounds_verdicts_and_acceptance(release: Path, tmp_path: Path) -> None:
    summary = import_release([release], tmp_path / "run")
    assert (summary.pairs, summary.accepted, summary.unjudged) == (4, 2, 1)
    with RunStore.open(tmp_path / "run") as store:
        p0 = store.pair(0)
        assert p0 is not None and [r.candidate.question for r in p0.rounds if r.candidate] == [
            "Q0 first?",
            "Q0 second?",
            "Q0 third?",
        ]
        v1, v2 = p0.rounds[0].verdict, p0.rounds[1].verdict
        assert v1 is not None and (v1.label, v1.difficulty, v1.num_attempts) == ("too_easy", 1, 4)
        assert v2 is not None and v2.difficulty == 2 and p0.rounds[2].verdict is None
        assert p0.state == "pass" and p0.qa is not None and p0.qa.acceptance == "unknown"
        assert p0.qa.difficulty is None and p0.qa.avg_at_k is None  # the file does not say: not invented
        assert len(p0.rounds[0].attempts) == 1  # only the kept attempt; the other three were not kept
        gen = store.trajectory(p0.rounds[0].gen_trace_id or "")
        assert [s.query for s in gen.steps if s.kind == "search"] == ["first query", "second query"]
        assert all(s.hit_ids == () for s in gen.steps)
        att = store.trajectory(p0.rounds[0].attempts[0].trace_id)
        assert att.num_searches == 1 and att.answer == "1888"
        assert store.pair(1).state == "running"  # type: ignore[union-attr]  # Q1 second? judged nowhere
        p2, p3 = store.pair(2), store.pair(3)
        assert p2 is not None and p2.state == "pass" and p2.final_round == 1
        assert p3 is not None and p3.state == "incorrect" and p3.output == "unsolved"
        assert p3.rounds[1].candidate is None
        kinds = {e.kind for e in store.events()}
        assert {"import", "import_unknown"} <= kinds
    data = [json.loads(x) for x in (tmp_path / "run" / "dataset.jsonl").read_text().splitlines()]
    assert {d["question"] for d in data} == {"Q0 third?", "Q2 first?"}
    # the run works with the commands that read runs
    analyze_run(tmp_path / "run", dup_method="jaccard")
    s = export_run(tmp_path / "run", "flashrag", tmp_path / "bench.jsonl", min_difficulty=0)
    assert s is not None and len((tmp_path / "bench.jsonl").read_text().splitlines()) == 2


def test_release_split_matches_feedback_gen() -> None:
    text = _solver("Where?", 1, "Oslo")
    prompt, output = split_release_transcript(text)
    assert prompt.endswith("Question: Where?") and output.startswith("<think>look</think>")
    assert text.endswith(output) and output.endswith("<answer>Oslo</answer>")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sagegen.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "1000"},
    )  # rich wraps errors at the terminal width


def test_cli_import_prints_status(release: Path, tmp_path: Path) -> None:
    p = _cli("import", str(release), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "imported 4 pairs" in p.stdout and "pairs 4:" in p.stdout and "pass 2" in p.stdout
    again = _cli("import", str(release), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.pop("prev_question"), "prev_question"),
        (lambda r: r.update(best_of_n="1"), "best_of_n"),
        (lambda r: r.update(feedback_type="correctness"), "feedback_type"),
    ],
)
def test_bad_feedback_line_names_file_line_and_field(
    release: Path, tmp_path: Path, mutate: Any, field: str
) -> None:
    path = release / "feedbacks" / "wiki_x_gemini-2.5-flash_0turn.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    mutate(rows[1] if field != "feedback_type" else rows[0])
    write_jsonl(path, rows)
    p = _cli("import", str(release), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert path.name in p.stderr and f"field '{field}'" in p.stderr
    assert f"line {2 if field != 'feedback_type' else 1}" in p.stderr
    assert not (tmp_path / "run" / "ledger.sqlite").exists()  # nothing written before all is read


def test_foreign_and_broken_lines_are_refused(tmp_path: Path) -> None:
    bad = write_jsonl(tmp_path / "x.jsonl", [{"id": "1", "contents": "a passage"}])
    p = _cli("import", str(bad), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert p.returncode == 2 and "x.jsonl, line 1" in p.stderr and "initial_questions" in p.stderr
    bad.write_text('{"question": "q", "answer": "a"}\n{not json\n')
    p = _cli("import", str(bad), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert p.returncode == 2 and "line 2" in p.stderr and "not JSON" in p.stderr


def test_line_without_source_record_is_skipped_and_reported(release: Path, tmp_path: Path) -> None:
    # The published release judges and accepts questions none of its released lines generated: such a
    # line (and what chains on it) is skipped and named by file:line; everything else is imported.
    path = release / "feedbacks" / "wiki_x_gemini-2.5-flash_0turn.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[1]["prev_question"] = "never generated?"
    write_jsonl(path, rows)
    summary = import_release([release], tmp_path / "run")
    assert summary.skipped == (
        f"{path}:2: prev_question: no imported initial_questions or feedbacks line generated this question "
        "(its source record is not in these files)",
    )
    assert summary.pairs == 4
    with RunStore.open(tmp_path / "run") as store:
        assert [e.message for e in store.events() if e.kind == "import_skipped"] == list(summary.skipped)
        p1 = store.pair(1)
        assert p1 is not None and len(p1.rounds) == 1 and p1.rounds[0].verdict is None
