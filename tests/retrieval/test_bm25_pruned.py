"""numpy BM25 engine: MaxScore-pruned top-k equals exhaustive scoring; scores are hand-computed BM25."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sagegen.config import BM25Config, RetrievalConfig
from sagegen.corpus import load_corpus
from sagegen.records import Doc
from sagegen.retrieval import bm25_topk
from sagegen.retrieval.index import build_index, open_index
from sagegen.retrieval.tokenize import Tokenizer


def _random_terms(rng: np.random.Generator, n: int, *, ties: bool) -> list[bm25_topk.Term]:
    out: list[bm25_topk.Term] = []
    for _ in range(int(rng.integers(2, 8))):
        df = int(rng.choice([1, 20, 300, 4_000, 40_000, 120_000]))
        ids = np.sort(rng.choice(n, df, replace=False)).astype(np.int32)
        # Rare terms weigh more (as idf makes them); integer impacts make many exact ties.
        raw = rng.random(df) * 8 / math.log(df + 2)
        w = (np.round(raw * 2) if ties else raw).astype(np.float32)
        out.append((ids, w, float(w.max())))
    if rng.random() < 0.3:
        out.append(out[0])  # a repeated query word counts twice
    return out


@pytest.mark.parametrize("ties", [False, True])
def test_pruned_top_k_equals_exhaustive_on_random_lists(ties: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7 + ties)
    n = 150_000
    pruned_runs = []
    real = bm25_topk._pruned

    def counting(*a: object) -> object:
        r = real(*a)  # type: ignore[arg-type]
        pruned_runs.append(r is not None)
        return r

    monkeypatch.setattr(bm25_topk, "_pruned", counting)
    for _ in range(150):
        terms = _random_terms(rng, n, ties=ties)
        k = int(rng.choice([1, 3, 10, 50]))
        got = bm25_topk.top_k(terms, k, n)
        want = bm25_topk.top_k(terms, k, n, prune=False)
        assert got == want  # same positions, bit-identical scores, same order (ties by position)
    # The pruned path did run (not always handed back to the exhaustive one).
    assert sum(pruned_runs) >= 20, pruned_runs


def test_ties_at_the_kth_place_go_to_the_lower_position() -> None:
    ids = np.arange(10, dtype=np.int32)
    w = np.ones(10, dtype=np.float32)
    other = np.array([9], dtype=np.int32), np.array([0.5], dtype=np.float32), 0.5
    found = bm25_topk.top_k([(ids, w, 1.0), other], 3, 10, prune=False)
    assert found == [(9, 1.5), (0, 1.0), (1, 1.0)]


DOCS = [
    Doc(id="a", title="Paris", text="Paris is the capital and largest city of France. Paris Paris."),
    Doc(id="b", title="Berlin", text="Berlin is the capital of Germany, a city on the Spree."),
    Doc(id="c", title="Cats", text="Cats are small domesticated carnivorous mammals; cats purr."),
    Doc(id="d", title="Lyon", text="Lyon is a city in France, smaller than Paris."),
    Doc(id="e", title="Rhine", text="The Rhine flows through Germany and France to the sea."),
]


def test_scores_are_hand_computed_bm25_with_pruning_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bm25_topk, "PRUNE_ABOVE", 0)  # prune even on five passages
    k1, b = 1.5, 0.75
    build_index(DOCS, "bm25", RetrievalConfig(bm25=BM25Config(k1=k1, b=b)), tmp_path / "idx")
    r = open_index(tmp_path / "idx")
    tok = Tokenizer("en", "english")
    toks = [tok(d.contents) for d in DOCS]
    n, avg = len(DOCS), sum(map(len, toks)) / len(DOCS)

    def bm25(q: str, d: list[str]) -> float:
        s = 0.0
        for t in tok(q):
            df = sum(t in x for x in toks)
            if not df:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))  # the lucene variant (the default)
            tf = d.count(t)
            s += idf * tf / (k1 * (1 - b + b * len(d) / avg) + tf)
        return s

    for q in ["Paris France city", "capital of Germany", "cats mammals France", "city city France"]:
        want = sorted(((bm25(q, d), -i) for i, d in enumerate(toks)), reverse=True)
        want = [(-i, s) for s, i in want if s > 0][:3]
        got = r.search_ids([q], 3)[0]
        assert [i for i, _ in got] == [i for i, _ in want], q
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-6)


def test_pruned_search_equals_exhaustive_on_a_real_corpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bm25_topk, "PRUNE_ABOVE", 0)
    docs = load_corpus()
    build_index(docs, "bm25", RetrievalConfig(), tmp_path / "idx")
    r = open_index(tmp_path / "idx")
    queries = [" ".join(d.text.split()[:12]) for d in docs[::37]] + ["the city and the river", "x"]
    for k in (1, 3, 10):
        assert r.search_ids(queries, k) == r.search_ids(queries, k, prune=False)


def test_index_without_term_max_still_searches_the_same(tmp_path: Path) -> None:
    """An index built before term_max.npy existed: the maxima are computed at load; results unchanged."""
    docs = load_corpus()[:400]
    build_index(docs, "bm25", RetrievalConfig(), tmp_path / "idx")
    queries = [" ".join(d.text.split()[:8]) for d in docs[::13]]
    before = open_index(tmp_path / "idx").search_ids(queries, 5)
    saved = np.load(tmp_path / "idx" / "bm25" / "term_max.npy")
    (tmp_path / "idx" / "bm25" / "term_max.npy").unlink()
    r = open_index(tmp_path / "idx")
    np.testing.assert_array_equal(r._term_max, saved)  # type: ignore[attr-defined]
    assert r.search_ids(queries, 5) == before
