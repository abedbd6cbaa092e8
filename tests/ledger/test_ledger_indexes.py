"""The ledger's per-pair writes and reads find their rows through an index, never a table scan: a scan
grows with the run (16 ms per ``finish_pair`` at 20k pairs, under the write lock; bench/bench_ledger.py),
and a ledger written before the indexes existed gets them from its next writer."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from sage_loop_helpers import RoleScript, answer, final, infos, loop_pipeline, search, small_config
from sagegen.ledger.store import RunStore
from sagegen.records import Candidate, Judgement, QAPair, Step, Trajectory, Verdict

INDEXES = {"pairs_by_output", "pairs_by_finish", "events_by_pair"}


def _open(run: Path) -> RunStore:
    cfg = small_config()
    store, _ = RunStore.create_or_resume(run, cfg.model_dump(mode="json"), cfg.dump())
    return store


def _qa(idx: int, question: str) -> QAPair:
    return QAPair(
        id=f"r-{idx}",
        question=question,
        answer="1889",
        answer_type="date",
        target=2,
        difficulty=2,
        avg_at_k=0.5,
        label="pass",
        round=1,
        seed_doc_id=f"d{idx}",
    )  # type: ignore[arg-type]


def _one_pair(store: RunStore, idx: int) -> None:
    """What the pipeline asks of the ledger for one pair (sagegen.loop.pipeline), in its order."""
    store.add_pair(idx, f"d{idx}", 2, "date")
    store.pair(idx)
    q = f"In which year was bridge {idx} opened?"
    cand = Candidate(question=q, answer="1889", answer_type="date", target=2, seed_doc_id=f"d{idx}")
    gen = Trajectory(agent="generator", question=q, steps=(Step(kind="search", query="q", hit_ids=("d2",)),))
    store.add_round(idx, 1, "generate", cand, f"p{idx}.r1.gen", gen)
    store.trajectory(f"p{idx}.r1.gen")
    for a in range(2):
        traj = Trajectory(agent="solver", question=q, answer="1889", steps=(Step(kind="search", query="s"),))
        store.add_attempt(idx, 1, a, 100 + a, f"p{idx}.r1.a{a}", traj, Judgement(correct=True, method="em"))
        store.record_call("solver", "m", 20, 4, 0.25, False)
    store.events(idx)
    store.event("ambiguity", '{"ambiguous": false}', idx, 1)
    store.set_verdict(
        idx, 1, Verdict(correct=True, difficulty=2, passed=True, avg_at_k=1.0, label="pass", num_attempts=2)
    )
    store.finish_pair(idx, "pass", 1, _qa(idx, q), "dataset", q.lower())


def _scans(conn: sqlite3.Connection, queries: list[str]) -> dict[str, list[str]]:
    """The queries whose ``EXPLAIN QUERY PLAN`` reads a whole table, with those plan lines."""
    out = {}
    for q in queries:
        plan = [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + q)]
        # SQLite words MAX() over an unindexed column "SEARCH pairs" (no index named): a scan too
        bad = [p for p in plan if p.startswith("SCAN") or (p.startswith("SEARCH") and "USING" not in p)]
        if bad:
            out[q] = bad
    return out


def _reads(statements: list[str]) -> list[str]:
    return [s for s in dict.fromkeys(statements) if re.match(r"\s*(SELECT|UPDATE|DELETE)", s, re.I)]


def test_no_per_pair_statement_scans_a_table(tmp_path: Path) -> None:
    store = _open(tmp_path / "run")
    try:
        store.begin_session()
        for i in range(20):  # earlier pairs, so the traced one's lookups have rows to pass over
            _one_pair(store, i)
        seen: list[str] = []
        store.conn.set_trace_callback(seen.append)
        _one_pair(store, 20)
        store.conn.set_trace_callback(None)
        queries = _reads(seen)
        assert any("norm_question" in q for q in queries), queries  # the duplicate check was traced
        assert any("FROM events" in q for q in queries), queries
        assert not _scans(store.conn, queries)
        # and the dedup still works through the index: the same question again is a duplicate
        store.add_pair(21, "d21", 2, "date")
        q = "In which year was bridge 3 opened?"
        assert store.finish_pair(21, "pass", 1, _qa(21, q), "dataset", q.lower()) is None
        assert store.pair(21).output == "duplicate"  # type: ignore[union-attr]
    finally:
        store.close()


async def test_a_pipeline_run_repeats_no_scan_per_pair(tmp_path: Path) -> None:
    """The same, over what the real pipeline sends: a statement it runs once per pair or more
    (literals aside) must not scan; a once-per-run read of every pair (resume, counts) may."""
    q = "In which year was the engineer of the 1889 Paris tower born?"
    script = RoleScript(
        generator=lambda m: search(f"q {infos(m)}") if infos(m) < 2 else final(f"{q} #{len(m) % 3}", "1832"),
        solver=lambda m: search(f"hop {infos(m)}") if infos(m) < 2 else answer("1832"),
    )
    pairs = 6
    pipe, store = loop_pipeline(tmp_path, small_config(num_seeds=pairs), script)
    seen: list[str] = []
    try:
        store.conn.set_trace_callback(seen.append)
        stats = await pipe.run()
        store.conn.set_trace_callback(None)
        assert stats.done == pairs

        def shape(sql: str) -> str:
            return re.sub(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?(?:e-?\d+)?\b", "?", sql)

        times: dict[str, int] = {}
        for sql in seen:
            times[shape(sql)] = times.get(shape(sql), 0) + 1
        per_pair = [sql for sql in _reads(seen) if times[shape(sql)] >= pairs]
        assert any("norm_question" in sql for sql in per_pair), per_pair  # finish_pair's check is among them
        assert not _scans(store.conn, per_pair)
    finally:
        store.close()


def test_a_ledger_without_the_indexes_gets_them_when_next_opened_for_writing(tmp_path: Path) -> None:
    store = _open(tmp_path / "run")
    store.begin_session()
    _one_pair(store, 0)
    for name in INDEXES:  # as a ledger written before they existed
        store.conn.execute(f"DROP INDEX {name}")
    store.close()

    def indexes() -> set[str]:
        conn = sqlite3.connect(tmp_path / "run" / "ledger.sqlite")
        try:
            return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        finally:
            conn.close()

    assert not INDEXES & indexes()
    with RunStore.open(tmp_path / "run") as ro:  # a reader neither needs nor adds them
        assert ro.pair(0).output == "dataset"  # type: ignore[union-attr]
    assert not INDEXES & indexes()
    _open(tmp_path / "run").close()  # the resume of `sagegen generate`
    assert indexes() >= INDEXES
