"""BM25: tokenizer, rank-identity with rank_bm25 on a real corpus, memory-mapped no-pickle index, batching."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sagegen.config import BM25Config, CorpusConfig, RetrievalConfig
from sagegen.corpus import load_corpus
from sagegen.records import Doc
from sagegen.retrieval.base import Retriever
from sagegen.retrieval.index import build_index, open_index
from sagegen.retrieval.tokenize import Tokenizer

K1, B = 1.5, 0.75


def test_tokenizer_lowercases_drops_stopwords_and_stems() -> None:
    tok = Tokenizer("en", "english")
    assert tok("The Running DOGS were in the parks!") == ["run", "dog", "were", "park"]
    assert tok("") == [] and tok("the and of") == []
    # Same output for the same text every time (the cache must not change results).
    assert tok("Running dogs") == tok("running DOGS") == ["run", "dog"]
    assert Tokenizer(None, None)("The Dogs") == ["the", "dogs"]


def _small_index(tmp_path: Path, docs: list[Doc], **bm25: object) -> Retriever:
    rcfg = RetrievalConfig(bm25=BM25Config(**bm25))  # type: ignore[arg-type]
    build_index(docs, "bm25", rcfg, tmp_path / "idx")
    return open_index(tmp_path / "idx")


DOCS = [
    Doc(id="a", title="Paris", text="Paris is the capital and largest city of France."),
    Doc(id="b", title="Berlin", text="Berlin is the capital of Germany."),
    Doc(id="c", title="Cats", text="Cats are small domesticated carnivorous mammals."),
    Doc(id="d", title="Lyon", text="Lyon is a city in France, smaller than Paris."),
]


def test_search_basics(tmp_path: Path) -> None:
    r = _small_index(tmp_path, DOCS)
    assert isinstance(r, Retriever)
    [hits] = r.search(["capital of France"], k=2)
    assert [h.doc.id for h in hits] == ["a", "b"]
    assert hits[0].score > hits[1].score > 0
    assert hits[0].doc == DOCS[0]  # passages come back whole from the index's own store
    # Batched search equals one-by-one search, in order.
    qs = ["France city", "mammals", "Germany capital"]
    assert r.search(qs, k=3) == [r.search([q], k=3)[0] for q in qs]
    # No shared term, stopwords only, empty: no hits rather than arbitrary zero-score passages.
    assert r.search(["zebra", "the of and", ""], k=3) == [[], [], []]
    # k larger than the corpus returns every matching passage, and only those.
    assert sorted(h.doc.id for h in r.search(["capital"], k=100)[0]) == ["a", "b"]
    assert len(r.search(["capital city France Germany mammals"], k=100)[0]) == 4
    with pytest.raises(ValueError):
        r.search(["x"], k=0)


def test_index_is_plain_arrays_memory_mapped(tmp_path: Path) -> None:
    r = _small_index(tmp_path, DOCS)
    files = sorted(
        p.relative_to(tmp_path / "idx").as_posix() for p in (tmp_path / "idx").rglob("*") if p.is_file()
    )
    assert "manifest.json" in files and "passages.jsonl" in files
    assert all(f.endswith((".npy", ".json", ".jsonl")) for f in files), files
    for f in (tmp_path / "idx").rglob("*.npy"):
        np.load(f, allow_pickle=False)  # raises if any array needed pickle
    # Searched through plain ndarray views whose memory is the file's map (no copy in RAM).
    for arr in (r._data, r._indices, r._indptr):  # type: ignore[attr-defined]
        assert type(arr) is np.ndarray and isinstance(arr.base, np.memmap)


def test_ranking_identical_to_rank_bm25_on_shared_corpus(shared_data: Path, tmp_path: Path) -> None:
    """``method=robertson`` ranks exactly like ``rank_bm25.BM25Okapi`` with the same tokens, k1 and b.

    Per term, bm25s-robertson = BM25Okapi / (k1 + 1), a constant, so rankings agree; both use
    idf = log((N - df + 0.5) / (df + 0.5)). They differ only for terms in more than half of the
    passages (negative idf: bm25s clamps to 0, rank_bm25 floors at 0.25 × mean idf). After stopword
    removal no 2Wiki term is that common (checked below), so here the scores must match exactly.
    """
    rank_bm25 = pytest.importorskip("rank_bm25")
    docs = load_corpus(CorpusConfig(path=str(shared_data / "2wiki" / "corpus.jsonl")))
    questions = [json.loads(line)["question"] for line in (shared_data / "2wiki" / "questions.jsonl").open()]
    r = _small_index(tmp_path, docs, k1=K1, b=B, method="robertson")
    tok = r.tokenizer  # type: ignore[attr-defined]
    ref = rank_bm25.BM25Okapi([tok(d.contents) for d in docs], k1=K1, b=B)
    assert all(v > 0 for v in ref.idf.values()), "a term in > N/2 passages: idf variants would differ"

    results = r.search_ids(questions, 10)  # type: ignore[attr-defined]
    for q, top in zip(questions, results, strict=True):
        theirs = np.asarray(ref.get_scores(tok(q)))
        np.testing.assert_allclose(r.scores(q) * (K1 + 1), theirs, rtol=1e-5, atol=1e-6)  # type: ignore[attr-defined]
        # Top-10 ranking: rank_bm25's scores of our ranked docs are its own sorted top-10 scores
        # (identical order; only exactly tied documents may be permuted).
        ref_top = np.argsort(-theirs, kind="stable")[: len(top)]
        assert len(top) == 10
        np.testing.assert_allclose([theirs[i] for i, _ in top], theirs[ref_top], rtol=1e-6)
        # Documents tied (to float32 precision, bm25s' storage type) with the 10th may swap in or out.
        ties = set(np.flatnonzero(np.isclose(theirs, theirs[ref_top[-1]], rtol=1e-6)).tolist())
        assert {i for i, _ in top} - ties == set(ref_top.tolist()) - ties, q


@pytest.mark.parametrize("method", ["robertson", "lucene", "atire", "bm25l", "bm25+"])
def test_vectorised_build_saves_what_bm25s_own_index_saves(tmp_path: Path, method: str) -> None:
    """build_bm25 counts terms with numpy, not bm25s' per-document loop: the saved files must be the same.

    Reference: bm25s.BM25.index over the same token ids (what build_bm25 called before), on 1,500 real
    passages plus a passage of stopwords only and an empty one; every array is compared bit for bit.
    """
    import bm25s

    from sagegen.retrieval.bm25 import build_bm25

    odd = [Doc(id="stop", title="", text="the of and"), Doc(id="nil", title="", text="")]
    docs = [*load_corpus()[:1500], *odd]
    cfg = BM25Config(method=method)  # type: ignore[arg-type]
    build_bm25(docs, cfg, tmp_path / "ours")

    tok = Tokenizer(cfg.stopwords, cfg.stemmer)
    vocab: dict[str, int] = {}
    ids = [[vocab.setdefault(t, len(vocab)) for t in tok(d.contents)] for d in docs]
    ref = bm25s.BM25(k1=cfg.k1, b=cfg.b, method=method)
    ref.index((ids, vocab), show_progress=False)
    ref.save(str(tmp_path / "ref"), show_progress=False)

    ref_files = sorted(p.name for p in (tmp_path / "ref").iterdir())
    ours = sorted(p.name for p in (tmp_path / "ours").iterdir())
    assert ours == sorted([*ref_files, "term_max.npy"])  # plus each term's largest impact (MaxScore)
    for name in ref_files:
        a, b = tmp_path / "ours" / name, tmp_path / "ref" / name
        if name.endswith(".npy"):
            x, y = np.load(a), np.load(b)
            assert x.dtype == y.dtype and np.array_equal(x, y), name
        else:
            assert json.loads(a.read_text()) == json.loads(b.read_text()), name


def test_without_bm25s_scoring_helpers_the_build_falls_back_to_bm25s_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sagegen.retrieval import bm25

    docs = [*load_corpus()[:300], Doc(id="stop", title="", text="the of and")]
    bm25.build_bm25(docs, BM25Config(), tmp_path / "fast")
    monkeypatch.setattr(bm25, "_has_scoring_functions", lambda: False)
    bm25.build_bm25(docs, BM25Config(), tmp_path / "slow")
    assert (tmp_path / "fast" / "term_max.npy").exists()
    for f in sorted((tmp_path / "fast").iterdir()):
        assert f.read_bytes() == (tmp_path / "slow" / f.name).read_bytes(), f.name
    r = _small_index(tmp_path / "idx", docs)
    assert r.search(["the of and"], k=3) == [[]]
