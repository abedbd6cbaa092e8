"""The retrieval server's response encoder writes exactly the bytes json.dumps writes for the
rendered dicts (Starlette's JSONResponse settings), for every kind of text a corpus holds."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from sagegen.records import Doc, Hit
from sagegen.retrieval.server_wire import encode_result, render

TEXTS = ["plain", 'a "quoted" title', "back\\slash", "tab\tnew\nline\r", "ctrl \x00\x01\x1f", "é ü ß 漢字 🙂",
         "\u2028 line separator \u2029", "", "</script>&<>"]


def _hits(rng: random.Random, n: int) -> list[Hit]:
    out = []
    for i in range(n):
        title, text = rng.choice(TEXTS), rng.choice(TEXTS) * rng.randint(1, 3)
        raw = rng.choice([None, f'"{title}"\n{text}  '])  # wiki-18's quoted titles, kept as served
        score = rng.choice([rng.uniform(-5, 40), 0.0, 1e-300, 12.5, float("nan"), float("inf"),
                            np.float32(rng.uniform(0, 30)), np.float64(7.25), 3])
        out.append(Hit(doc=Doc(id=rng.choice([f"d{i}", f"wiki:{i} \"x\"", f"é{i}"]), title=title, text=text,
                               raw=raw), score=score))
    return out


@pytest.mark.parametrize("return_scores", [True, False])
def test_same_bytes_as_json_dumps_of_the_rendered_result(return_scores: bool) -> None:
    rng = random.Random(7)
    for _ in range(50):
        per_query = [_hits(rng, rng.randint(0, 5)) for _ in range(rng.randint(0, 6))]
        expected = json.dumps({"result": render(per_query, return_scores)}, ensure_ascii=False,
                              allow_nan=False, separators=(",", ":")).encode()
        got = encode_result(per_query, return_scores)
        assert got == expected
        parsed = json.loads(got)
        assert len(parsed["result"]) == len(per_query)
        if return_scores:
            for hits, row in zip(per_query, parsed["result"], strict=True):
                for h, item in zip(hits, row, strict=True):
                    finite = math.isfinite(float(h.score))
                    assert item["score"] == (float(h.score) if finite else None)


def test_a_lone_surrogate_is_sent_escaped_not_a_500() -> None:
    # UTF-8 cannot carry it; json.dumps(ensure_ascii=False).encode() raised here (a 500 for the batch).
    per_query = [[Hit(doc=Doc(id="s1", title="t", text="lone \ud800 é"), score=1.5)]]
    got = encode_result(per_query, True)
    assert got == json.dumps({"result": render(per_query, True)}, separators=(",", ":")).encode()
    assert json.loads(got)["result"][0][0]["document"]["contents"] == "t\nlone \ud800 é"
