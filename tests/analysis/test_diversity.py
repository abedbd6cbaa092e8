"""Question diversity in ``analyze`` and the report: spread, nearest neighbours, entities, seeds."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixture_ledger import build_ledger
from sagegen.analysis.analyze import analyze_run
from sagegen.analysis.diversity import entities, question_diversity
from sagegen.analysis.report import render_report

SAME = "Which river flows through the capital of France?"
ITEMS_SAME = [(f"q{i}", SAME, "d1") for i in range(4)]
ITEMS_APART = [
    ("a", "Which river flows through the capital of France?", "d1"),
    ("b", "In which year did the composer of the Moonlight Sonata die?", "d2"),
    ("c", "How many moons does the planet discovered by Herschel have?", "d3"),
    ("d", "Which club won the football league in the striker's debut season?", "d4"),
]


@pytest.mark.parametrize("method", ["terms", "embedding"])
def test_spread_separates_copies_from_different_questions(method: str) -> None:
    if method == "embedding":
        pytest.importorskip("sentence_transformers")
        from sagegen.analysis.duplicates import embedder_available

        if not embedder_available():
            pytest.skip("MiniLM not installed")
    same = question_diversity(ITEMS_SAME, method=method)
    apart = question_diversity(ITEMS_APART, method=method)
    assert same["method"] == apart["method"] == method
    assert same["spread"] == pytest.approx(0.0, abs=1e-3) and same["nn_histogram"] == {9: 4}
    assert apart["spread"] > 0.5 and apart["mean_nn_similarity"] < 0.5
    assert same["distinct_seeds"] == 1 and apart["distinct_seeds"] == 4


def test_entities_and_small_inputs() -> None:
    assert entities("Which river flows through the capital of France?") == ["France"]
    assert entities("In which year did Gustave Eiffel design the Garabit Viaduct?") == [
        "Gustave Eiffel",
        "Garabit Viaduct",
    ]
    one = question_diversity(ITEMS_SAME[:1])
    assert one["spread"] is None and one["n"] == 1 and one["distinct_entities"] == 1
    dups = {"exact_duplicates": 3, "near_pairs": [{"a": "x", "b": "y", "similarity": 0.95}]}
    d = question_diversity(ITEMS_SAME, dups)
    assert d["exact_duplicates"] == 3 and d["near_duplicate_pairs"] == 1
    assert d["entities"] == 4 and d["distinct_entities"] == 1 and d["distinct_entity_ratio"] == 0.25


def test_analyze_and_report_show_diversity(tmp_path: Path) -> None:
    run = build_ledger(tmp_path / "run")
    res = analyze_run(run, dup_method="jaccard", write=False)
    dv = res["diversity"]
    assert dv["over"] == "accepted" and dv["method"] == "terms" and dv["n"] == 2  # p0 and p1 in the dataset
    assert dv["spread"] is not None and sum(dv["nn_histogram"].values()) == 2
    html = render_report(run, res)
    assert "nearest-neighbour similarity of each question" in html and "Diversity of 2 accepted" in html
