"""A generate run in a real process to kill and resume: its corpus, its command, the ledger's rows."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from sage_loop_helpers import DOCS, write_corpus
from sagegen.loop.session import quick_defaults
from sagegen.records import Doc

N = 16


def _corpus(path: Path) -> None:
    towns = [
        "Arden",
        "Brill",
        "Corvo",
        "Dunmore",
        "Elsdon",
        "Farrow",
        "Glenby",
        "Hallam",
        "Iver",
        "Jarrow",
        "Kelso",
        "Lydd",
        "Morpeth",
        "Nairn",
        "Olney",
        "Penrith",
        "Quorn",
        "Rye",
        "Settle",
        "Tring",
    ]
    docs = list(DOCS) + [
        Doc(
            id=f"t{i}",
            title=t,
            text=f"{t} is a market town founded in {1100 + 37 * i} on the river "
            f"{towns[(i + 7) % len(towns)]}water, known for its {TRADES[i % 4]} trade.",
        )
        for i, t in enumerate(towns)
    ]
    write_corpus(path, docs)


def _cmd(out: str, cache: str, delay: float = 0.03) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sagegen.cli.main",
        "generate",
        "--out",
        out,
        "--no-progress",
        "-n",
        str(N),
        "--target",
        "1-2",
        "--rounds",
        "2",
        "--k",
        "2",
        "--concurrency",
        "2",
        "-s",
        "corpus.path=corpus.jsonl",
        "-s",
        "retrieval.index_dir=idx",
        "-s",
        "judge.method=em",
        "-s",
        "llm.backend=scripted",
        "-s",
        f"llm.model=fixture:sage@{delay}",
        "-s",
        f"llm.cache_path={cache}",
        "-s",  # the kill must land among solver attempts; the pre-check would leave the fixture none
        "pipeline.precheck=off",
    ]


def _rows(db: Path, sql: str) -> list[Any]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _outcome(run: Path) -> dict[str, Any]:
    """The ledger rows that make the dataset, byte for byte, and the output files in an order-free form."""
    db = run / "ledger.sqlite"
    pairs = _rows(
        db,
        "SELECT idx, seed_doc_id, target, answer_type, state, final_round, qa_json FROM pairs ORDER BY idx",
    )
    rounds = _rows(
        db,
        "SELECT pair_idx, round, kind, candidate_json, gen_trace_id, verdict_json, label "
        "FROM rounds ORDER BY 1, 2",
    )
    attempts = _rows(
        db,
        "SELECT pair_idx, round, attempt, seed, trace_id, judgement_json, num_searches, "
        "correct FROM attempts ORDER BY 1, 2, 3",
    )
    # Which of two pairs with the same question is written and which is the duplicate depends on which
    # finished first; the questions each file holds do not.
    written = sorted(_rows(db, "SELECT output, norm_question FROM pairs WHERE finished IS NOT NULL"))
    files = {}
    for name in ("dataset.jsonl", "too_easy.jsonl", "unsolved.jsonl"):
        rows = [json.loads(x) for x in (run / name).read_text().splitlines()]  # every line parses
        assert len({r["id"] for r in rows}) == len(rows), f"{name} holds a pair twice"
        files[name] = sorted(r["question"] for r in rows)
    return {"pairs": pairs, "rounds": rounds, "attempts": attempts, "written": written, "files": files}


TRADES = ["wool", "salt", "lace", "clocks"]


def ray_settings(cache: str, *extra: str, delay: float = 0.02) -> list[str]:
    """The ``-s`` settings of the Ray tests' run: N seeds of the scripted sage model over ``_corpus``."""
    return [
        *quick_defaults(),
        f"pipeline.num_seeds={N}",
        "pipeline.target=1-2",
        "pipeline.rounds=2",
        "pipeline.attempts=2",
        "pipeline.concurrency=2",
        "corpus.path=corpus.jsonl",
        "retrieval.index_dir=idx",
        "judge.method=em",
        "llm.backend=scripted",
        f"llm.model=fixture:sage@{delay}",
        f"llm.cache_path={cache}",
        "pipeline.precheck=off",
        *extra,
    ]
