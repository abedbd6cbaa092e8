"""numpy BM25 engine: the sharded, bounded-memory build saves the same bytes as a one-shot build."""

from __future__ import annotations

from pathlib import Path

import pytest

from sagegen.config import BM25Config, RetrievalConfig
from sagegen.corpus import load_corpus
from sagegen.records import Doc
from sagegen.retrieval import bm25_build
from sagegen.retrieval.index import build_index, open_index


@pytest.mark.parametrize("method", ["lucene", "bm25l"])
def test_tiny_shards_and_ranges_save_the_same_bytes_as_one_shard(
    tmp_path: Path, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    odd = [Doc(id="stop", title="", text="the of and"), Doc(id="nil", title="", text="")]
    docs = [*load_corpus()[:700], *odd, *load_corpus()[700:900]]
    cfg = BM25Config(method=method)  # type: ignore[arg-type]
    stages: list[tuple[str, int, int]] = []
    bm25_build.build_sharded(docs, cfg, tmp_path / "one")  # 256 MB: one shard, one range
    # ~500 tokens a shard and ~800 postings a range: dozens of each.
    monkeypatch.setattr(bm25_build, "_BYTES_PER_TOKEN", 2**20 // 500)
    monkeypatch.setattr(bm25_build, "_BYTES_PER_POSTING", 2**20 // 800)
    bm25_build.build_sharded(docs, cfg, tmp_path / "many", memory_mb=1, progress=lambda *a: stages.append(a))
    assert sum(1 for s, _, _ in stages if s == "bm25: merge") > 20
    one = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert one == sorted(p.name for p in (tmp_path / "many").iterdir())
    assert "_shards" not in one and "term_max.npy" in one
    for name in one:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "many" / name).read_bytes(), name


def test_shards_follow_index_memory_mb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real = bm25_build.np.unique

    def spy(a, **kw):  # type: ignore[no-untyped-def]
        if kw.get("return_counts"):  # a shard's count (the merge's np.unique has none)
            seen.append(len(a))
        return real(a, **kw)

    monkeypatch.setattr(bm25_build, "_BYTES_PER_TOKEN", 16 * 2**20 // 1000)  # 1,000 tokens at 16 MB
    monkeypatch.setattr(bm25_build.np, "unique", spy)
    bm25_build.build_sharded(load_corpus()[:600], BM25Config(index_memory_mb=64), tmp_path / "a")
    big = len(seen)
    seen.clear()
    bm25_build.build_sharded(load_corpus()[:600], BM25Config(index_memory_mb=16), tmp_path / "b")
    # 4x the budget: about 4x fewer shards, each within its token budget plus one passage.
    assert 3 * big <= len(seen) <= 5 * big and max(seen) < 1000 + 400, (big, len(seen), max(seen))


def test_a_corpus_of_stopwords_only_builds_and_finds_nothing(tmp_path: Path) -> None:
    docs = [Doc(id="a", title="", text="the of and"), Doc(id="b", title="", text="")]
    build_index(docs, "bm25", RetrievalConfig(bm25=BM25Config(engine="numpy")), tmp_path / "idx")
    assert open_index(tmp_path / "idx").search(["the", "anything"], k=3) == [[], []]
