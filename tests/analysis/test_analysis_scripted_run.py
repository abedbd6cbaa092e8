"""analyze / report / export on a ledger produced by a real `sagegen generate` run.

The run uses the scripted SAGE fixture model (deterministic, offline) over the shared HotpotQA
corpus, so it meets passes, too-easy and incorrect verdicts. The metrics are checked against an
independent recomputation from the raw SQLite tables, not through the store's read API.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sagegen.analysis.analyze import analyze_run
from sagegen.export.api import export_run
from sagegen.verdict.reward import compute_score


def _sets(shared_data: Path, base: Path) -> list[str]:
    return [
        f"corpus.path={shared_data / 'hotpotqa' / 'corpus.jsonl'}",
        f"retrieval.index_dir={base / 'idx'}",
        "llm.backend=scripted",
        "llm.model=fixture:sage",
        "judge.method=em",
        "pipeline.precheck=off",  # the fixture's questions quote their answer's passage (test_precheck.py)
    ]


@pytest.fixture(scope="module")
def run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("scripted")
    run_dir = base / "run"
    sets = _sets(shared_data, base)
    cmd = [
        sys.executable,
        "-m",
        "sagegen.cli.main",
        "generate",
        "-o",
        str(run_dir),
        "-n",
        "12",
        "--target",
        "2",
        "--rounds",
        "2",
        "--k",
        "2",
        "--no-progress",
    ]
    for s in sets:
        cmd += ["-s", s]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=base)
    assert p.returncode == 0, p.stderr[-3000:]
    return run_dir


def _raw(run: Path) -> tuple[dict[int, dict], dict[int, list[tuple[int, dict]]]]:
    con = sqlite3.connect(f"file:{run / 'ledger.sqlite'}?mode=ro", uri=True)
    pairs = {
        r[0]: {"state": r[1], "final_round": r[2], "output": r[3]}
        for r in con.execute("SELECT idx, state, final_round, output FROM pairs")
    }
    rounds: dict[int, list[tuple[int, dict]]] = {}
    for idx, rnd, vj in con.execute(
        "SELECT pair_idx, round, verdict_json FROM rounds WHERE verdict_json IS NOT "
        "NULL ORDER BY pair_idx, round"
    ):
        rounds.setdefault(idx, []).append((rnd, json.loads(vj)))
    con.close()
    return pairs, rounds


def test_metrics_agree_with_raw_ledger(run: Path) -> None:
    a = analyze_run(run, dup_method="jaccard")
    pairs, rounds = _raw(run)
    for r in (1, 2):
        snaps = []
        for idx, vs in rounds.items():
            upto = [v for rr, v in vs if rr <= r]
            done = pairs[idx]["state"] in ("pass", "too_easy", "incorrect") and pairs[idx]["final_round"] <= r
            if upto and (any(rr == r for rr, _ in vs) or done):
                snaps.append(upto[-1])
        m = a["by_round"][r]
        assert m["n"] == len(snaps) > 0
        assert m["correct"] == sum(v["correct"] for v in snaps)
        assert m["passed"] == sum(v["passed"] for v in snaps)
        assert m["avg_at_k"] == pytest.approx(100 * sum(v["avg_at_k"] for v in snaps) / len(snaps))
        ds = [v["difficulty"] for v in snaps if v["correct"]]
        assert m["mean_searches"] == pytest.approx(sum(ds) / len(ds))
    # the run met every verdict kind, so the test exercised all branches
    labels = {v["label"] for vs in rounds.values() for _, v in vs}
    assert labels == {"pass", "too_easy", "incorrect"}
    # the funnel matches the output files
    lines = {
        f: len((run / f).read_text().splitlines())
        for f in ("dataset.jsonl", "too_easy.jsonl", "unsolved.jsonl")
    }
    fun = a["funnel"]
    assert fun["accepted"] == lines["dataset.jsonl"] and fun["seeds"] == 12
    assert fun["too_easy"] == lines["too_easy.jsonl"] and fun["incorrect"] == lines["unsolved.jsonl"]
    # by target: a single S=2, covering every verified pair
    assert list(a["by_target"]) == [2] and a["by_target"][2]["n"] == len(rounds)


def test_exports_of_a_real_run(run: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    accepted = [json.loads(x) for x in (run / "dataset.jsonl").read_text().splitlines()]
    s = export_run(run, "verl", tmp_path / "verl", split=0.2, min_difficulty=2)
    rows = [r for f in s["files"].values() for r in pq.read_table(f).to_pylist()]
    assert sorted(r["id"] for r in rows) == sorted(p["id"] for p in accepted if p["difficulty"] >= 2)
    for r in rows:  # the golden answer scores 1 through the reward function
        assert (
            compute_score(
                r["data_source"],
                f"<answer>{r['golden_answers'][0]}</answer>",
                r["reward_model"]["ground_truth"],
            )
            == 1.0
        )
    sft = export_run(run, "sft", tmp_path / "sft", min_difficulty=0)
    examples = [json.loads(x) for x in Path(sft["files"]["sft"]).read_text().splitlines()]
    assert examples and {e["pair_id"] for e in examples} <= {p["id"] for p in accepted}
    by_id = {p["id"]: p for p in accepted}
    for e in examples:
        last = e["messages"][-1]
        assert last["role"] == "assistant" and last["train"]
        assert compute_score("x", last["content"], [by_id[e["pair_id"]]["answer"]]) == 1.0
        assert any(m["retrieved"] for m in e["messages"]) and not any(
            m["train"] and m["retrieved"] for m in e["messages"]
        )


def test_report_of_a_real_run(run: Path) -> None:
    from markupsafe import escape  # the report's templates escape with it

    from sagegen.analysis.report import write_report

    html = write_report(run).read_text()
    for p in (json.loads(x) for x in (run / "dataset.jsonl").read_text().splitlines()):
        assert str(escape(p["question"])) in html
    assert html.count('<details class="pair"') == 12


def test_flashrag_export_is_a_benchmark_for_sagegen_eval(
    run: Path, shared_data: Path, tmp_path: Path
) -> None:
    s = export_run(run, "flashrag", tmp_path / "gen.jsonl", min_difficulty=0)
    cmd = [
        sys.executable,
        "-m",
        "sagegen.cli.main",
        "eval",
        s["files"]["all"],
        "--k",
        "2",
        "--out",
        str(tmp_path / "ev"),
        "--json",
    ]
    for x in _sets(shared_data, run.parent):  # the same corpus and index as the run
        cmd += ["-s", x]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    n = len((run / "dataset.jsonl").read_text().splitlines())
    assert summary["questions"] == n
    # the same deterministic solver that accepted these pairs solves them again
    results = [json.loads(x) for x in (tmp_path / "ev" / "results.jsonl").read_text().splitlines()]
    assert len(results) == n and all(r["pass_at_k"] for r in results)
