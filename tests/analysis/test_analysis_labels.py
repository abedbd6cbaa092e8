"""LLM labelling of strategies and failure causes: parsing, aggregation and the run-dir cache."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from fixture_ledger import build_ledger
from sagegen.analysis import labels as L
from sagegen.ledger.store import RunStore
from sagegen.llm.scripted import ScriptedLLM


def test_parse_strategies_variants() -> None:
    want = {s: s in ("temporal", "inference") for s in L.STRATEGIES}
    assert L.parse_strategies('{"temporal": true, "inference": "yes", "calculation": false}') == want
    fenced = 'Sure!\n```json\n{"Temporal": true, "Inference": true, "self-correction": false}\n```'
    assert L.parse_strategies(fenced) == want
    assert L.parse_strategies("{'temporal': True, 'inference': True}") == want
    assert L.parse_strategies('{"strategies": ["temporal", "Inference"]}') == want
    lines = "calculation: no\ntemporal: yes\ninference - yes\nconflict resolution: no"
    assert L.parse_strategies(lines) == want
    assert L.parse_strategies("I cannot tell.") is None


def test_parse_cause_variants() -> None:
    assert L.parse_cause('{"cause": "direct_search", "reason": "x"}', L.EASY_CAUSES) == "direct_search"
    assert L.parse_cause('{"cause": "Merged hops"}', L.EASY_CAUSES) == "merged_hops"
    assert L.parse_cause("The cause is a retrieval failure, not a reasoning error.", L.INCORRECT_CAUSES) == (
        "retrieval_failure"
    )
    assert L.parse_cause('{"cause": "weather"}', L.INCORRECT_CAUSES) is None
    assert L.parse_cause("no idea", L.EASY_CAUSES) is None


def _responder(messages: Sequence[dict[str, Any]]) -> str:
    prompt = messages[-1]["content"]
    if "reasoning strategies" in prompt:
        return (
            '{"calculation": true, "temporal": false, "inference": true, "conflict_resolution": false, '
            '"hypothesis_generation": false, "self_correction": false}'
        )
    if "easier than intended" in prompt:
        return 'Answer: {"cause": "one_document", "reason": "all in one passage"}'
    if "Moon landing" in prompt or "1969 moon landing" in prompt:
        return "I think this is ambiguous."
    return '{"cause": "retrieval_failure"}'


def test_label_run_counts_and_cache(tmp_path: Path) -> None:
    run = build_ledger(tmp_path / "run")
    llm = ScriptedLLM(responder=_responder)
    with RunStore.open(run) as store:
        pairs = list(store.pairs())
        out = L.label_run(store, pairs, llm=llm)
    # strategies: the final passing round of the two accepted pairs (p0 r1, p1 r2); not the duplicate p5
    assert out["strategies"]["n"] == 2
    assert out["strategies"]["counts"]["calculation"] == 2 and out["strategies"]["counts"]["temporal"] == 0
    assert out["strategies"]["pct"]["inference"] == pytest.approx(100.0)
    # too_easy rounds: p1 r1, p2 r3
    assert out["easy_causes"]["n"] == 2 and out["easy_causes"]["counts"]["one_document"] == 2
    # incorrect rounds: p2 r1, r2; p4 r1, r2, r3 -> 5, of which p4's 3 say "ambiguous"
    assert out["incorrect_causes"]["n"] == 5
    assert out["incorrect_causes"]["counts"] == {
        "retrieval_failure": 2,
        "reasoning_error": 0,
        "generator_error": 0,
        "ambiguous": 3,
    }
    assert len(llm.calls) == 2 + 2 + 5
    # retrieved text and the gold answer go into the prompt; the system prompt does not
    strategy_prompt = next(
        c["messages"][0]["content"]
        for c in llm.calls
        if "reasoning strategies" in c["messages"][0]["content"]
    )
    assert "<information>" in strategy_prompt and "[system]" not in strategy_prompt

    # cached in the run dir: a rerun makes no call
    again = ScriptedLLM(responder=_responder)
    with RunStore.open(run) as store:
        out2 = L.label_run(store, list(store.pairs()), llm=again)
    assert again.calls == [] and out2["incorrect_causes"]["counts"] == out["incorrect_causes"]["counts"]
    assert len((run / L.LABELS_FILE).read_text().splitlines()) == 9


def test_unparsed_answers_are_counted(tmp_path: Path) -> None:
    run = build_ledger(tmp_path / "run")
    with RunStore.open(run) as store:
        out = L.label_run(store, list(store.pairs()), llm=ScriptedLLM(responder=lambda m: "no idea"))
    assert out["strategies"] == {**out["strategies"], "n": 0, "unparsed": 2}
    assert out["incorrect_causes"]["unparsed"] == 5


def test_cli_analyze_labels_with_scripted_backend(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    run = build_ledger(tmp_path / "run")
    # the scripted backend replays a JSON list of responses: one answer fits both label kinds
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(['{"cause": "direct_search", "calculation": true}'] * 9))
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "sagegen.cli.main",
            "analyze",
            str(run),
            "--labels",
            "--json",
            "--dedup",
            "jaccard",
            "-s",
            "llm.backend=scripted",
            "-s",
            f"llm.model={answers}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    labels = json.loads(p.stdout)["labels"]
    assert labels["strategies"]["n"] == 2 and labels["strategies"]["counts"]["calculation"] == 2
    assert labels["easy_causes"]["counts"]["direct_search"] == 2
    # "direct_search" is not an incorrect-pair cause: recorded as unparsed, not forced into a category
    assert labels["incorrect_causes"] == {**labels["incorrect_causes"], "n": 0, "unparsed": 5}
    assert len((run / L.LABELS_FILE).read_text().splitlines()) == 9


# ------------------------------------------------------------------ every accepted pair, and benchmarks


def _relaxed_pair() -> tuple[Any, Any]:
    """An accepted pair whose final verdict is too easy (pipeline.final_round_relaxed), in a fake store."""
    from fixture_ledger import solver_trajectory
    from sagegen.ledger.store import AttemptRecord, PairRecord, RoundRecord
    from sagegen.records import Candidate, Judgement, QAPair, Verdict

    cand = Candidate(
        question="Which river flows through the town where Shakespeare was born?",
        answer="Avon",
        answer_type="entity",
        target=3,
        plan="1. birthplace 2. river",
        seed_doc_id="d",
        round=2,
    )
    att = AttemptRecord(0, 0, "t0", Judgement(correct=True, em=1.0, f1=1.0, extracted="Avon"), 1)
    verdict = Verdict(
        correct=True, difficulty=1, passed=False, avg_at_k=1.0, label="too_easy", num_attempts=1
    )
    qa = QAPair(
        id="r-0",
        question=cand.question,
        answer="Avon",
        answer_type="entity",
        target=3,
        difficulty=1,
        avg_at_k=1.0,
        label="pass",
        round=2,
        seed_doc_id="d",
        acceptance="relaxed",
    )
    pair = PairRecord(
        0,
        "d",
        3,
        "entity",
        "pass",
        2,
        qa,
        "dataset",
        (RoundRecord(2, "feedback", cand, "g", verdict, (att,)),),
    )

    class Store:
        def trajectory(self, tid: str) -> Any:
            return solver_trajectory(cand.question, "Avon", True, 1)

    return Store(), pair


def test_relaxed_acceptance_gets_strategies_and_its_shortcut_cause() -> None:
    store, pair = _relaxed_pair()
    kinds = sorted(t["kind"] for t in L._tasks(store, [pair]))
    assert kinds == ["easy_causes", "strategies"]  # was: only the cause (strategies needed a "pass" verdict)


def test_imported_release_pairs_are_labelled(tmp_path: Path) -> None:
    from sagegen.integrations.sage_release import import_release

    release = Path(__file__).parents[1] / "data" / "sage_release" / "agentic_question_gen"
    import_release([release], tmp_path / "run")
    llm = ScriptedLLM(responder=lambda m: '{"cause": "direct_search", "temporal": true}')
    with RunStore.open(tmp_path / "run") as store:
        out = L.label_run(store, list(store.pairs()), llm=llm)
    # 4 accepted pairs (no attempt kept for their accepted round: labelled from question and answer),
    # 4 too-easy first rounds (the release's one kept attempt each)
    assert (out["strategies"]["n"], out["strategies"]["counts"]["temporal"]) == (4, 4)
    assert out["easy_causes"]["counts"]["direct_search"] == 4
    prompts = [c["messages"][0]["content"] for c in llm.calls]
    assert sum("[trace]" not in p and "needs" in p for p in prompts) == 4


def test_analyze_labels_on_a_benchmark_file(tmp_path: Path, shared_data: Path) -> None:
    import json
    import subprocess
    import sys

    src = shared_data / "musique" / "questions.jsonl"
    bench = tmp_path / "musique.jsonl"
    bench.write_text("".join(src.read_text().splitlines(keepends=True)[:5]))
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(['{"calculation": false, "temporal": true, "inference": true}'] * 5))
    cmd = [
        sys.executable,
        "-m",
        "sagegen.cli.main",
        "analyze",
        str(bench),
        "--labels",
        "--json",
        "-s",
        "llm.backend=scripted",
        "-s",
        f"llm.model={answers}",
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    strat = json.loads(p.stdout)["labels"]["strategies"]
    assert strat["n"] == 5 and strat["pct"]["temporal"] == 100.0 and strat["pct"]["calculation"] == 0.0
    assert len(L.benchmark_labels_path(bench).read_text().splitlines()) == 5
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)  # cached: no call needed
    assert again.returncode == 0 and json.loads(again.stdout)["labels"]["strategies"]["n"] == 5
    no_labels = subprocess.run([*cmd[:5], "--json"], capture_output=True, text=True, timeout=120)
    assert no_labels.returncode == 2 and "only with --labels" in no_labels.stderr
