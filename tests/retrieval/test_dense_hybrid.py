"""Dense (sentence-transformers + FAISS flat/IVF/HNSW), E5 prefixes, and reciprocal-rank fusion."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sagegen.config import DenseConfig, RetrievalConfig
from sagegen.records import Doc
from sagegen.retrieval import dense as dense_mod
from sagegen.retrieval.dense import dense_unavailable, is_e5, resolve_prefixes
from sagegen.retrieval.hybrid import HybridRetriever, rrf_fuse
from sagegen.retrieval.index import build_index, open_index, read_manifest

needs_dense = pytest.mark.skipif(dense_unavailable() is not None, reason=f"dense: {dense_unavailable()}")

DOCS = [
    Doc(id="paris", title="Paris", text="Paris is the capital and most populous city of France."),
    Doc(id="berlin", title="Berlin", text="Berlin is the capital and largest city of Germany."),
    Doc(id="cat", title="Cat", text="The cat is a small domesticated carnivorous mammal kept as a pet."),
    Doc(id="dog", title="Dog", text="The dog is a domesticated descendant of the wolf."),
    Doc(
        id="everest", title="Mount Everest", text="Mount Everest is Earth's highest mountain above sea level."
    ),
    Doc(id="nile", title="Nile", text="The Nile is a major north-flowing river in northeastern Africa."),
    Doc(id="python", title="Python", text="Python is a high-level general-purpose programming language."),
    Doc(id="piano", title="Piano", text="The piano is a keyboard instrument played by pressing keys."),
]


# ----------------------------------------------------------------------------- fusion (no model needed)


def test_rrf_fuse_scores_and_order() -> None:
    fused = rrf_fuse([[1, 2, 3], [3, 1, 4]], rrf_k=60, k=10)
    got = dict(fused)
    assert got[1] == pytest.approx(1 / 61 + 1 / 62)
    assert got[3] == pytest.approx(1 / 63 + 1 / 61)
    assert got[2] == pytest.approx(1 / 62) and got[4] == pytest.approx(1 / 63)
    assert [d for d, _ in fused] == [1, 3, 2, 4]
    assert rrf_fuse([[1, 2, 3], [3, 1, 4]], rrf_k=60, k=2) == fused[:2]
    # A document found by both lists beats one found first by only one list.
    assert rrf_fuse([[7, 8], [8, 9]], rrf_k=1, k=1)[0][0] == 8
    assert rrf_fuse([[], []], 60, 3) == []


class _Fixed:
    def __init__(self, ranking: list[int], store: Any = None) -> None:
        self.ranking, self.store = ranking, store
        self.asked: list[int] = []

    def search_ids(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        self.asked.append(k)
        return [[(i, 1.0) for i in self.ranking[:k]] for _ in queries]


def test_hybrid_retriever_fuses_at_depth() -> None:
    sparse, dense = _Fixed([0, 1, 2], store=DOCS), _Fixed([2, 3, 0])
    h = HybridRetriever(sparse, dense, rrf_k=60, depth=5)
    [hits] = h.search(["q"], k=2)
    # 0 and 2 tie on 1/61 + 1/63; the tie goes to the better BM25 rank (0 = paris).
    assert [x.doc.id for x in hits] == ["paris", "cat"]
    assert sparse.asked == [5] and dense.asked == [5]  # each retriever is asked for `depth`, not k
    assert hits[0].score >= hits[1].score
    assert {d for d, _ in h.search_ids(["q"], 10)[0]} == {0, 1, 2, 3}


# ----------------------------------------------------------------------------- prefixes (no model needed)


def test_e5_prefixes() -> None:
    assert is_e5("intfloat/e5-base-v2") and is_e5("intfloat/multilingual-e5-large") and is_e5("/m/e5_small")
    assert not is_e5("minilm") and not is_e5("sentence-transformers/all-MiniLM-L6-v2") and not is_e5("bge5")
    assert resolve_prefixes(DenseConfig(model="intfloat/e5-base-v2")) == ("query: ", "passage: ")
    assert resolve_prefixes(DenseConfig()) == ("", "")
    cfg = DenseConfig(model="intfloat/e5-base-v2", query_prefix="", passage_prefix="doc: ")
    assert resolve_prefixes(cfg) == ("", "doc: ")


class _FakeEncoder:
    """Deterministic bag-of-words hashing 'model' that records what it was asked to embed."""

    dim = 64

    def __init__(self) -> None:
        self.seen: list[str] = []

    def get_embedding_dimension(self) -> int:
        return self.dim

    def encode(self, texts: list[str], **_: Any) -> np.ndarray:
        self.seen.extend(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for r, t in enumerate(texts):
            for w in t.lower().replace(".", " ").split():
                out[r, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_e5_prefixes_reach_the_encoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("faiss")
    fake = _FakeEncoder()
    monkeypatch.setattr(dense_mod, "load_encoder", lambda name, device="cpu": fake)
    rcfg = RetrievalConfig(dense=DenseConfig(model="intfloat/e5-small-v2"))
    build_index(DOCS, "dense", rcfg, tmp_path / "idx")
    assert fake.seen and all(t.startswith("passage: ") for t in fake.seen)
    assert read_manifest(tmp_path / "idx")["params"]["dense"]["query_prefix"] == "query: "
    fake.seen.clear()
    r = open_index(tmp_path / "idx", rcfg)
    [hits] = r.search(["Berlin capital Germany"], k=1)
    assert fake.seen == ["query: Berlin capital Germany"]
    assert hits[0].doc.id == "berlin"


# ----------------------------------------------------------------------------- real MiniLM + FAISS


@needs_dense
@pytest.mark.parametrize("index_type", ["flat", "ivf", "hnsw"])
def test_dense_index_types(tmp_path: Path, index_type: str) -> None:
    rcfg = RetrievalConfig(dense=DenseConfig(index_type=index_type, nprobe=8))
    manifest = build_index(DOCS, "dense", rcfg, tmp_path / "idx")
    assert manifest["model"] == "minilm" and manifest["params"]["dense"]["index_type"] == index_type
    files = {p.name for p in (tmp_path / "idx" / "dense").iterdir()}
    assert files == {"embeddings.npy", "faiss.index"}
    emb = np.load(tmp_path / "idx" / "dense" / "embeddings.npy", allow_pickle=False)
    assert emb.shape == (len(DOCS), 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-4)  # normalised: IP = cosine

    r = open_index(tmp_path / "idx", rcfg)
    queries = [
        "What is the capital of Germany?",
        "a pet that purrs",
        "tallest peak in the world",
        "coding language",
    ]
    results = r.search(queries, k=3)
    assert [hits[0].doc.id for hits in results] == ["berlin", "cat", "everest", "python"]
    for hits in results:
        assert len(hits) == 3 and all(a.score >= b.score for a, b in itertools.pairwise(hits))
    # k beyond the corpus size returns every passage once.
    assert sorted(h.doc.id for h in r.search(["anything"], k=50)[0]) == sorted(d.id for d in DOCS)


@needs_dense
def test_hybrid_index_end_to_end(tmp_path: Path) -> None:
    manifest = build_index(DOCS, "hybrid", RetrievalConfig(), tmp_path / "idx")
    assert {p.name for p in (tmp_path / "idx").iterdir()} >= {
        "bm25",
        "dense",
        "manifest.json",
        "passages.jsonl",
    }
    assert set(manifest["params"]) == {"bm25", "dense"}
    r = open_index(tmp_path / "idx")
    # "feline" shares no word with the cat passage: BM25 alone misses it, fusion keeps the dense hit.
    assert r.bm25.search(["feline companion animal"], k=3) == [[]]
    [hits] = r.search(["feline companion animal"], k=3)
    assert hits[0].doc.id == "cat"
    [hits] = r.search(["Berlin Germany"], k=3)
    assert hits[0].doc.id == "berlin" and hits[0].score == pytest.approx(2 / 61)


def test_embeddings_reused_across_index_types(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("faiss")
    fake = _FakeEncoder()
    monkeypatch.setattr(dense_mod, "load_encoder", lambda name, device="cpu": fake)
    build_index(DOCS, "dense", RetrievalConfig(), tmp_path / "flat")
    embedded = len(fake.seen)
    assert embedded == len(DOCS)
    # Same corpus, same model: switching to HNSW (or to hybrid) rebuilds FAISS, not the embeddings.
    build_index(DOCS, "hybrid", RetrievalConfig(dense=DenseConfig(index_type="hnsw")), tmp_path / "hnsw")
    assert len(fake.seen) == embedded
    np.testing.assert_array_equal(
        np.load(tmp_path / "flat" / "dense" / "embeddings.npy"),
        np.load(tmp_path / "hnsw" / "dense" / "embeddings.npy"),
    )
    # Another corpus is embedded afresh.
    build_index(DOCS[:4], "dense", RetrievalConfig(), tmp_path / "small")
    assert len(fake.seen) == embedded + 4


@needs_dense
def test_loading_the_encoder_prints_no_library_progress_bars(capfd: pytest.CaptureFixture[str]) -> None:
    from transformers.utils import logging as hf_logging

    dense_mod._models.clear()  # force a real load (the encoder is cached per process)
    hf_logging.enable_progress_bar()
    dense_mod.load_encoder("minilm")
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "it/s" not in err, err
    assert hf_logging.is_progress_bar_enabled()  # the caller's setting is restored
