"""The retrieval server's response encoder (pydantic-core's, not json's) sends what json.dumps of
the rendered dicts would mean, for every kind of text a corpus holds: the same values once parsed,
scores exact to the bit, non-ASCII text as UTF-8 (as Starlette's JSONResponse sends it), compact."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from sagegen.records import Doc, Hit
from sagegen.retrieval.index import DocStore, to_hits
from sagegen.server.wire import encode_positions, encode_result, render

TEXTS = [
    "plain",
    'a "quoted" title',
    "back\\slash",
    "tab\tnew\nline\r",
    "ctrl \x00\x01\x1f",
    "é ü ß 漢字 🙂",
    "\u2028 line separator \u2029",
    "",
    "</script>&<>",
]


def _hits(rng: random.Random, n: int) -> list[Hit]:
    out = []
    for i in range(n):
        title, text = rng.choice(TEXTS), rng.choice(TEXTS) * rng.randint(1, 3)
        raw = rng.choice([None, f'"{title}"\n{text}  '])  # wiki-18's quoted titles, kept as served
        score = rng.choice(
            [
                rng.uniform(-5, 40),
                0.0,
                1e-300,
                12.5,
                float("nan"),
                float("inf"),
                np.float32(rng.uniform(0, 30)),
                np.float64(7.25),
                3,
            ]
        )
        out.append(
            Hit(
                doc=Doc(id=rng.choice([f"d{i}", f'wiki:{i} "x"', f"é{i}"]), title=title, text=text, raw=raw),
                score=score,
            )
        )
    return out


@pytest.mark.parametrize("return_scores", [True, False])
def test_same_json_as_json_dumps_of_the_rendered_result(return_scores: bool) -> None:
    rng = random.Random(7)
    for _ in range(50):
        per_query = [_hits(rng, rng.randint(0, 5)) for _ in range(rng.randint(0, 6))]
        reference = json.dumps(
            {"result": render(per_query, return_scores)},
            ensure_ascii=False,
            allow_nan=False,
            separators=(",", ":"),
        ).encode()
        got = encode_result(per_query, return_scores)
        parsed = json.loads(got)
        assert parsed == json.loads(reference)
        # Compact and UTF-8 like the reference: only a float may be spelt otherwise (1e-05 / 0.00001).
        assert len(got) <= len(reference) + 4 * sum(len(hits) for hits in per_query)
        assert b"\\u00e9" not in got and (("é" in reference.decode()) == ("é" in got.decode()))
        assert len(parsed["result"]) == len(per_query)
        if return_scores:
            for hits, row in zip(per_query, parsed["result"], strict=True):
                for h, item in zip(hits, row, strict=True):
                    finite = math.isfinite(float(h.score))
                    assert item["score"] == (float(h.score) if finite else None)
                    assert item["document"]["contents"] == h.doc.contents


def test_a_lone_surrogate_is_sent_escaped_not_a_500() -> None:
    # UTF-8 cannot carry it; json.dumps(ensure_ascii=False).encode() raised here (a 500 for the batch).
    per_query = [[Hit(doc=Doc(id="s1", title="t", text="lone \ud800 é"), score=1.5)]]
    got = encode_result(per_query, True)
    assert got.isascii()  # \u-escaped: valid UTF-8 bytes whatever the text
    assert json.loads(got)["result"][0][0]["document"]["contents"] == "t\nlone \ud800 é"


@pytest.mark.parametrize("return_scores", [True, False])
def test_positions_read_from_the_store_encode_as_the_hits_do(tmp_path: Path, return_scores: bool) -> None:
    # The server's local-index path (search_ids + encode_positions) must send what search() + encode_result
    # sends: every kind of text, raw contents, a lone surrogate, non-finite and numpy scores.
    rng = random.Random(3)
    docs = [h.doc for h in _hits(rng, 40)] + [Doc(id="lone", title="t", text="a \ud800 b")]
    DocStore.write(docs, tmp_path)
    store = DocStore(tmp_path)
    try:
        for _ in range(30):
            scores = [rng.uniform(-5, 40), float("nan"), np.float32(2.5)]
            per_query = [
                [(rng.randrange(len(docs)), rng.choice(scores)) for _ in range(rng.randint(0, 4))]
                for _ in range(rng.randint(0, 5))
            ]
            got = encode_positions(store, per_query, return_scores)
            assert json.loads(got) == json.loads(encode_result(to_hits(store, per_query), return_scores))
        assert encode_positions(store, [[(len(docs) - 1, 1.0)]], return_scores).isascii()
    finally:
        store.close()
