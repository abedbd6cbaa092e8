"""Solver calls and tokens per accepted pair with and without the shortcut pre-check, same seeds.

A simulated run over real BM25: a synthetic corpus of two-hop chains (``Org i was founded by Person
i.`` / ``Person i was born in YEAR.``) and a scripted generator that, per seed, writes either a
shortcut question naming the person (its answer sits in the top passage of the question itself) or a
two-hop question naming only the organisation; the reviser always rewrites to the two-hop form. The
scripted solver needs one search for a shortcut question, two for a two-hop one, and is wrong on a
tenth of the questions. Target S = 2, K = 4, 3 rounds, early stop on (the default). The same run is
then made a third time with ``pipeline.precheck_compare=true`` to count disagreements.

    python bench/bench_precheck.py --seeds 200
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from sagegen.config import load_config
from sagegen.ledger.store import RunStore
from sagegen.llm.scripted import ScriptedLLM
from sagegen.loop.session import Components, run_generate
from sagegen.records import Doc
from sagegen.retrieval.factory import open_corpus_and_retriever

FIRST = ["Ada", "Bela", "Cyra", "Dov", "Eli", "Fen", "Gus", "Hal", "Ira", "Jon"]
LAST = ["Marsh", "Quill", "Roan", "Stroud", "Tarn", "Umber", "Vance", "Wilde", "Yarrow", "Zell"]


def corpus(n: int) -> list[Doc]:
    docs = []
    for i in range(n):
        person = f"{FIRST[i % 10]} {LAST[(i // 10) % 10]} {i}"
        docs.append(Doc(id=f"org-{i}", title=f"Orgco{i}", text=f"Orgco{i} was founded by {person}."))
        docs.append(Doc(id=f"person-{i}", title=person, text=f"{person} was born in {1800 + i % 150}."))
    return docs


def h(s: str, mod: int) -> int:
    return int(hashlib.sha256(s.encode()).hexdigest(), 16) % mod


def responder(messages) -> str:
    contents = [str(m.get("content") or "") for m in messages]
    system = contents[0] if messages[0].get("role") == "system" else ""
    if "[correct_answer]" in contents[-1]:
        resp = re.search(r"\[response\]: (.*)", contents[-1]).group(1)
        gold = re.search(r"\[correct_answer\]: (.*)", contents[-1]).group(1)
        return f"correct: {'yes' if resp.strip() == gold.strip() else 'no'}"
    infos = sum(
        1
        for m, c in zip(messages, contents, strict=True)
        if m.get("role") == "user" and c.startswith("<information>")
    )
    if "answering_steps" in system:  # generator or reviser
        m = re.search(r"Orgco(\d+)|\w+ \w+ (\d+) was born", contents[1])
        i = int(m.group(1) or m.group(2)) if m else 0
        if infos < 1:
            return f"<think>look</think>\n<search> Orgco{i} founder </search>"
        person = f"{FIRST[i % 10]} {LAST[(i // 10) % 10]} {i}"
        year = 1800 + i % 150
        revising = "Your question:" in contents[1]
        q = (
            f"In which year was the founder of Orgco{i} born?"
            if revising or h(str(i), 2)
            else f"In which year was {person} born?"
        )
        return (
            f"<think>ok</think>\n<question> {q} </question>\n<answer> {year} </answer>\n"
            f"<answering_steps> 1. Who founded Orgco{i}? {person}. 2. When was {person} born? {year}"
        )
    q = re.search(r"Question: (.*)", contents[1]).group(1)
    m = re.search(r"Orgco(\d+)|(\d+) born", q)
    i = int(m.group(1) or m.group(2))
    need = 2 if "founder" in q else 1
    if infos < need:
        return f"<think>search</think>\n<search> {q if infos == 0 else 'born ' + str(i)} </search>"
    wrong = h(q + str(len(messages)), 10) == 0
    return f"<think>done</think>\n<answer> {1800 + i % 150 + (1 if wrong else 0)} </answer>"


def run(tmp: Path, docs_path: Path, seeds: int, name: str, sets: list[str]) -> dict:
    cfg = load_config(
        None,
        [
            f"corpus.path={docs_path}",
            f"retrieval.index_dir={tmp / 'idx'}",
            "llm.backend=scripted",
            "llm.model=bench",
            "llm.cache=false",
            "judge.method=llm",
            "judge.em_shortcut=false",
            f"pipeline.num_seeds={seeds}",
            "pipeline.target=2",
            "pipeline.attempts=4",
            "pipeline.rounds=3",
            "pipeline.concurrency=4",
            *sets,
        ],
    )
    docs, retriever = open_corpus_and_retriever(cfg)
    llm = ScriptedLLM(responder=responder)
    parts = Components(list(docs), retriever, llm, llm, llm)
    t0 = time.perf_counter()
    res = run_generate(cfg, tmp / name, parts=parts)
    secs = time.perf_counter() - t0
    with RunStore.open(tmp / name) as store:
        u = store.llm_usage()
        c = store.counts()
        events = [json.loads(e.message) for e in store.events() if e.kind == "precheck_compare"]
        pre = sum(1 for p in store.pairs() for r in p.rounds if r.verdict and r.verdict.source == "precheck")
    acc = c.get("output.dataset", 0)
    solver = u.get("solver", {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0})
    allc = sum(x["calls"] for x in u.values())
    allt = sum(x["prompt_tokens"] + x["completion_tokens"] for x in u.values())
    stoks = solver["prompt_tokens"] + solver["completion_tokens"]
    return {
        "run": name,
        "accepted": acc,
        "too_easy": c.get("too_easy", 0),
        "incorrect": c.get("incorrect", 0),
        "failed": c.get("failed", 0),
        "not_in_dataset": c.get("output.duplicate", 0),
        "precheck_verdicts": pre,
        "solver_calls": solver["calls"],
        "solver_tokens": stoks,
        "all_calls": allc,
        "all_tokens": allt,
        "solver_calls_per_accepted": solver["calls"] / acc if acc else None,
        "solver_tokens_per_accepted": stoks / acc if acc else None,
        "all_calls_per_accepted": allc / acc if acc else None,
        "all_tokens_per_accepted": allt / acc if acc else None,
        "compared": len(events),
        "disagree": sum(1 for e in events if not e["agree"]),
        "seconds": round(secs, 2),
        "pairs": res.stats.total,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--chains", type=int, default=500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        path = tmp / "corpus.jsonl"
        path.write_text(
            "".join(
                json.dumps({"id": x.id, "title": x.title, "text": x.text}) + "\n" for x in corpus(args.chains)
            )
        )
        rows = [
            run(tmp, path, args.seeds, "off", ["pipeline.precheck=off"]),
            run(tmp, path, args.seeds, "auto", []),
            run(tmp, path, args.seeds, "compare", ["pipeline.precheck_compare=true"]),
            run(
                tmp,
                path,
                args.seeds,
                "off-no-early-stop",
                ["pipeline.precheck=off", "pipeline.early_stop=false"],
            ),
            run(tmp, path, args.seeds, "auto-no-early-stop", ["pipeline.early_stop=false"]),
        ]
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    json.dump(rows, sys.stderr)


if __name__ == "__main__":
    main()
