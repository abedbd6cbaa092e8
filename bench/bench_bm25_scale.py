"""BM25 at scale: the numpy engine against the tantivy engine on wiki-18-like corpora of growing size.

The numpy engine's query is MaxScore-pruned (exact); its exhaustive scoring (every posting, what sagegen
searched with before) is measured in the same child as the baseline: query CPU and top-10 overlap.

Lucene (what Pyserini and so Search-R1 search with) joins with ``--lucene-jar`` (Anserini's fatjar from
``pip install pyserini==0.22.1 --no-deps``, which runs on Java 17; newer Pyserini needs Java 21) and
``--lucene-python`` (a Python with ``pyjnius``): built by Anserini's ``IndexCollection`` (1 thread,
``-storeRaw`` as Search-R1 reads ``doc.raw()``), searched by its ``SimpleSearcher`` (BM25 k1=0.9, b=0.4).

A synthetic Search-R1-format corpus (``{"id", "contents": "\\"Title\\"\\ntext"}``, 100-word passages
like wiki-18's DPR split) is written to ``--work`` (never to the repository): words are drawn by a
Zipf law over a vocabulary whose head is the real English words of the bundled Wikipedia leads in
frequency order and whose tail is made-up words (so the vocabulary keeps growing with the corpus,
as a real one does), with words repeating within a passage as often as in real ones (``REPEAT``).
The HotpotQA/MuSiQue/2Wiki gold passages of /work/shared/data (``corpus.jsonl``)
are placed at seeded positions inside it, so their questions have real distractors.

For each size and engine, every figure comes from a child process of its own:

- build: ``sagegen index`` (the real CLI, ``-s retrieval.bm25.engine=...``): wall, CPU (user+sys),
  peak RSS (``os.wait4``'s rusage of that child), and the index's size on disk;
- query: CPU per query (``time.process_time``), one query per call and one batch of all, top-3,
  after a warm-up pass (page cache warm, as a server's would be); recall@3/@10 of the gold passages
  of the shared questions; top-10 overlap between the engines;
- ``/retrieve``: ``sagegen serve --index`` with 32 single-query clients (bench_retrieval_server's
  asyncio client), requests/s and the server's CPU per request; then one request of 2,560 queries
  (a Search-R1 GRPO step), its wall and server CPU seconds.

Each row records the load average when it started (the machine is shared: CPU figures are noisy).
``--workers N`` serves with ``sagegen serve --workers N`` (processes sharing the memory-mapped index).

    python bench/bench_bm25_scale.py --sizes 100000,1000000,3000000 --engines numpy,tantivy,lucene \
        --lucene-jar .../anserini-0.22.1-fatjar.jar --lucene-python <a Python with pyjnius>
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_retrieval_server import SHIM, clients, cpu_seconds, free_port, start, stop

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SAGEGEN_SHARED_DATA", REPO.parent / "shared" / "data"))
SETS = ("hotpotqa", "musique", "2wiki")
WORDS, VOCAB, ZIPF_S = 100, 4_000_000, 1.07
#: Each word repeats an earlier word of its passage with this probability: real passages are bursty
#: (23% of the content tokens of the shared HotpotQA passages repeat one in the same passage; words
#: drawn independently repeat 4%), and burstiness is what lets top-k pruning skip postings.
REPEAT = 0.25
#: The CLI as a child process (the package has no __main__).
SAGEGEN = [
    sys.executable,
    "-c",
    "import sys; from sagegen.cli.main import main; sys.argv[0] = 'sagegen'; main()",
]


# --------------------------------------------------------------------------- the corpus


def _vocabulary() -> list[str]:
    """Real words in frequency order (bundled leads + shared passages), then made-up ones."""
    from sagegen.corpus import iter_bundled

    counts: Counter[str] = Counter()
    pat = re.compile(r"[A-Za-z]+")
    for d in iter_bundled():
        counts.update(pat.findall(d.text))
    real = [w for w, _ in counts.most_common()]
    syll = [
        "ka",
        "lo",
        "ri",
        "ten",
        "mar",
        "vi",
        "sol",
        "der",
        "an",
        "qu",
        "bel",
        "or",
        "ist",
        "um",
        "ne",
        "zo",
    ]
    fake = []
    for i in range(VOCAB - len(real)):
        parts, x = [], i + 17
        while x:
            x, r = divmod(x, len(syll))
            parts.append(syll[r])
        fake.append("".join(parts).capitalize() if i % 5 == 0 else "".join(parts))
    return real + fake


def gold_passages() -> list[dict[str, str]]:
    out = []
    for name in SETS:
        path = SHARED / name / "corpus.jsonl"
        if path.is_file():
            out += [
                json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
            ]
    return out


def gold_questions() -> list[tuple[str, set[str]]]:
    out = []
    for name in SETS:
        path = SHARED / name / "questions.jsonl"
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    q = json.loads(line)
                    out.append((q["question"], set(q["supporting"])))
    return out


def synthesise(path: Path, n: int, seed: int = 0) -> None:
    """``n`` passages (gold passages included) at ``path``, written chunk by chunk."""
    vocab = np.array(_vocabulary(), dtype=object)
    p = 1.0 / np.arange(1, len(vocab) + 1) ** ZIPF_S
    cdf = np.cumsum(p / p.sum())
    rng = np.random.default_rng(seed)
    gold = gold_passages()
    at = dict(zip(rng.choice(n, size=len(gold), replace=False).tolist(), gold, strict=True))
    chunk = 50_000
    tmp = path.with_suffix(".part")
    with tmp.open("w", encoding="utf-8") as fh:
        for start_at in range(0, n, chunk):
            m = min(chunk, n - start_at)
            ranks = np.minimum(np.searchsorted(cdf, rng.random((m, WORDS + 2))), len(vocab) - 1)
            rows = np.arange(m)
            for j in range(3, WORDS + 2):  # columns 0-1 are the title, the text starts at 2
                again = rng.random(m) < REPEAT
                ranks[again, j] = ranks[rows[again], rng.integers(2, j, size=m)[again]]
            words = vocab[ranks]
            lines = []
            for j in range(m):
                i = start_at + j
                if i in at:
                    g = at[i]
                    lines.append(json.dumps({"id": g["id"], "contents": g["contents"]}, ensure_ascii=False))
                    continue
                row = words[j]
                title = f"{row[0].capitalize()} {row[1]}"
                text = " ".join(row[2:])
                lines.append(json.dumps({"id": str(i), "contents": f'"{title}"\n{text}'}, ensure_ascii=False))
            fh.write("\n".join(lines) + "\n")
    tmp.rename(path)


# --------------------------------------------------------------------------- measurements


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    }


def measured(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd`` under GNU time: wall, CPU and peak RSS of that process alone.

    Not ``os.wait4``'s rusage: Linux carries the forking process' peak RSS over into the child's
    ``ru_maxrss`` at exec, and this process holds the synthetic vocabulary (~0.65 GB).
    """
    stats = Path(tempfile.mkstemp(prefix="time-", suffix=".txt")[1])
    try:
        t = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%U %S %M", "-o", str(stats), *cmd],
            env=_env(),
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t
        if proc.returncode:
            raise SystemExit(f"{' '.join(map(str, cmd[:8]))} ... failed:\n{proc.stderr[-3000:]}")
        user, sys_s, max_kb = stats.read_text().split()[-3:]
    finally:
        stats.unlink(missing_ok=True)
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(float(user) + float(sys_s), 1),
        "peak_rss_gb": round(int(max_kb) / 1e6, 3),  # GNU time's %M is in KB
        "stdout": proc.stdout,
    }


def disk_gb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e9, 3)


QUERY_CHILD = r"""
import json, sys, time
from sagegen.retrieval.index import open_index
idx, qfile, out = sys.argv[1:4]
data = json.load(open(qfile))
qs, gold = data["queries"], [set(g) for g in data["gold"]]
r = open_index(idx)
load = time.perf_counter()
r.search_ids(qs, 10)  # warm-up: page cache and tokenizer cache, as a running server has them
t = time.process_time(); [r.search_ids([q], 3) for q in qs]; single = (time.process_time() - t) / len(qs)
t = time.process_time(); r.search_ids(qs, 3); batched = (time.process_time() - t) / len(qs)
top = [[r.store.record(i)["id"] for i, _ in row] for row in r.search_ids(qs, 10)]
ng = len(data["gold_queries"])
rec = {k: sum(len(set(t[:k]) & gold[j]) / len(gold[j]) for j, t in enumerate(top[:ng])) / ng for k in (3, 10)}
res = {"single_ms": single * 1e3, "batched_ms": batched * 1e3, "recall@3": rec[3], "recall@10": rec[10],
       "top10": top}
if hasattr(r, "prune"):  # numpy engine: the exhaustive scorer (the baseline) in the same process
    t = time.process_time(); [r.search_ids([q], 3, prune=False) for q in qs]
    res["exhaustive_single_ms"] = (time.process_time() - t) / len(qs) * 1e3
    t = time.process_time(); r.search_ids(qs, 3, prune=False)
    res["exhaustive_batched_ms"] = (time.process_time() - t) / len(qs) * 1e3
    ex = r.search_ids(qs, 10, prune=False)
    pr = r.search_ids(qs, 10)
    res["top10_equal_exhaustive"] = sum(a == b for a, b in zip(pr, ex)) / len(qs)
json.dump(res, open(out, "w"))
"""


LUCENE_CHILD = r"""
import json, sys, time
import jnius_config
jar, idx, qfile, out = sys.argv[1:5]
jnius_config.add_classpath(jar)
from jnius import autoclass
data = json.load(open(qfile))
qs, gold = data["queries"], [set(g) for g in data["gold"]]
s = autoclass("io.anserini.search.SimpleSearcher")(idx)  # Pyserini's LuceneSearcher: BM25 k1=0.9, b=0.4
AL = autoclass("java.util.ArrayList")
ql, il = AL(), AL()
for i, q in enumerate(qs):
    ql.add(q); il.add(str(i))
for _ in range(2):  # warm-up: page cache, and the JIT (two passes)
    [s.search(q, 10) for q in qs]
t = time.process_time(); [s.search(q, 3) for q in qs]; single = (time.process_time() - t) / len(qs)
t = time.process_time(); s.batch_search(ql, il, 3, 1); batched = (time.process_time() - t) / len(qs)
top = [[h.docid for h in s.search(q, 10)] for q in qs]
ng = len(data["gold_queries"])
rec = {k: sum(len(set(t[:k]) & gold[j]) / len(gold[j]) for j, t in enumerate(top[:ng])) / ng for k in (3, 10)}
json.dump({"single_ms": single * 1e3, "batched_ms": batched * 1e3, "recall@3": rec[3], "recall@10": rec[10],
           "top10": top}, open(out, "w"))
"""
#: Pyserini 0.22's Anserini runs on Java 17 (newer ones need 21); JsonCollection reads {"id","contents"}.
JAVA_HOME = os.environ.get("JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64")


def lucene_build(jar: Path, corpus: Path, out: Path) -> dict[str, Any]:
    src = out.parent / f"{out.name}-input"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir()
    (src / corpus.name).symlink_to(corpus)
    cmd = [f"{JAVA_HOME}/bin/java", "-cp", str(jar), "io.anserini.index.IndexCollection", "-collection",
           "JsonCollection", "-input", str(src), "-index", str(out), "-generator",
           "DefaultLuceneDocumentGenerator", "-threads", "1", "-storeRaw"]  # fmt: skip
    try:
        return measured(cmd)
    finally:
        shutil.rmtree(src, ignore_errors=True)


def lucene_queries(python: str, jar: Path, index: Path, qfile: Path, out: Path) -> dict[str, Any]:
    m = measured([python, "-c", LUCENE_CHILD, str(jar), str(index), str(qfile), str(out)])
    res = json.loads(out.read_text())
    res["query_peak_rss_gb"] = m["peak_rss_gb"]
    return res


def query_figures(index: Path, qfile: Path, out: Path) -> dict[str, Any]:
    m = measured([sys.executable, "-c", QUERY_CHILD, str(index), str(qfile), str(out)])
    res = json.loads(out.read_text())
    res["query_peak_rss_gb"] = m["peak_rss_gb"]
    return res


def server_figures(index: Path, queries: list[str], seconds: float, workers: int = 1) -> dict[str, float]:
    """``sagegen serve`` over ``index``: :func:`load_figures`."""
    port = free_port()
    extra = ["--workers", str(workers)] if workers > 1 else []
    out = load_figures(
        [*SAGEGEN, "serve", "--index", str(index), "--port", str(port), *extra], port, queries, seconds
    )
    # The baseline: the 2,560-query request on one slot, its chunks one after another (release 9).
    port = free_port()
    one = ["-s", "server.max_concurrency=1"]
    proc = start([*SAGEGEN, "serve", "--index", str(index), "--port", str(port), *extra, *one], port)
    try:
        out["batch2560_one_slot_s"] = batch_seconds(port, queries)
    finally:
        stop(proc)
    return out


def searchr1_figures(
    python: str, server_file: Path, index: Path, queries: list[str], seconds: float
) -> dict[str, float]:
    """Search-R1's own ``retrieval_server.py`` on real Pyserini over a Lucene index: :func:`load_figures`."""
    port = free_port()
    cmd = [python, str(SHIM), str(server_file), str(index), str(port), "--pyserini"]
    return load_figures(cmd, port, queries, seconds)


def batch_seconds(port: int, queries: list[str]) -> float:
    """Search-R1's GRPO step, 512 prompts x 5 rollouts = 2,560 queries in one request: wall seconds."""
    batch = [queries[i % len(queries)] + ("" if i < len(queries) else f" {i}") for i in range(2560)]
    t = time.perf_counter()
    body = {"queries": batch, "topk": 3, "return_scores": True}
    r = httpx.post(f"http://127.0.0.1:{port}/retrieve", json=body, timeout=600)
    wall = time.perf_counter() - t
    assert r.status_code == 200 and len(r.json()["result"]) == 2560, r.text[:300]
    return wall


def load_figures(cmd: list[str], port: int, queries: list[str], seconds: float) -> dict[str, float]:
    """Requests/s with 32 single-query clients and one 2,560-query request, with the server's CPU."""
    proc = start(cmd, port)
    try:
        cpu0 = cpu_seconds(proc.pid)
        rps = asyncio.run(clients(port, 32, queries, seconds))
        cpu = cpu_seconds(proc.pid) - cpu0
        cpu1 = cpu_seconds(proc.pid)
        batch_s = batch_seconds(port, queries)
        batch_cpu = cpu_seconds(proc.pid) - cpu1
    finally:
        stop(proc)
    return {"rps_32": round(rps, 1), "server_cpu_ms_per_req": round(cpu / (rps * seconds) * 1e3, 3),
            "batch2560_s": round(batch_s, 2), "batch2560_cpu_s": round(batch_cpu, 2)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--engines", default="numpy,tantivy,lucene", help="which engines to run, in order")
    ap.add_argument("--reuse", action="store_true", help="search a kept index instead of rebuilding it")
    ap.add_argument("--keep", default="", help="engines whose indexes stay in --work afterwards")
    ap.add_argument("--workers", type=int, default=1, help="sagegen serve --workers for /retrieve")
    ap.add_argument("--work", type=Path, default=Path("/work/tmp-bench/bm25-scale"))
    ap.add_argument("--serve-seconds", type=float, default=10.0)
    ap.add_argument("--results", type=Path, default=None, help="append each row as JSON here")
    ap.add_argument(
        "--lucene-jar", type=Path, default=None, help="Anserini fatjar: add Lucene (Pyserini's engine)"
    )
    ap.add_argument(
        "--lucene-python", default=sys.executable, help="a Python with pyjnius, for Lucene queries"
    )
    ap.add_argument(
        "--searchr1",
        type=Path,
        default=None,
        help="Search-R1's retrieval_server.py: serve the Lucene index with it (run by --lucene-python, "
        "which then needs its imports: fastapi, uvicorn, torch, faiss, transformers, datasets, pyserini)",
    )
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    golds = gold_questions()
    if not golds:
        raise SystemExit(f"no shared questions under {SHARED}: the recall figures need them")
    # The gold questions first (recall), then the same questions again as the timing load.
    queries = [q for q, _ in golds]
    qfile = args.work / "queries.json"
    qfile.write_text(
        json.dumps(
            {
                "queries": queries,
                "gold": [sorted(g) for _, g in golds],
                "gold_queries": list(range(len(golds))),
            }
        )
    )
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        corpus = args.work / f"corpus-{n}.jsonl"
        if not corpus.is_file():
            t = time.perf_counter()
            synthesise(corpus, n)
            print(
                f"synthesised {n:,} passages in {time.perf_counter() - t:.0f}s "
                f"({corpus.stat().st_size / 1e9:.2f} GB)",
                flush=True,
            )
        tops: dict[str, list[list[str]]] = {}
        for engine in args.engines.split(","):
            if engine == "lucene" and not args.lucene_jar:
                continue
            load_avg = round(os.getloadavg()[0], 2)
            out = args.work / f"index-{engine}-{n}"
            saved = args.work / f"build-{engine}-{n}.json"  # the build figures of a kept index
            if args.reuse and out.is_dir() and saved.is_file():
                build = json.loads(saved.read_text())
                print(f"reusing {out} (build figures from {saved}: an earlier run)", flush=True)
            elif engine == "lucene":
                shutil.rmtree(out, ignore_errors=True)
                build = lucene_build(args.lucene_jar, corpus, out)
            else:
                shutil.rmtree(out, ignore_errors=True)
                index_cmd = ["index", "--corpus", str(corpus), "--kind", "bm25", "--out", str(out)]
                build = measured([*SAGEGEN, *index_cmd, "-s", f"retrieval.bm25.engine={engine}"])
            if engine in args.keep.split(","):
                saved.write_text(json.dumps({k: v for k, v in build.items() if k != "stdout"}))
            row: dict[str, Any] = {
                "n": n,
                "engine": engine,
                "load_avg": load_avg,
                "corpus_gb": round(corpus.stat().st_size / 1e9, 3),
                "build_wall_s": build["wall_s"],
                "build_cpu_s": build["cpu_s"],
                "build_peak_rss_gb": build["peak_rss_gb"],
                "disk_gb": disk_gb(out),
            }
            if engine != "lucene":  # the passage store: what serving needs besides the engine's index
                row["store_gb"] = round(disk_gb(out) - disk_gb(out / "bm25"), 3)
            qout = args.work / f"q-{engine}-{n}.json"
            if engine == "lucene":
                q = lucene_queries(args.lucene_python, args.lucene_jar, out, qfile, qout)
            else:
                q = query_figures(out, qfile, qout)
            tops[engine] = q.pop("top10")
            q["load_avg_after"] = os.getloadavg()[0]
            row.update({k: round(v, 4) for k, v in q.items()})
            if engine != "lucene":
                row.update(server_figures(out, queries, args.serve_seconds, args.workers))
                row["workers"] = args.workers
            elif args.searchr1:  # Search-R1's own server, on the Lucene index just measured
                row.update(
                    searchr1_figures(args.lucene_python, args.searchr1, out, queries, args.serve_seconds)
                )
            print(json.dumps(row), flush=True)
            rows.append(row)
            if args.results:
                with args.results.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
            if engine not in args.keep.split(","):
                shutil.rmtree(out, ignore_errors=True)  # disk: a 3M index trio is several GB
        names = sorted(tops)
        for a_i, a in enumerate(names):
            for b in names[a_i + 1 :]:
                ov = np.mean(
                    [len(set(x) & set(y)) / max(1, len(x)) for x, y in zip(tops[a], tops[b], strict=True)]
                )
                print(f"n={n:,}: top-10 overlap {a}/{b} {ov:.3f}", flush=True)
    _summary(rows)


def _summary(rows: list[dict[str, Any]]) -> None:
    by = {(r["engine"], r["n"]): r for r in rows}
    ns = sorted({r["n"] for r in rows})
    print(
        "\n| passages | engine | load avg | build wall / CPU | peak RSS | disk | query CPU single / batched "
        "(exhaustive) | /retrieve 32 clients | 2,560-query request | recall@3 / @10 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in ns:
        for e in ("numpy", "tantivy", "lucene"):
            r = by.get((e, n))
            if r:
                rps = f"{r['rps_32']:.0f} req/s" if "rps_32" in r else "not run"
                b2560 = f"{r['batch2560_s']:.2f} s" if "batch2560_s" in r else "not run"
                if "batch2560_one_slot_s" in r:
                    b2560 += f" (one slot {r['batch2560_one_slot_s']:.2f} s)"
                ex = ""
                if "exhaustive_single_ms" in r:
                    ex = f" (exhaustive {r['exhaustive_single_ms']:.2f} / {r['exhaustive_batched_ms']:.2f})"
                print(
                    f"| {n:,} | {e} | {r.get('load_avg', float('nan')):.1f} | "
                    f"{r['build_wall_s']:.0f} s / {r['build_cpu_s']:.0f} s | "
                    f"{r['build_peak_rss_gb']:.2f} GB | {r['disk_gb']:.2f} GB | "
                    f"{r['single_ms']:.2f} / {r['batched_ms']:.2f} ms{ex} | {rps} | {b2560} | "
                    f"{r['recall@3']:.3f} / {r['recall@10']:.3f} |"
                )
    for e in ("numpy", "tantivy", "lucene"):
        tv = [by[(e, n)] for n in ns if (e, n) in by]
        if len(tv) < 2:
            continue
        a, b = tv[-2], tv[-1]
        print(
            f"{e} {a['n']:,} -> {b['n']:,} passages (x{b['n'] / a['n']:.1f}): peak RSS "
            f"x{b['build_peak_rss_gb'] / a['build_peak_rss_gb']:.2f}, query CPU single "
            f"x{b['single_ms'] / a['single_ms']:.2f}"
        )
    for n, e in ((n, e) for n in ns for e in ("numpy", "tantivy")):  # against Lucene, this run
        a, b = by.get(("lucene", n)), by.get((e, n))
        if a and b:
            print(
                f"{n:,} passages, {e} / lucene: build peak RSS "
                f"x{b['build_peak_rss_gb'] / a['build_peak_rss_gb']:.2f}, "
                f"build CPU x{b['build_cpu_s'] / a['build_cpu_s']:.2f}, query CPU single "
                f"x{b['single_ms'] / a['single_ms']:.2f}, batched x{b['batched_ms'] / a['batched_ms']:.2f}"
            )
    for n in ns:  # the ratio against the baseline (numpy engine) measured in this run
        a, b = by.get(("numpy", n)), by.get(("tantivy", n))
        if a and b:
            print(
                f"{n:,} passages, tantivy / numpy: build peak RSS "
                f"x{b['build_peak_rss_gb'] / a['build_peak_rss_gb']:.2f}, query CPU single "
                f"x{b['single_ms'] / a['single_ms']:.2f}, batched x{b['batched_ms'] / a['batched_ms']:.2f}, "
                f"/retrieve x{b['rps_32'] / a['rps_32']:.2f}"
            )
        if a and "exhaustive_single_ms" in a:  # pruned against exhaustive, same process
            print(
                f"{n:,} passages, numpy pruned / exhaustive query CPU: single "
                f"x{a['single_ms'] / a['exhaustive_single_ms']:.2f}, batched "
                f"x{a['batched_ms'] / a['exhaustive_batched_ms']:.2f}; top-10 identical for "
                f"{a['top10_equal_exhaustive']:.1%} of queries"
            )


if __name__ == "__main__":
    main()
