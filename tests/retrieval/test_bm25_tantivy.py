"""The tantivy BM25 engine, the streaming build and the compact passage store (issue 26)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx
import pytest

from helpers.serve_cli import start_serve
from sagegen.config import BM25Config, Config, CorpusConfig, RetrievalConfig
from sagegen.errors import ConfigError, InputError
from sagegen.records import Doc
from sagegen.retrieval.index import DocStore, build_index, index_params, open_index
from sagegen.retrieval.tokenize import Tokenizer

pytest.importorskip("tantivy", reason="the tantivy engine needs the tantivy package")

TANTIVY = RetrievalConfig(bm25=BM25Config(engine="tantivy"))
DOCS = [
    Doc(id="a", title="Paris", text="Paris is the capital and largest city of France."),
    Doc(id="b", title="Berlin", text="Berlin is the capital of Germany."),
    Doc(id="c", title="Cats", text="Cats are small domesticated carnivorous mammals."),
    Doc(id="d", title="Lyon", text="Lyon is a city in France, smaller than Paris, on the Rhone."),
    Doc(id="e", title="Rhone", text="The Rhone flows through Lyon; Lyon lies on the Rhone and the Saone."),
]


def _lucene_bm25(docs: list[Doc], query: str, k1: float = 1.2, b: float = 0.75) -> dict[str, float]:
    """Lucene's BM25 by hand over sagegen's tokens (tantivy's fieldnorms are exact for short passages)."""
    tok = Tokenizer("en", "english")
    toks = [tok(d.contents) for d in docs]
    avgdl = sum(map(len, toks)) / len(docs)
    out: dict[str, float] = {}
    for d, t in zip(docs, toks, strict=True):
        s = 0.0
        for term in tok(query):
            df = sum(term in x for x in toks)
            tf = t.count(term)
            if tf:
                idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
                s += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(t) / avgdl))
        if s > 0:
            out[d.id] = s
    return out


def test_tantivy_scores_are_lucene_bm25_over_sagegen_tokens(tmp_path: Path) -> None:
    manifest = build_index(DOCS, "bm25", TANTIVY, tmp_path / "idx")
    assert manifest["params"]["bm25"]["engine"] == "tantivy"
    r = open_index(tmp_path / "idx")
    for q in ["capital of France", "Lyon Rhone", "Rhone Rhone river", "running cats"]:
        want = _lucene_bm25(DOCS, q)
        [hits] = r.search([q], k=10)
        assert {h.doc.id for h in hits} == set(want), q  # exactly the passages sharing a term
        for h in hits:
            assert h.score == pytest.approx(want[h.doc.id], rel=1e-5), (q, h.doc.id)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert hits[0].doc == next(d for d in DOCS if d.id == hits[0].doc.id)
    # No shared term, only stopwords, empty: no hits; batches equal one-by-one searches.
    assert r.search(["zebra", "the of and", ""], k=3) == [[], [], []]
    qs = ["France city", "mammals", "Germany capital"]
    assert r.search(qs, k=2) == [r.search([q], k=2)[0] for q in qs]
    with pytest.raises(ValueError):
        r.search(["x"], k=0)


def test_both_engines_find_a_passage_from_its_own_words() -> None:
    from sagegen.corpus import load_corpus

    docs = load_corpus(CorpusConfig(limit=3000))
    queries = [" ".join(d.text.split()[:12]) for d in docs[::30]]
    want = [d.id for d in docs[::30]]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        found = {}
        for engine in ("numpy", "tantivy"):
            build_index(docs, "bm25", RetrievalConfig(bm25=BM25Config(engine=engine)), Path(tmp) / engine)
            found[engine] = [row[0].doc.id for row in open_index(Path(tmp) / engine).search(queries, k=1)]
    for engine, got in found.items():
        hit = sum(g == w for g, w in zip(got, want, strict=True)) / len(want)
        assert hit >= 0.9, (engine, hit)
    agree = sum(a == b for a, b in zip(found["numpy"], found["tantivy"], strict=True)) / len(want)
    assert agree >= 0.9, agree


def _write_corpus(path: Path, docs: list[Doc]) -> bytes:
    """A Search-R1 corpus whose lines are exactly what the store writes for them."""
    data = b"".join(DocStore.line(d) for d in docs)
    path.write_bytes(data)
    return data


def test_index_streams_the_corpus_and_stores_it_at_its_own_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sagegen.corpus as corpus_mod
    from sagegen.retrieval.factory import build_retriever, ensure_index

    docs = [
        Doc.from_contents(f"w{i}", f'"Title {i}"\nPassage {i} about the river number {i}.') for i in range(50)
    ]
    docs.append(Doc(id="plain", title="Lyon", text="Lyon lies on the Rhone."))
    data = _write_corpus(tmp_path / "corpus.jsonl", docs)

    def no_lists(*a: object, **k: object) -> None:
        raise AssertionError("the build loaded the whole corpus into memory")

    monkeypatch.setattr(corpus_mod, "load_corpus", no_lists)
    cfg = Config.model_validate(
        {
            "corpus": {"path": str(tmp_path / "corpus.jsonl")},
            "retrieval": {"index_dir": str(tmp_path / "ix"), "bm25": {"tantivy_above": 10}},
        }
    )
    ens = ensure_index(cfg)
    assert ens.built and ens.manifest["params"]["bm25"]["engine"] == "tantivy"  # auto: 51 >= 10
    assert (ens.path / DocStore.FILE).read_bytes() == data  # the store costs what the corpus costs
    r = open_index(ens.path)
    [hits] = r.search(["river number 7"], k=1)
    assert hits[0].doc == docs[7] and hits[0].doc.contents == '"Title 7"\nPassage 7 about the river number 7.'
    assert r.store.served(50) == {"id": "plain", "contents": "Lyon\nLyon lies on the Rhone."}
    assert not ensure_index(cfg).built  # the same corpus again: the scan's hash finds the index current
    # serve, search and eval open their retriever the same way, without loading the corpus either
    assert build_retriever(cfg).search(["river number 7"], k=1)[0][0].doc == docs[7]


def test_a_store_written_before_the_compact_lines_still_reads(tmp_path: Path) -> None:
    old = {"id": "q", "title": "Quoted", "text": "body", "raw": '"Quoted"\nbody '}
    (tmp_path / DocStore.FILE).write_text(json.dumps(old) + "\n")
    import numpy as np

    np.save(tmp_path / DocStore.OFFSETS, np.array([0, len(json.dumps(old)) + 1], dtype=np.int64))
    store = DocStore(tmp_path)
    try:
        assert store[0] == Doc(id="q", title="Quoted", text="body", raw='"Quoted"\nbody ')
        assert store.served(0) == {"id": "q", "contents": '"Quoted"\nbody '}
    finally:
        store.close()


def test_scan_names_a_duplicate_id_and_an_empty_corpus(tmp_path: Path) -> None:
    from sagegen.corpus import scan_corpus

    p = tmp_path / "c.jsonl"
    p.write_text(
        '{"id": "x", "contents": "A\\na"}\n{"id": "y", "contents": "B\\nb"}\n{"id": "x", "contents": "C"}\n'
    )
    with pytest.raises(InputError, match=r"duplicate id 'x'.*c\.jsonl:3.*c\.jsonl:1"):
        scan_corpus(CorpusConfig(path=str(p)))
    scan = scan_corpus(CorpusConfig(path=str(p), limit=2))
    from sagegen.corpus import corpus_hash, load_corpus

    assert (scan.n_docs, scan.hash) == (2, corpus_hash(load_corpus(CorpusConfig(path=str(p), limit=2))))
    p.write_text("\n")
    with pytest.raises(InputError, match="empty"):
        scan_corpus(CorpusConfig(path=str(p)))


def test_engine_choice_and_settings_tantivy_cannot_apply() -> None:
    auto = RetrievalConfig(bm25=BM25Config(tantivy_above=1000))
    assert "engine" not in index_params("bm25", auto, 999)["bm25"]  # numpy: the key of earlier indexes
    assert index_params("bm25", auto, 1000)["bm25"]["engine"] == "tantivy"
    with pytest.raises(ConfigError, match=r"k1=0\.9.*engine=numpy"):
        index_params("bm25", RetrievalConfig(bm25=BM25Config(engine="tantivy", k1=0.9)), 10)
    assert (
        index_params("bm25", RetrievalConfig(bm25=BM25Config(engine="numpy", k1=0.9)), 10**7)["bm25"]["k1"]
        == 0.9
    )


def test_sagegen_serve_on_a_tantivy_index_sends_the_corpus_bytes(tmp_path: Path) -> None:
    docs = [*DOCS, Doc.from_contents("q", '"Quoted title"\n  Lyon  and its  spaces ')]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": d.id, "contents": d.contents}) + "\n" for d in docs))
    proc, base = start_serve(
        [
            "--corpus",
            str(corpus),
            "--kind",
            "bm25",
            "-s",
            f"retrieval.index_dir={tmp_path / 'ix'}",
            "-s",
            "retrieval.bm25.engine=tantivy",
        ],
        tmp_path,
    )
    try:
        body = {"queries": ["Lyon spaces", "capital of Germany"], "topk": 2, "return_scores": True}
        got = httpx.post(f"{base}/retrieve", json=body, timeout=30).json()["result"]
        assert got[0][0]["document"] == {"id": "q", "contents": '"Quoted title"\n  Lyon  and its  spaces '}
        assert got[1][0]["document"]["id"] == "b" and got[1][0]["score"] > got[1][1]["score"] > 0
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_the_tokenizer_memo_is_bounded_and_changes_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Tokenizer, "MAX_CACHED", 50)
    capped, free = Tokenizer("en", "english"), Tokenizer("en", "english")
    monkeypatch.setattr(free, "MAX_CACHED", 10**9)
    texts = [f"Running word{i} dogs parks{i % 7} the Berlin{i}ing" for i in range(300)]
    for t in texts:
        assert capped(t) == free(t)
        assert len(capped._cache) <= 50
    assert len(free._cache) > 300  # without the cap the memo keeps every distinct word
