"""A prebuilt FAISS index beside a wiki-18-layout corpus, served by ``sagegen serve`` (issue 26, item 4).

Search-R1's users download ``e5_Flat.index`` (the wiki-18 passages embedded by E5, vector i =
corpus line i) and ``wiki-18.jsonl``. Here the same layout is made small: the shared HotpotQA
passages as wiki-18 rows, embedded by the bundled MiniLM into a FAISS ``IndexFlatIP`` the way
Search-R1 builds its index, then served without re-encoding the corpus and read with Search-R1's
own client steps (``tests/test_searchr1_batches.searchr1_information``).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from helpers.searchr1_client import searchr1_information
from helpers.serve_cli import start_serve
from sagegen.config import DenseConfig, RetrievalConfig
from sagegen.errors import IndexError_
from sagegen.retrieval.dense import dense_unavailable

# Real MiniLM and a real `sagegen serve` (~50 s): slow, and run by CI (the ci mark).
pytestmark = [
    pytest.mark.skipif(dense_unavailable() is not None, reason=f"dense: {dense_unavailable()}"),
    pytest.mark.slow,
    pytest.mark.ci,
]
N = 300  # passages: enough distractors, a few seconds of MiniLM on a CPU


@pytest.fixture(scope="module")
def prebuilt(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    import faiss

    from sagegen.retrieval.dense import encode, load_encoder

    tmp = tmp_path_factory.mktemp("wiki18-dense")
    rows = []
    for n, line in enumerate((shared_data / "hotpotqa" / "corpus.jsonl").read_text().splitlines()[:N]):
        title, _, text = json.loads(line)["contents"].partition("\n")
        rows.append({"id": str(n), "contents": f'"{title}"\n{text}' + ("  " if n % 9 == 0 else "")})
    corpus = tmp / "wiki-18.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    model = load_encoder("minilm")
    emb = encode(model, [r["contents"] for r in rows], 64)
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)
    faiss.write_index(index, str(tmp / "e5_Flat.index"))
    questions = [
        json.loads(q)["question"]
        for q in (shared_data / "hotpotqa" / "questions.jsonl").read_text().splitlines()
    ][:40]
    # What FAISS itself answers for these questions over this index: the served ranking must be it.
    scores, ids = index.search(encode(model, questions, 64), 3)
    return {"dir": tmp, "corpus": corpus, "rows": rows, "questions": questions, "ids": ids, "scores": scores}


def test_sagegen_serve_answers_from_a_prebuilt_faiss_index(
    prebuilt: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ix = tmp_path / "indexes"
    args = ["--corpus", str(prebuilt["corpus"]), "--kind", "dense", "-s", f"retrieval.index_dir={ix}",
            "-s", f"retrieval.dense.prebuilt={prebuilt['dir'] / 'e5_Flat.index'}"]  # fmt: skip
    proc, base = start_serve(args, tmp_path)
    try:
        body = {"queries": prebuilt["questions"], "topk": 3, "return_scores": True}  # Search-R1's request
        resp = httpx.post(f"{base}/retrieve", json=body, timeout=60)
        health = httpx.get(f"{base}/health", timeout=10).json()
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    assert resp.status_code == 200, resp.text[:300]
    result = resp.json()["result"]
    assert health["kind"] == "dense" and health["n_docs"] == N
    for served, want_ids, want_scores in zip(result, prebuilt["ids"], prebuilt["scores"], strict=True):
        assert [int(h["document"]["id"]) for h in served] == want_ids.tolist()
        assert [h["score"] for h in served] == pytest.approx(want_scores.tolist(), abs=1e-4)
        for h in served:  # the corpus line's contents, quotes and trailing spaces kept
            assert h["document"]["contents"] == prebuilt["rows"][int(h["document"]["id"])]["contents"]
    info = searchr1_information(result[0])
    assert info.startswith('<information>Doc 1(Title: "') and info.endswith("</information>")
    # The corpus was not embedded again: the index links the prebuilt file, no embeddings were written.
    [built] = [p for p in ix.iterdir() if not p.name.startswith(".")]
    link = built / "dense" / "faiss.index"
    assert link.is_symlink() and link.resolve() == (prebuilt["dir"] / "e5_Flat.index").resolve()
    assert not (built / "dense" / "embeddings.npy").exists()


def test_a_prebuilt_index_of_another_size_or_dimension_is_refused(prebuilt: dict, tmp_path: Path) -> None:
    import faiss

    from sagegen.config import CorpusConfig
    from sagegen.corpus import load_corpus
    from sagegen.retrieval.index import build_index, open_index

    docs = load_corpus(CorpusConfig(path=str(prebuilt["corpus"])))
    small = faiss.IndexFlatIP(384)
    small.add(np.zeros((5, 384), dtype=np.float32))
    faiss.write_index(small, str(tmp_path / "five.index"))
    rcfg = RetrievalConfig(dense=DenseConfig(prebuilt=str(tmp_path / "five.index")))
    with pytest.raises(IndexError_, match=r"holds 5 vectors and the corpus 300 passages"):
        build_index(docs, "dense", rcfg, tmp_path / "idx")
    wide = faiss.IndexFlatIP(768)  # an E5-base index read with MiniLM (384) queries
    wide.add(np.zeros((N, 768), dtype=np.float32))
    faiss.write_index(wide, str(tmp_path / "wide.index"))
    build_index(docs, "dense", RetrievalConfig(dense=DenseConfig(prebuilt=str(tmp_path / "wide.index"))),
                tmp_path / "idx")  # fmt: skip
    with pytest.raises(IndexError_, match=r"768-dimensional vectors, and minilm encodes queries in 384"):
        open_index(tmp_path / "idx")
