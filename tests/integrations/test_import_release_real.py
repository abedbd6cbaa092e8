"""``sagegen import`` on the authors' release as published (tests/data/sage_release, see its README).

The release's three files are not closed under their own references: feedbacks line 5 judges a
question no released initial_questions line generated, and processed_data line 2 accepts one no
released line generated. The import takes the other 5 pairs, names those 2 lines, and every
command that reads runs shows what the release recorded (its models, retriever, rounds, K) and
leaves unknown what it did not (difficulty and Avg@K of the accepted round: its judge results for
round 2 are not released).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sage_loop_helpers import run_cli
from sagegen.analysis.analyze import analyze_run
from sagegen.analysis.report import render_report
from sagegen.export.api import export_run
from sagegen.integrations.sage_release import import_release
from sagegen.ledger.store import IMPORT_FILE, RunStore

RELEASE = Path(__file__).parents[1] / "data" / "sage_release" / "agentic_question_gen"
STEM = "wiki_20260205_154241_gemini-2.5-flash_e5_with_search_20_20turn_2to10_steps"
FEEDBACKS = RELEASE / "feedbacks" / f"{STEM}_gemini-2.5-flash_0turn.jsonl"
PROCESSED = RELEASE / "processed_data" / f"{STEM}_1st_feedback.jsonl"


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("release") / "run"
    return out, import_release([RELEASE], out)


def test_five_pairs_in_two_lines_reported(imported: tuple[Path, object]) -> None:
    out, summary = imported
    assert summary.pairs == 5  # type: ignore[attr-defined]
    assert [s.split(": ")[0] for s in summary.skipped] == [f"{FEEDBACKS}:5", f"{PROCESSED}:2"]  # type: ignore[attr-defined]
    assert summary.accepted == 4 and summary.unjudged == 1  # type: ignore[attr-defined]
    with RunStore.open(out) as store:
        states = [p.state for p in store.pairs()]
        # the release accepted 4 of the 5 processed lines it can source; the Avicenna pair's revision
        # ("410") is judged by no released file
        assert states == ["pass", "pass", "pass", "running", "pass"]
        p0 = store.pair(0)
        assert p0 is not None and p0.final_round == 2 and p0.rounds[0].verdict is not None
        assert (p0.rounds[0].verdict.label, p0.rounds[0].verdict.difficulty) == ("too_easy", 1)
        assert p0.qa is not None and p0.qa.acceptance == "unknown"
        assert (p0.qa.difficulty, p0.qa.avg_at_k) == (None, None)  # not released: unknown, never 0
        p4 = store.pair(4)  # accepted in round 1 (its judge results are not released either)
        assert p4 is not None and p4.final_round == 1 and p4.qa is not None and p4.qa.answer == "1989"
        p1 = store.pair(1)
        assert p1 is not None and p1.rounds[0].verdict is not None
        assert p1.rounds[0].verdict.avg_at_k == 0.75  # the release's own avg_of_n
        att = store.trajectory(p1.rounds[0].attempts[0].trace_id)
        assert att.num_searches == 3 and att.answer == "March 7, 2007"  # best_idx 2 of model_answer
        # the reviser wrote "<search>Gerard of Cremona ...</search>" in its reply; it has no search tool
        p3 = store.pair(3)
        assert p3 is not None
        reviser = store.trajectory(p3.rounds[1].gen_trace_id or "")
        assert "<search>Gerard of Cremona" in reviser.steps[0].text and reviser.num_searches == 0


def test_run_carries_the_release_own_settings(imported: tuple[Path, object]) -> None:
    out, _ = imported
    with RunStore.open(out) as store:
        cfg = store.config
    assert cfg["llm"]["model"] == "gemini-2.5-flash" and cfg["retrieval"]["kind"] == "http"
    assert (cfg["pipeline"]["rounds"], cfg["pipeline"]["target"], cfg["pipeline"]["attempts"]) == (
        2,
        "2-10",
        4,
    )
    assert cfg["generator"]["max_searches"] == 20
    meta = json.loads((out / IMPORT_FILE).read_text())
    assert (meta["generator_model"], meta["reviser_model"], meta["retriever"]) == (
        "gemini-2.5-flash",
        "gemini-2.5-flash",
        "e5",
    )
    assert meta["feedback_rounds"] == 1 and meta["solver_model"] is None and meta["min_search_step"] is None
    assert len(meta["skipped"]) == 2


def test_analyze_and_report_count_accepted_pairs_as_passes(imported: tuple[Path, object]) -> None:
    out, _ = imported
    a = analyze_run(out, dup_method="jaccard")
    r1, r2 = a["by_round"][1], a["by_round"][2]
    # after round 1: 4 judged too easy (the feedbacks file), 1 accepted without released verdict
    assert (r1["n"], r1["passed"], r1["labels"]["too_easy"]) == (5, 1, 4)
    # Avg@K over the 4 rounds the release reports it for (1.0, 0.75, 1.0, 1.0); the accepted one is unknown
    assert r1["avg_at_k"] == pytest.approx(100 * 3.75 / 4)
    assert (r2["n"], r2["passed"], r2["pct_pass"]) == (4, 4, 100.0)  # the Avicenna pair is still running
    assert r2["avg_at_k"] is None and r2["mean_searches"] is None  # nothing known about round 2's verdicts
    assert a["round_verdicts"][2] == {
        "generated": 4,
        "gen_failed": 0,
        "pass": 3,
        "too_easy": 0,
        "incorrect": 0,
        "unverified": 1,
    }
    html = render_report(out, a)
    assert "gemini-2.5-flash" in html and "retriever e5" in html and "rounds 2" in html
    assert "2 lines skipped without a source record" in html


def test_export_verl_takes_the_accepted_pairs(imported: tuple[Path, object], tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    out, _ = imported
    s = export_run(out, "verl", tmp_path / "verl", split=0.0)  # default --min-difficulty 2
    assert s["selected"] == 4 and s["counts"] == {"train": 4}


def test_cli_import_status_analyze_on_the_release(tmp_path: Path) -> None:
    p = run_cli("import", str(RELEASE), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "imported 5 pairs" in p.stdout and "skipped 2 lines without a source record" in p.stdout
    assert f"{FEEDBACKS}:5" in p.stdout and f"{PROCESSED}:2" in p.stdout and "pass 4" in p.stdout
    # round 1: the release's feedbacks file judged 4 too easy, its processed file accepted 1 unjudged;
    # round 2: 3 accepted, the Avicenna revision judged by no released file
    assert "round 1: generated 5, too easy 4, accepted 1" in p.stdout
    assert "round 2: generated 4, accepted 3, unverified 1" in p.stdout
    a = run_cli("analyze", str(tmp_path / "run"), "--dedup", "jaccard", cwd=tmp_path)
    assert a.returncode == 0, a.stderr
    assert "generator gemini-2.5-flash" in a.stdout and "retriever e5" in a.stdout


def test_processed_data_alone(tmp_path: Path) -> None:
    alone = tmp_path / "processed_data"
    alone.mkdir()
    shutil.copy(PROCESSED, alone / PROCESSED.name)
    summary = import_release([alone], tmp_path / "run")
    assert (summary.pairs, summary.accepted, summary.skipped) == (5, 5, ())
    with RunStore.open(tmp_path / "run") as store:
        qas = [p.qa for p in store.pairs()]
        cfg = store.config
    assert all(
        q is not None and q.label == "pass" and q.difficulty is None and q.avg_at_k is None for q in qas
    )
    assert [q.answer for q in qas if q] == [
        "1989",
        "June 21, 1966",
        "10 January 1888",
        "March 7, 2007",
        "General Electric GE90",
    ]
    assert cfg["pipeline"]["rounds"] == 2  # "_1st_feedback": the generation round and one feedback round
    a = analyze_run(tmp_path / "run", dup_method="jaccard")
    assert a["by_round"][1]["passed"] == 5 and a["by_round"][1]["avg_at_k"] is None
    if __import__("importlib").util.find_spec("pyarrow") is not None:
        s = export_run(tmp_path / "run", "verl", tmp_path / "verl", split=0.0)
        assert s["counts"] == {"train": 5}
