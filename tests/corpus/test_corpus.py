"""Corpus loaders (every format), chunking, error messages, duplicate ids and the content hash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sagegen.config import CorpusConfig
from sagegen.corpus import (
    chunk_doc,
    corpus_hash,
    detect_format,
    iter_bundled,
    load_corpus,
)
from sagegen.errors import ConfigError, InputError
from sagegen.records import Doc


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def test_searchr1_jsonl_title_first_line_and_quotes(tmp_path: Path) -> None:
    p = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"id": "1", "contents": '"Paris"\nParis is the capital of France.'},
            {"id": 2, "contents": "Berlin\nBerlin is the capital of Germany."},
            {"id": "3", "contents": "no title line at all"},
        ],
    )
    cfg = CorpusConfig(path=str(p))
    assert detect_format(cfg) == "searchr1"
    docs = load_corpus(cfg)
    assert [d.id for d in docs] == ["1", "2", "3"]
    assert docs[0].title == "Paris" and docs[0].text == "Paris is the capital of France."
    assert docs[1].title == "Berlin"
    assert docs[2].title == "" and docs[2].text == "no title line at all"
    # The wire form is the corpus's own bytes (Search-R1 serves wiki-18's quoted titles as they are).
    assert docs[0].contents == '"Paris"\nParis is the capital of France.' and docs[0].raw is not None
    assert docs[1].contents == "Berlin\nBerlin is the capital of Germany." and docs[1].raw is None
    assert docs[2].contents == "no title line at all"


def test_id_title_text_jsonl(tmp_path: Path) -> None:
    p = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"id": "a", "title": "A", "text": "alpha"},
            {"id": "b", "text": "beta"},
            "",
        ],  # blank lines are skipped
    )
    cfg = CorpusConfig(path=str(p))
    assert detect_format(cfg) == "jsonl"
    assert load_corpus(cfg) == [Doc(id="a", title="A", text="alpha"), Doc(id="b", title="", text="beta")]


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    p = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": ["x", "y"], "title": ["X", None], "text": ["ex", "why"]}), p)
    docs = load_corpus(CorpusConfig(path=str(p)))
    assert docs == [Doc(id="x", title="X", text="ex"), Doc(id="y", title="", text="why")]
    # Search-R1 style parquet (id, contents) also works.
    p2 = tmp_path / "s.parquet"
    pq.write_table(pa.table({"id": ["1"], "contents": ['"T"\nbody']}), p2)
    assert load_corpus(CorpusConfig(path=str(p2))) == [Doc(id="1", title="T", text="body", raw='"T"\nbody')]
    # A missing column and a bad cell are named.
    p3 = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": ["1"], "body": ["b"]}), p3)
    with pytest.raises(InputError, match=r"bad\.parquet.*field 'text'"):
        load_corpus(CorpusConfig(path=str(p3)))
    p4 = tmp_path / "bad2.parquet"
    pq.write_table(pa.table({"id": ["1", "2"], "text": ["ok", None]}), p4)
    with pytest.raises(InputError, match=r"bad2\.parquet, line 2, field 'text'"):
        load_corpus(CorpusConfig(path=str(p4)))


def test_folder_of_txt_and_md(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "a.md").write_text("intro line\n# The Heading\n\nBody text here.\n", encoding="utf-8")
    (root / "sub" / "b.txt").write_text("B title\nfirst para\nsecond para\n", encoding="utf-8")
    (root / "single.txt").write_text("only one line\n", encoding="utf-8")
    (root / "empty.txt").write_text("\n\n", encoding="utf-8")
    (root / "ignored.csv").write_text("x,y\n", encoding="utf-8")
    cfg = CorpusConfig(path=str(root))
    assert detect_format(cfg) == "folder"
    docs = {d.id: d for d in load_corpus(cfg)}
    assert sorted(docs) == ["a.md", "single.txt", "sub/b.txt"]
    assert docs["a.md"].title == "The Heading" and docs["a.md"].text == "intro line\n\nBody text here."
    assert docs["sub/b.txt"].title == "B title" and docs["sub/b.txt"].text == "first para\nsecond para"
    assert docs["single.txt"].title == "single" and docs["single.txt"].text == "only one line"
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1\.txt.*UTF-8"):
        load_corpus(cfg)


def test_bundled_corpus() -> None:
    docs = load_corpus()  # the default config is the bundled corpus
    assert len(docs) == 10_033
    assert len({d.id for d in docs}) == len(docs)
    assert docs[0].id == "wiki-0" and docs[-1].id == "wiki-10032"
    by_title = {d.title: d for d in docs}
    assert "Stanley Kubrick" in by_title["2001: A Space Odyssey"].text
    assert all(d.text for d in docs)
    # Ids are stable: sorted-title order, independent of dict order in the data file.
    assert [d.title for d in docs] == sorted(d.title for d in docs)
    assert list(iter_bundled())[:3] == docs[:3]
    assert load_corpus(CorpusConfig(limit=5)) == docs[:5]


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ('{"id": "2", "contents": "x"', r"line 2: not valid JSON"),
        ('["not", "an", "object"]', r"line 2: expected a JSON object"),
        ('{"id": "2"}', r"line 2, field 'contents': missing field"),
        ('{"id": "2", "contents": 5}', r"line 2, field 'contents': expected a string, got int"),
        ('{"id": "", "contents": "x"}', r"line 2, field 'id': empty id"),
        ('{"id": [1], "contents": "x"}', r"line 2, field 'id': expected a string, got list"),
    ],
)
def test_bad_line_names_file_line_field(tmp_path: Path, line: str, pattern: str) -> None:
    p = write_jsonl(tmp_path / "corpus.jsonl", [{"id": "1", "contents": "T\nok"}, line])
    with pytest.raises(InputError, match=r"corpus\.jsonl, " + pattern):
        load_corpus(CorpusConfig(path=str(p)))


def test_bad_line_in_id_title_text_format(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "c.jsonl", [{"id": "1", "text": "a"}, {"id": "2", "title": 3, "text": "b"}])
    with pytest.raises(InputError, match=r"c\.jsonl, line 2, field 'title'"):
        load_corpus(CorpusConfig(path=str(p)))


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    rows = [{"id": "a", "contents": "A\n1"}, {"id": "b", "contents": "B\n2"}, {"id": "a", "contents": "A\n3"}]
    p = write_jsonl(tmp_path / "dup.jsonl", rows)
    with pytest.raises(
        InputError, match=r"duplicate id 'a' at .*dup\.jsonl:3 \(first seen at .*dup\.jsonl:1\)"
    ):
        load_corpus(CorpusConfig(path=str(p)))


def test_missing_path_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_corpus(CorpusConfig(path=str(tmp_path / "nope.jsonl")))
    (tmp_path / "c.csv").write_text("id,text\n", encoding="utf-8")
    with pytest.raises(InputError, match="cannot tell the corpus format"):
        load_corpus(CorpusConfig(path=str(tmp_path / "c.csv")))


def test_chunking_overlap_title_and_ids() -> None:
    words = [f"w{i}" for i in range(25)]
    doc = Doc(id="d", title="T", text=" ".join(words))
    parts = chunk_doc(doc, chunk_words=10, overlap=3)
    assert [p.id for p in parts] == [f"d#{k}" for k in range(len(parts))]
    assert all(p.title == "T" for p in parts)
    assert parts[0].text.split() == words[:10]
    assert parts[1].text.split()[:3] == words[7:10]  # 3 words of overlap
    assert parts[-1].text.split()[-1] == "w24"
    covered = {w for p in parts for w in p.text.split()}
    assert covered == set(words)
    # A short document keeps its own id (benchmark gold ids stay valid).
    assert chunk_doc(Doc(id="s", text="a b c"), 10, 3) == [Doc(id="s", text="a b c")]
    with pytest.raises(ConfigError, match="chunk_overlap"):
        chunk_doc(doc, 10, 10)


def test_chunking_prefers_sentence_ends() -> None:
    text = "One two three four five six seven. Eight nine ten eleven twelve thirteen fourteen fifteen."
    parts = chunk_doc(Doc(id="d", text=text), chunk_words=10, overlap=0)
    assert parts[0].text == "One two three four five six seven."
    assert parts[1].text.startswith("Eight")


def test_load_corpus_chunks(tmp_path: Path) -> None:
    long = " ".join(f"x{i}" for i in range(50))
    p = write_jsonl(
        tmp_path / "c.jsonl", [{"id": "a", "title": "A", "text": long}, {"id": "b", "text": "short"}]
    )
    docs = load_corpus(CorpusConfig(path=str(p), chunk_words=20, chunk_overlap=5))
    assert [d.id for d in docs] == ["a#0", "a#1", "a#2", "b"]


def test_corpus_hash_is_stable_and_sensitive() -> None:
    a = [Doc(id="1", title="t", text="x"), Doc(id="2", text="y")]
    assert corpus_hash(a) == corpus_hash(list(a))
    assert corpus_hash(a) != corpus_hash(a[::-1])
    assert corpus_hash(a) != corpus_hash([Doc(id="1", title="t", text="x "), a[1]])
    # Field boundaries matter: moving text between title and body changes the hash.
    assert corpus_hash([Doc(id="1", title="ab", text="c")]) != corpus_hash(
        [Doc(id="1", title="a", text="bc")]
    )


def test_shared_corpus_loads(shared_data: Path) -> None:
    docs = load_corpus(CorpusConfig(path=str(shared_data / "2wiki" / "corpus.jsonl")))
    assert len(docs) == 6119 and docs[0].id == "2wiki-0" and docs[0].title == "Teutberga"
