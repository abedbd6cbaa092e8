"""One count of where pairs ended (sagegen.ledger.outcomes), shown alike by status, the summary and the
funnel.

A real ``sagegen generate`` on the scripted fixture over a three-passage corpus: ten seeds drawn
from three passages repeat questions, so the store's per-file deduplication meets too-easy and
unsolved pairs, not only accepted ones. Counting by verdict state then disagreed with the files.
"""

from __future__ import annotations

import re
from pathlib import Path

from sage_loop_helpers import SCRIPTED_RUN_SETS, run_cli
from sagegen.analysis.analyze import analyze_run
from sagegen.cli.display import format_status
from sagegen.ledger.store import RunStore


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines()) if path.is_file() else 0


def test_summary_status_and_funnel_count_what_the_files_hold(shared_data: Path, tmp_path: Path) -> None:
    corpus = (shared_data / "hotpotqa" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:3]
    (tmp_path / "corpus.jsonl").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    p = run_cli(
        "generate",
        "-o",
        "run",
        "-n",
        "10",
        "--target",
        "2",
        "--rounds",
        "2",
        "--k",
        "2",
        "--no-progress",
        *SCRIPTED_RUN_SETS,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path / "run"
    files = {name: _lines(run / f"{name}.jsonl") for name in ("dataset", "too_easy", "unsolved", "ambiguous")}
    with RunStore.open(run) as store:
        outcomes = store.outcomes()
        status = format_status(store)
        states = store.counts()
    # the scenario: duplicates among rejected pairs, so the state counts are not the file counts
    assert outcomes["duplicate"] > 0 and states.get("too_easy", 0) + states.get("incorrect", 0) > (
        files["too_easy"] + files["unsolved"]
    )
    assert (outcomes["accepted"], outcomes["too_easy"], outcomes["incorrect"], outcomes["ambiguous"]) == (
        files["dataset"],
        files["too_easy"],
        files["unsolved"],
        files["ambiguous"],
    )
    assert sum(v for k, v in outcomes.items() if k != "seeds") == outcomes["seeds"] == 10
    # the end-of-run summary
    m = re.search(r"too easy\s+(\d+)\s+incorrect (\d+)", p.stdout)
    assert m and (int(m[1]), int(m[2])) == (files["too_easy"], files["unsolved"]), p.stdout
    assert f"duplicate {outcomes['duplicate']} (repeated questions, skipped)" in p.stdout
    # status
    assert f"duplicate {outcomes['duplicate']}" in status and f"too easy {files['too_easy']}," in status
    # the report's funnel
    fun = analyze_run(run, dup_method="jaccard")["funnel"]
    assert fun == outcomes
