"""BM25 query throughput: sagegen's bm25s-backed retriever vs ``rank_bm25.BM25Okapi``, same process.

Both use the same tokenizer (lowercase, English stopwords, Snowball stemming), k1=1.5, b=0.75 and
the Okapi/Robertson scoring (``retrieval.bm25.method=robertson``, rank-identical to BM25Okapi; see
tests/retrieval/test_bm25.py). Corpus: the shared 2Wiki corpus (6,119 passages); queries: every question in
the shared question files. Each side does the whole job for a query: tokenize, score, top-k.

    python bench/bench_bm25.py                 # shared data at ../shared/data
    python bench/bench_bm25.py --replicate 100000 --ref-queries 50   # a 100k-passage corpus
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sagegen.config import BM25Config, CorpusConfig, RetrievalConfig
from sagegen.corpus import load_corpus
from sagegen.records import Doc
from sagegen.retrieval.index import build_index, open_index

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SAGEGEN_SHARED_DATA", REPO.parent / "shared" / "data"))


def questions(shared: Path) -> list[str]:
    out = []
    for f in sorted(shared.rglob("*.jsonl")):
        if f.name == "corpus.jsonl" or f.parent.name == "_src":
            continue
        out += [json.loads(line)["question"] for line in f.open(encoding="utf-8") if line.strip()]
    return out


def replicate(docs: list[Doc], n: int) -> list[Doc]:
    return [
        d if i < len(docs) else Doc(id=f"{d.id}~{i // len(docs)}", title=d.title, text=d.text)
        for i, d in ((i, docs[i % len(docs)]) for i in range(n))
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=SHARED / "2wiki" / "corpus.jsonl")
    ap.add_argument("--replicate", type=int, default=0, help="Repeat the corpus up to N passages.")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--ref-queries", type=int, default=0, help="Queries for rank_bm25 (0 = all; it is slow).")
    ap.add_argument("--repeat", type=int, default=3, help="Timed passes over the queries (best is kept).")
    args = ap.parse_args()

    from rank_bm25 import BM25Okapi

    docs = load_corpus(CorpusConfig(path=str(args.corpus)))
    if args.replicate:
        docs = replicate(docs, args.replicate)
    qs = questions(SHARED)
    print(
        f"corpus: {len(docs):,} passages ({args.corpus.name}{', replicated' if args.replicate else ''}); "
        f"queries: {len(qs):,}; k={args.k}"
    )

    rcfg = RetrievalConfig(bm25=BM25Config(method="robertson", k1=1.5, b=0.75))
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        build_index(docs, "bm25", rcfg, Path(tmp) / "idx")
        ours_build = time.perf_counter() - t
        r = open_index(Path(tmp) / "idx")
        r.search(qs[:5], k=args.k)  # warm the page cache / stem cache like a running server
        best = float("inf")
        for _ in range(args.repeat):
            t = time.perf_counter()
            ours = r.search(qs, k=args.k)
            best = min(best, time.perf_counter() - t)
        ours_qps = len(qs) / best

        tok = r.tokenizer
        t = time.perf_counter()
        ref = BM25Okapi([tok(d.contents) for d in docs], k1=1.5, b=0.75)
        ref_build = time.perf_counter() - t
        ref_qs = qs[: args.ref_queries] if args.ref_queries else qs
        t = time.perf_counter()
        agree = 0
        for q, hits in zip(ref_qs, ours, strict=False):
            scores = ref.get_scores(tok(q))
            top = np.argpartition(-scores, args.k)[: args.k]
            top = top[np.argsort(-scores[top], kind="stable")]
            # Compare text, not ids: replicated passages tie exactly and may come back under any copy's id.
            if hits and docs[int(top[0])].contents == hits[0].doc.contents:
                agree += 1
        ref_qps = len(ref_qs) / (time.perf_counter() - t)

    print(f"sagegen bm25 (bm25s): {ours_qps:10,.0f} queries/s  (build {ours_build:.2f}s, batch of {len(qs)})")
    print(f"rank_bm25 BM25Okapi : {ref_qps:10,.1f} queries/s  (build {ref_build:.2f}s, {len(ref_qs)} q)")
    print(f"speed-up: {ours_qps / ref_qps:.1f}x  (goal >= 10x); top-1 agreement {agree}/{len(ref_qs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
