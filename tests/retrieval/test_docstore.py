"""The passage store gives back every Doc exactly as it was written, whatever its text holds."""

from __future__ import annotations

from pathlib import Path

from sagegen.records import Doc, Hit
from sagegen.retrieval.index import DocStore, to_hits

DOCS = [
    Doc(id="p0", title="Plain", text="text"),
    Doc(id="p1", title="", text="no title, only text"),
    Doc(
        id='wiki:2 "x"',
        title="Quoted",
        text="tab\tnew\nline é 漢字 🙂 \u2028",
        raw='"Quoted"\ntab\tnew\nline  ',
    ),
    Doc(id="p3", title="ctrl", text="\x00\x01\x1f back\\slash"),
    # A lone surrogate (a corpus' "\ud800" escape): UTF-8 cannot hold it, the store still must.
    Doc(id="p4", title="lone", text="before \ud800 after"),
    Doc(id="p5", title="last", text=""),
]


def test_every_doc_reads_back_equal(tmp_path: Path) -> None:
    DocStore.write(DOCS, tmp_path)
    store = DocStore(tmp_path)
    try:
        assert len(store) == len(DOCS)
        assert [store[i] for i in range(len(DOCS))] == DOCS
        assert list(store) == DOCS
        assert store[2].contents == '"Quoted"\ntab\tnew\nline  '
        assert store[4].text == "before \ud800 after"
    finally:
        store.close()


def test_to_hits_pairs_each_position_with_its_score(tmp_path: Path) -> None:
    DocStore.write(DOCS, tmp_path)
    store = DocStore(tmp_path)
    try:
        found = to_hits(store, [[(3, 2.5), (0, 1.0)], [], [(5, 0.25)]])
        assert found == [
            [Hit(doc=DOCS[3], score=2.5), Hit(doc=DOCS[0], score=1.0)],
            [],
            [Hit(doc=DOCS[5], score=0.25)],
        ]
        assert all(type(h.score) is float for row in found for h in row)
    finally:
        store.close()
