"""Diversity-aware seeds: topic clusters of term vectors, stratified draws, determinism, the pipeline hook."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from sage_loop_helpers import OverlapRetriever, RoleScript, infos, search, small_config
from sagegen.ledger.store import RunStore
from sagegen.loop.pipeline import Pipeline
from sagegen.loop.seeds import StratifiedSeeds, passage_vectors, spherical_kmeans, term_vectors
from sagegen.loop.session import Components
from sagegen.records import Doc

TOPICS = {
    "football": "football match goal striker league stadium referee penalty season club",
    "music": "symphony orchestra composer violin concerto opera melody piano conductor",
    "stars": "galaxy telescope nebula orbit planet astronomer supernova comet",
}


def corpus() -> list[Doc]:
    """A lopsided corpus: 60 football passages, 30 music, 4 astronomy."""
    rng = random.Random(7)
    docs = []
    for topic, n in (("football", 60), ("music", 30), ("stars", 4)):
        words = TOPICS[topic].split()
        for i in range(n):
            text = " ".join(rng.choice(words) for _ in range(12)) + f" item{i}"
            docs.append(Doc(id=f"{topic}-{i}", title=f"{topic} {i}", text=text))
    return docs


def test_term_vectors_are_unit_and_deterministic() -> None:
    texts = [d.contents for d in corpus()]
    a, b = term_vectors(texts), term_vectors(texts)
    assert a.shape == (94, 128) and np.array_equal(a, b)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    same, other = float(a[0] @ a[1]), float(a[0] @ a[70])  # football-football vs football-music
    assert same > other + 0.3


def test_kmeans_finds_the_topics() -> None:
    docs = corpus()
    labels = spherical_kmeans(term_vectors([d.contents for d in docs]), 3, seed=0)
    by_topic = {t: {int(labels[i]) for i, d in enumerate(docs) if d.id.startswith(t)} for t in TOPICS}
    assert all(len(v) == 1 for v in by_topic.values())  # each topic in one cluster
    assert len(set().union(*by_topic.values())) == 3  # and the clusters differ


def test_stratified_covers_the_small_topic_uniform_does_not() -> None:
    docs = corpus()
    strata = StratifiedSeeds(docs, seed=0, clusters=3)
    assert strata.vectors == "terms" and sorted(strata.sizes()) == [4, 30, 60]
    picks = [docs[strata.pick(i, random.Random(i))].id.split("-")[0] for i in range(6)]
    assert sorted(picks) == ["football", "football", "music", "music", "stars", "stars"]
    uniform = [docs[random.Random(i).randrange(len(docs))].id.split("-")[0] for i in range(6)]
    assert "stars" not in uniform
    again = StratifiedSeeds(docs, seed=0, clusters=3)
    assert [again.pick(i, random.Random(i)) for i in range(6)] == [
        strata.pick(i, random.Random(i)) for i in range(6)
    ]


async def test_pipeline_draws_stratified_seeds(tmp_path: Path) -> None:
    docs = corpus()
    cfg = small_config(num_seeds=6, rounds=1, seed_sampling="stratified", seed_clusters=3, precheck="off")
    store, _ = RunStore.create_or_resume(tmp_path / "run", cfg.model_dump(mode="json"), cfg.dump())

    def gen(m):  # never writes a usable pair: the test is about which seeds were drawn
        return search("x") if infos(m) < 1 else "no pair"

    llm = RoleScript(generator=gen).llm()
    parts = Components(docs=docs, retriever=OverlapRetriever(docs), generator=llm, solver=llm, judge=None)
    cfg.generator.max_format_retries = 0
    await Pipeline(cfg, store, parts).run()
    topics = sorted(p.seed_doc_id.split("-")[0] for p in store.pairs())
    assert topics == ["football", "football", "music", "music", "stars", "stars"]
    assert any(e.kind == "seed_clusters" and "3 clusters over terms" in e.message for e in store.events())


def test_dense_embeddings_are_used_when_the_retriever_has_them() -> None:
    faiss = pytest.importorskip("faiss")
    docs = corpus()
    vecs = term_vectors([d.contents for d in docs])  # any unit vectors stand in for a model's embeddings
    index = faiss.IndexFlatIP(vecs.shape[1])
    index.add(vecs)

    class Dense:  # the attribute sagegen.retrieval.dense.DenseRetriever keeps its FAISS index in
        pass

    dense = Dense()
    dense.index = index

    class Hybrid:
        pass

    hybrid = Hybrid()
    hybrid.dense = dense
    for retriever in (dense, hybrid):
        got, kind = passage_vectors(docs, retriever)
        assert kind == "dense" and np.allclose(got, vecs, atol=1e-6)
    assert passage_vectors(docs[:-1], dense)[1] == "terms"  # an index of another corpus is not used
    strata = StratifiedSeeds(docs, seed=0, clusters=3, retriever=hybrid)
    assert strata.vectors == "dense" and sorted(strata.sizes()) == [4, 30, 60]
