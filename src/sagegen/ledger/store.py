"""The run ledger: one SQLite database (WAL) per run directory, written as things happen.

A run directory ``runs/<name>/`` holds

- ``config.yaml``     the resolved configuration of the run;
- ``ledger.sqlite``   this ledger (the source of truth);
- ``dataset.jsonl``   accepted pairs (``QAPair`` lines, label ``pass``);
- ``too_easy.jsonl``  pairs solved in fewer than S searches after the last round;
- ``unsolved.jsonl``  pairs no attempt solved after the last round (the paper drops them; we keep them).

The three JSONL files are *views* of the ledger: each line is appended (flush + fsync) only after
the ledger transaction that records it has committed, and :meth:`RunStore.rebuild_outputs`
rewrites them from the ledger, so a line half-written when the process was killed never survives
a resume.

Read API (for analysis/export; stable)::

    from sagegen.ledger.store import RunStore

    with RunStore.open("runs/NAME") as store:      # read-only unless readonly=False
        store.config                               # resolved config (dict) of the run
        store.counts()                             # {"pairs", "pass", "too_easy", "output.dataset",
                                                   #  "duplicate.pass", "attempts", "llm_calls", ...}
        for pair in store.pairs():                 # PairRecord, ordered by pair index
            pair.index, pair.state, pair.target, pair.answer_type, pair.seed_doc_id
            pair.qa                                # QAPair | None (set once the pair is finished)
            for rnd in pair.rounds:                # RoundRecord, ordered by round number
                rnd.round, rnd.kind, rnd.candidate, rnd.gen_trace_id, rnd.verdict
                for att in rnd.attempts:           # AttemptRecord, ordered by attempt index
                    att.index, att.seed, att.trace_id, att.judgement, att.num_searches
        store.trajectory(trace_id)                 # -> Trajectory
        store.trajectories(agent="solver")         # iterate (trace_id, Trajectory)
        store.llm_usage()                          # {role: {"calls", "cached", "prompt_tokens", ...}}
        store.events(pair_index=None)              # list[EventRecord]
        store.round_stats()                        # {round: {label: count}}
        store.label_means()                        # {label: {"pairs", "difficulty", "avg_at_k", "round"}}

Pair states: ``pending`` (no round yet), ``running`` (rounds in progress), ``pass``,
``too_easy``, ``incorrect`` (final label after the last round), ``failed`` (the generator never
produced a parsable pair). ``PairRecord.output`` says which file the pair went to
(``dataset`` / ``too_easy`` / ``unsolved``), ``duplicate`` when its normalised question had
already been written to that file, or ``None``.

Every write is its own transaction, so a SIGKILL loses at most the unit in progress (one
generation, one attempt); ``sagegen generate`` reruns resume from exactly there.

The one exception is the **write window** of LLM call accounting (``llm_calls``, ``llm_tries``,
``llm_endpoints``): inside an event loop, :meth:`RunStore.record_call` queues its rows and they are
committed together, at the latest ``CALL_WINDOW_S`` after the first of them or once
``CALL_WINDOW_ROWS`` are queued, and always inside the next other write's transaction (a round,
an attempt, a verdict, a pair's end, an event, the session's end) and on ``close()``. A call booked
``CALL_WINDOW_S`` or more after the one before is committed at once: sparse calls gain nothing from
a window. One commit per call was the largest share of the ledger's CPU at 256 calls in flight.
So what a SIGKILL may lose is exactly: the calls in flight, plus the bookings of calls that
finished within the last window (at most ``CALL_WINDOW_S`` or ``CALL_WINDOW_ROWS`` calls) and whose
unit (attempt, generation) was not yet recorded. Nothing a unit records is lost with them: a
unit's transaction carries every call booked before it. With the call cache on, such a call is
replayed as a cache hit on resume, never paid twice. Outside a loop the rows are written at once, as before.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, overload

from pydantic import BaseModel

from sagegen.config import semantic_view, strip_volatile, volatile_keys
from sagegen.errors import ConfigError, SagegenError, mask_url_credentials, without_url_credentials
from sagegen.ledger.damage import LedgerError, keep_or_force, ledger_error
from sagegen.ledger.outcomes import OUTPUT_FILES
from sagegen.records import AnswerType, Candidate, Judgement, QAPair, Trajectory, Verdict

_M = TypeVar("_M", bound=BaseModel)
_S = TypeVar("_S", bound="RunStore")  # open() gives the class it is called on (SharedStore too)

LEDGER = "ledger.sqlite"
CONFIG_FILE = "config.yaml"
#: Beside the ledger of a run made by ``sagegen import``: what the release's files say about the run.
IMPORT_FILE = "import.json"
#: 2 added ``llm_tries``; a version-1 ledger is migrated (the table is created) when next written.
#: ``llm_endpoints`` and ``llm_replies`` (finish reason, reasoning, empty answers per call) came later
#: without a bump: a table only added, created by the next writer,
#: read as absent before that, and ignored by an older sagegen. So did the three indexes: a ledger
#: without them gets them from its next writer. Without them every ``finish_pair`` scanned the
#: pairs table twice (the duplicate check, the next ``finish_seq``), holding the write lock: 0.15 ms
#: at the first thousand pairs, 16 ms at 20k (bench/bench_ledger.py).
SCHEMA_VERSION = 2
#: The write window of LLM call bookings (see the module docstring): at most this many seconds...
CALL_WINDOW_S = 0.05
#: ... or this many calls are queued before they are committed in one transaction.
CALL_WINDOW_ROWS = 64

#: Config keys that may differ on resume (``pipeline.num_seeds`` may grow to extend a run): derived from
#: the ``VOLATILE`` marks on the fields themselves, the one list (``sagegen.config``).
VOLATILE_KEYS = tuple(volatile_keys())

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL, ended REAL, status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pairs (
    idx INTEGER PRIMARY KEY, seed_doc_id TEXT NOT NULL, target INTEGER NOT NULL,
    answer_type TEXT NOT NULL, state TEXT NOT NULL, final_round INTEGER,
    qa_json TEXT, norm_question TEXT, output TEXT, finish_seq INTEGER,
    started REAL NOT NULL, finished REAL
);
CREATE TABLE IF NOT EXISTS rounds (
    pair_idx INTEGER NOT NULL, round INTEGER NOT NULL, kind TEXT NOT NULL,
    candidate_json TEXT, gen_trace_id TEXT, verdict_json TEXT, label TEXT,
    created REAL NOT NULL, verified REAL,
    PRIMARY KEY (pair_idx, round)
);
CREATE TABLE IF NOT EXISTS attempts (
    pair_idx INTEGER NOT NULL, round INTEGER NOT NULL, attempt INTEGER NOT NULL,
    seed INTEGER NOT NULL, trace_id TEXT NOT NULL, judgement_json TEXT NOT NULL,
    num_searches INTEGER NOT NULL, correct INTEGER NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (pair_idx, round, attempt)
);
CREATE TABLE IF NOT EXISTS trajectories (
    id TEXT PRIMARY KEY, agent TEXT NOT NULL, pair_idx INTEGER, round INTEGER,
    json TEXT NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS llm_calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT, role TEXT NOT NULL, model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, seconds REAL NOT NULL,
    cached INTEGER NOT NULL, error TEXT, session INTEGER, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS llm_replies (
    call_id INTEGER PRIMARY KEY, role TEXT NOT NULL, finish_reason TEXT, reasoning_tokens INTEGER NOT NULL,
    reasoning_chars INTEGER NOT NULL, empty INTEGER NOT NULL, session INTEGER
);
CREATE TABLE IF NOT EXISTS llm_tries (
    id INTEGER PRIMARY KEY AUTOINCREMENT, call_id INTEGER NOT NULL, role TEXT NOT NULL, try INTEGER NOT NULL,
    status INTEGER, error TEXT, seconds REAL NOT NULL, wait REAL NOT NULL, session INTEGER,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS llm_endpoints (
    session INTEGER NOT NULL, model TEXT NOT NULL, endpoint TEXT NOT NULL, calls INTEGER NOT NULL,
    failures INTEGER NOT NULL, in_flight INTEGER NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (session, model, endpoint)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, pair_idx INTEGER, round INTEGER, kind TEXT NOT NULL,
    message TEXT NOT NULL, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS pairs_by_output ON pairs(output, norm_question);
CREATE INDEX IF NOT EXISTS pairs_by_finish ON pairs(finish_seq);
CREATE INDEX IF NOT EXISTS events_by_pair ON events(pair_idx);
"""


@dataclass(frozen=True)
class AttemptRecord:
    index: int
    seed: int
    trace_id: str
    judgement: Judgement
    num_searches: int


@dataclass(frozen=True)
class RoundRecord:
    round: int
    kind: str  # "generate", "feedback", "resample"
    candidate: Candidate | None  # None: the generator failed to produce a parsable pair
    gen_trace_id: str | None
    verdict: Verdict | None  # None until every needed attempt is stored
    attempts: tuple[AttemptRecord, ...] = ()


@dataclass(frozen=True)
class PairRecord:
    index: int
    seed_doc_id: str
    target: int
    answer_type: AnswerType
    state: str
    final_round: int | None
    qa: QAPair | None
    output: str | None
    rounds: tuple[RoundRecord, ...] = ()


@dataclass(frozen=True)
class EventRecord:
    pair_index: int | None
    round: int | None
    kind: str
    message: str
    created: float


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists stay values."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten(v, key))
            else:
                out[key] = v
    else:
        out[prefix] = data
    return out


def semantic_config(config: dict[str, Any]) -> dict[str, Any]:
    """The flattened config keys that decide what a run produces (volatile fields dropped)."""
    return flatten(strip_volatile(config))


def config_hash(config: dict[str, Any]) -> str:
    blob = json.dumps(semantic_config(config), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose (semantic) value differs, with both values, for the refusal message.

    ``old`` is the stored config: a key it lacks counts at its default, so new keys alone never block a
    resume.
    """
    a, b = (flatten(x) for x in semantic_view(old, new))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


class RunStore:
    """The ledger of one run. Use :meth:`open` to read an existing run, :meth:`create_or_resume` to write."""

    def __init__(self, run_dir: Path, conn: sqlite3.Connection, readonly: bool):
        self.run_dir = run_dir
        self.conn = conn
        self.readonly = readonly
        self.session_id: int | None = None
        # The write window: (call row, its tries, its reply facts or None).
        self._pending: list[tuple[tuple[Any, ...], list[tuple[Any, ...]], tuple[Any, ...] | None]] = []
        self._flush_at: asyncio.TimerHandle | None = None
        self._flush_error: BaseException | None = None
        self._last_booked = 0.0  # time.time() of the last call booked
        #: Backends whose per-endpoint counts are booked with the calls (``watch_endpoints``).
        self._endpoint_sources: dict[int, Any] = {}
        self._lock: Any = None  # the run lock, when create_or_resume took it (released by close)
        self._resumed = False

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls: type[_S], run_dir: str | Path, *, readonly: bool = True) -> _S:
        """Open an existing run directory (read-only by default)."""
        run_dir = Path(run_dir)
        path = run_dir / LEDGER
        if not path.is_file():
            raise SagegenError(f"{run_dir}: not a sagegen run directory (no {LEDGER})")
        _check_file(path)
        if readonly:
            # On a read-only directory nobody can be writing, and SQLite could not create the WAL
            # index (-shm) a reader needs: read the file as immutable instead.
            ro = "mode=ro" + ("&immutable=1" if not os.access(run_dir, os.W_OK) else "")
            conn = _connect(path, f"file:{path}?{ro}", uri=True)
        else:
            conn = _connect(path, path)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=10000")
        store = cls(run_dir, conn, readonly)
        try:
            _check_ledger(conn, path, created=False)
        except BaseException:
            conn.close()
            raise
        return store

    @classmethod
    def create_or_resume(
        cls, run_dir: str | Path, config: dict[str, Any], config_yaml: str, *, force: bool = False
    ) -> tuple[RunStore, bool]:
        """Open ``run_dir`` for writing: a fresh run, or a resume when the config matches.

        Returns ``(store, resumed)``. A differing config raises ``ConfigError`` naming the keys,
        unless ``force`` (then the old ledger and outputs are discarded and the run starts afresh).
        """
        from sagegen.ledger.lock import DirLock, holds

        run_dir = Path(run_dir)
        path = run_dir / LEDGER
        # Credentials written into a URL (llm.base_url=http://user:password@...) are never stored: the
        # live process has them; a resume gets them from its own command line (base_url is volatile).
        config, config_yaml = without_url_credentials(config), mask_url_credentials(config_yaml)
        # One writer per run, before anything is read or deleted: a live writer there (a generate,
        # an import) is refused here, so --force can never delete a run that is being written.
        lock = None if holds(run_dir) else DirLock(run_dir, "run").acquire()
        try:
            store = cls._create_or_resume(run_dir, path, config, config_yaml, force=force)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        store._lock = lock
        return store, store._resumed

    @classmethod
    def _create_or_resume(
        cls, run_dir: Path, path: Path, config: dict[str, Any], config_yaml: str, *, force: bool
    ) -> RunStore:
        if path.is_file() and force:
            for name in [LEDGER, f"{LEDGER}-wal", f"{LEDGER}-shm", CONFIG_FILE, *OUTPUT_FILES.values()]:
                (run_dir / name).unlink(missing_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            _check_file(path)
        conn = _connect(path, path)
        conn.row_factory = sqlite3.Row
        store = cls(run_dir, conn, readonly=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=10000")
            # A ledger without a recorded config holds no run yet (0 bytes, or killed while being
            # created): nothing in it can be lost, so it is simply started as a new run.
            resumed = _check_ledger(conn, path, created=True)
            conn.executescript(_SCHEMA)  # CREATE ... IF NOT EXISTS: also upgrades a ledger missing a table
        except BaseException:
            conn.close()
            raise
        if resumed and store._meta("schema_version") != str(SCHEMA_VERSION):
            with store._tx():  # the executescript above made what an older ledger lacked
                store._set_meta("schema_version", str(SCHEMA_VERSION))
        if not resumed:
            with store._tx():
                store._set_meta("schema_version", str(SCHEMA_VERSION))
                store._set_meta("config", json.dumps(config, sort_keys=True))
                store._set_meta("config_hash", config_hash(config))
                store._set_meta("created", str(time.time()))
        else:
            old = store.config
            diff = config_diff(old, config)
            if diff:
                store.close()
                raise ConfigError(
                    f"{run_dir} holds a run with a different configuration:\n  "
                    + "\n  ".join(diff)
                    + "\nrerun with the original settings to resume it, pass --new-run to start a new run "
                    "directory next to it, or --force to discard it and start over"
                )
            with store._tx():  # volatile keys (e.g. a larger num_seeds) take the new values
                store._set_meta("config", json.dumps(config, sort_keys=True))
        _atomic_write(run_dir / CONFIG_FILE, config_yaml)
        store._resumed = resumed
        return store

    def close(self) -> None:
        try:
            if not self.readonly and (self._pending or self._endpoint_sources):
                self.flush()
        finally:
            self.conn.close()
            lock, self._lock = self._lock, None
            if lock is not None:  # taken by create_or_resume: this store was the run's writer
                lock.release()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tx(self) -> _Tx:
        return _Tx(self.conn, self._write_window if self._pending else None)

    def _set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def _meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row["value"] if row else None

    @property
    def config(self) -> dict[str, Any]:
        raw = self._meta("config")
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise self._bad_row("meta", "value", "key 'config'", f"not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise self._bad_row("meta", "value", "key 'config'", "not a JSON object")
        return data

    @property
    def config_hash(self) -> str:
        return self._meta("config_hash") or ""

    # ------------------------------------------------------------------ sessions

    def begin_session(self) -> int:
        with self._tx():
            # Only the lock holder writes (sagegen.ledger.lock), so a session still "running" is one whose
            # process died (SIGKILL, OOM, power): say so instead of showing it running forever.
            self.conn.execute("UPDATE sessions SET status='interrupted' WHERE status='running'")
            cur = self.conn.execute(
                "INSERT INTO sessions(started, status) VALUES (?, 'running')", (time.time(),)
            )
        self.session_id = int(cur.lastrowid or 0)
        return self.session_id

    def end_session(self, status: str) -> None:
        if self.session_id is None:
            return
        with _Tx(self.conn, self._write_window):  # the window's last calls, the endpoints' final counts
            self.conn.execute(
                "UPDATE sessions SET ended=?, status=? WHERE id=?", (time.time(), status, self.session_id)
            )

    # ------------------------------------------------------------------ writes

    def add_pair(self, idx: int, seed_doc_id: str, target: int, answer_type: AnswerType) -> None:
        with self._tx():
            self.conn.execute(
                "INSERT OR IGNORE INTO pairs(idx, seed_doc_id, target, answer_type, state, started) "
                "VALUES (?, ?, ?, ?, 'pending', ?)",
                (idx, seed_doc_id, target, answer_type, time.time()),
            )

    def add_round(
        self,
        pair_idx: int,
        rnd: int,
        kind: str,
        candidate: Candidate | None,
        gen_trace_id: str,
        trajectory: Trajectory,
    ) -> None:
        """Record one generation (or revision) and its trajectory, in one transaction."""
        now = time.time()
        row = self._trajectory_row(gen_trace_id, trajectory, pair_idx, rnd, now)  # encoded before the lock
        cand = candidate.to_json() if candidate else None
        with self._tx():
            self._put_trajectory(row)
            self.conn.execute(
                "INSERT OR REPLACE INTO rounds(pair_idx, round, kind, candidate_json, gen_trace_id, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (pair_idx, rnd, kind, cand, gen_trace_id, now),
            )
            self.conn.execute("UPDATE pairs SET state='running' WHERE idx=? AND state='pending'", (pair_idx,))

    @staticmethod
    def _trajectory_row(
        tid: str, trajectory: Trajectory, pair_idx: int, rnd: int, now: float
    ) -> tuple[Any, ...]:
        # Rows are encoded before ``BEGIN IMMEDIATE``: the write lock (which the other ``--workers``
        # wait on, their event loops blocked) is held for the SQL alone, not for the JSON.
        return (tid, trajectory.agent, pair_idx, rnd, trajectory.to_json(), now)

    def _put_trajectory(self, row: tuple[Any, ...]) -> None:
        """Store a trajectory row (``_trajectory_row``); call inside the transaction that records
        what produced it."""
        self.conn.execute(
            "INSERT OR REPLACE INTO trajectories(id, agent, pair_idx, round, json, created) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            row,
        )

    def add_attempt(
        self,
        pair_idx: int,
        rnd: int,
        attempt: int,
        seed: int,
        tid: str,
        trajectory: Trajectory,
        judgement: Judgement,
    ) -> None:
        """Record one solver attempt, its trajectory and its judgement, in one transaction."""
        now = time.time()
        row = self._trajectory_row(tid, trajectory, pair_idx, rnd, now)
        attempt_row = (
            pair_idx,
            rnd,
            attempt,
            seed,
            tid,
            judgement.to_json(),
            trajectory.num_searches,
            int(judgement.correct),
            now,
        )
        with self._tx():
            self._put_trajectory(row)
            self.conn.execute(
                "INSERT OR REPLACE INTO attempts(pair_idx, round, attempt, seed, trace_id, judgement_json, "
                "num_searches, correct, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                attempt_row,
            )

    def add_trajectory(self, tid: str, trajectory: Trajectory, pair_idx: int, rnd: int) -> None:
        """Store a trajectory that is no solver attempt (e.g. the pre-check's shortcut trace)."""
        row = self._trajectory_row(tid, trajectory, pair_idx, rnd, time.time())
        with self._tx():
            self._put_trajectory(row)

    def set_verdict(self, pair_idx: int, rnd: int, verdict: Verdict) -> None:
        row = (verdict.to_json(), verdict.label, time.time(), pair_idx, rnd)
        with self._tx():
            self.conn.execute(
                "UPDATE rounds SET verdict_json=?, label=?, verified=? WHERE pair_idx=? AND round=?", row
            )

    def finish_pair(
        self,
        pair_idx: int,
        state: str,
        final_round: int | None,
        qa: QAPair | None,
        output: str | None,
        norm_question: str | None,
    ) -> str | None:
        """Mark a pair finished; returns the output file key to append to (``None``: nothing to write).

        Deduplication happens here, inside the transaction: a pair whose normalised question was
        already written to the same output is recorded with ``output='duplicate'``.
        """
        qa_json = qa.to_json() if qa else None
        with self._tx():
            if output is not None and norm_question:
                dup = self.conn.execute(
                    "SELECT idx FROM pairs WHERE output=? AND norm_question=? AND idx<>?",
                    (output, norm_question, pair_idx),
                ).fetchone()
                if dup is not None:
                    output = "duplicate"
            seq = self.conn.execute("SELECT COALESCE(MAX(finish_seq), 0) + 1 FROM pairs").fetchone()[0]
            self.conn.execute(
                "UPDATE pairs SET state=?, final_round=?, qa_json=?, norm_question=?, output=?, "
                "finish_seq=?, finished=? WHERE idx=?",
                (
                    state,
                    final_round,
                    qa_json,
                    norm_question,
                    output,
                    seq,
                    time.time(),
                    pair_idx,
                ),
            )
        return output if output in OUTPUT_FILES else None

    def record_call(
        self,
        role: str,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        seconds: float,
        cached: bool,
        error: str | None = None,
        *,
        tries: Sequence[Any] = (),
        reply: Any = None,
    ) -> None:
        """One call and (``tries``: objects with status/seconds/wait/error) each request it sent.

        Inside an event loop the rows join the write window (module docstring); else written at once.
        """
        if self._flush_error is not None:  # a window flush failed in a loop callback: say so here
            err, self._flush_error = self._flush_error, None
            raise err
        now = time.time()
        call = (
            role,
            model,
            prompt_tokens,
            completion_tokens,
            seconds,
            int(cached),
            error,
            self.session_id,
            now,
        )
        # A call that comes a whole window after the one before has nothing to share a commit with:
        # written at once, while the process is awake anyway, rather than by a timer that would wake
        # an idle one (at 1 call in flight that timer cost 0.3-0.45 ms of the 2.1-4.1 ms CPU per call).
        alone = not self._pending and now - self._last_booked >= CALL_WINDOW_S
        self._last_booked = now
        facts = (
            None
            if reply is None
            else (
                role,
                reply.finish_reason,
                reply.reasoning_tokens,
                reply.reasoning_chars,
                int(reply.empty),
                self.session_id,
            )
        )
        self._pending.append(
            (
                call,
                [
                    (role, i, t.status, t.error or None, t.seconds, t.wait, self.session_id, now)
                    for i, t in enumerate(tries)
                ],
                facts,
            )
        )
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or alone or len(self._pending) >= CALL_WINDOW_ROWS:
            self.flush()
        elif self._flush_at is None:
            self._flush_at = loop.call_later(CALL_WINDOW_S, self._flush_window)

    def watch_endpoints(self, model: str, source: Any) -> None:
        """Book ``source.endpoint_counts()`` (per endpoint: calls, failures, in_flight) under ``model``
        with every window of calls and at the session's end."""
        self._endpoint_sources[id(source)] = (model, source)

    def flush(self) -> None:
        """Commit the queued call bookings (and the endpoint counts) now."""
        with _Tx(self.conn, self._write_window):
            pass

    def _flush_window(self) -> None:
        self._flush_at = None
        try:
            if self._pending:
                self.flush()
        except Exception as e:  # a loop callback cannot raise to anyone: the next booking raises it
            self._flush_error = e

    def _write_window(self) -> None:
        """Inside an open transaction: write the queued calls, their tries and the endpoint counts."""
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        pending, self._pending = self._pending, []
        try:
            for call, tries, facts in pending:
                cur = self.conn.execute(
                    "INSERT INTO llm_calls(role, model, prompt_tokens, completion_tokens, seconds, cached, "
                    "error, session, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    call,
                )
                if facts is not None:
                    self.conn.execute(
                        "INSERT INTO llm_replies(call_id, role, finish_reason, reasoning_tokens, "
                        "reasoning_chars, empty, session) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (cur.lastrowid, *facts),
                    )
                if tries:
                    self.conn.executemany(
                        "INSERT INTO llm_tries(call_id, role, try, status, error, seconds, wait, session, "
                        "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [(cur.lastrowid, *t) for t in tries],
                    )
            self._write_endpoints()
        except BaseException:
            self._pending[:0] = pending  # the transaction rolls back: keep them for the next one
            raise

    def _write_endpoints(self) -> None:
        if self.session_id is None or not self._endpoint_sources:
            return
        now = time.time()
        rows = [
            (self.session_id, model, c["endpoint"], c["calls"], c["failures"], c["in_flight"], now)
            for model, src in self._endpoint_sources.values()
            for c in src.endpoint_counts()
        ]
        self.conn.executemany(
            "INSERT OR REPLACE INTO llm_endpoints(session, model, endpoint, calls, failures, in_flight, "
            "updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def event(self, kind: str, message: str, pair_idx: int | None = None, rnd: int | None = None) -> None:
        with self._tx():
            self.conn.execute(
                "INSERT INTO events(pair_idx, round, kind, message, created) VALUES (?, ?, ?, ?, ?)",
                (pair_idx, rnd, kind, message, time.time()),
            )

    # ------------------------------------------------------------------ outputs

    def append_output(self, key: str, qa: QAPair) -> None:
        """Append one line to an output file, flushed and fsynced (called after the ledger commit)."""
        with open(self.run_dir / OUTPUT_FILES[key], "a", encoding="utf-8") as f:
            f.write(qa.to_json() + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rebuild_outputs(self) -> dict[str, int]:
        """Rewrite the three JSONL files from the ledger (atomic replace), in finishing order."""
        lines: dict[str, list[str]] = {k: [] for k in OUTPUT_FILES}
        for row in self.conn.execute(
            "SELECT output, qa_json FROM pairs WHERE qa_json IS NOT NULL ORDER BY finish_seq"
        ):
            if row["output"] in lines:
                lines[row["output"]].append(row["qa_json"])
        for key, name in OUTPUT_FILES.items():
            _atomic_write(self.run_dir / name, "".join(x + "\n" for x in lines[key]))
        return {k: len(v) for k, v in lines.items()}

    # ------------------------------------------------------------------ reads

    @overload
    def _decode(self, model: type[_M], raw: str, table: str, column: str, row: str) -> _M: ...
    @overload
    def _decode(self, model: type[_M], raw: str | None, table: str, column: str, row: str) -> _M | None: ...

    def _decode(self, model: type[_M], raw: str | None, table: str, column: str, row: str) -> _M | None:
        """A row's JSON column as ``model`` (None for NULL or empty); a value that does not parse is
        damage, said in one line naming the table, row and column."""
        if not raw:
            return None
        try:
            return model.model_validate_json(raw)
        except ValueError as e:  # pydantic's ValidationError is a ValueError
            # pydantic's first problem, without the echoed value (a whole trajectory) or its URL
            first = (str(e).splitlines()[1:2] or [str(e)])[0].split(" [type=")[0].strip()
            raise self._bad_row(table, column, row, f"not valid ({first})") from None

    def _bad_row(self, table: str, column: str, row: str, problem: str) -> LedgerError:
        path = self.run_dir / LEDGER
        return LedgerError(
            f"{path}: table {table}, {row}, column {column}: {problem}; the ledger was "
            f"altered or damaged: {keep_or_force(path)}"
        )

    def pair(self, idx: int) -> PairRecord | None:
        row = self.conn.execute("SELECT * FROM pairs WHERE idx=?", (idx,)).fetchone()
        return self._pair_from_row(row) if row else None

    def pairs(self, *, state: str | None = None) -> Iterator[PairRecord]:
        """Every pair with its rounds and attempts, ordered by pair index (optionally one state)."""
        sql = "SELECT * FROM pairs"
        args: tuple[str, ...] = ()
        if state is not None:
            sql, args = sql + " WHERE state=?", (state,)
        rows = self.conn.execute(sql + " ORDER BY idx", args).fetchall()
        for row in rows:
            yield self._pair_from_row(row)

    def _pair_from_row(self, row: sqlite3.Row) -> PairRecord:
        idx = row["idx"]
        atts: dict[int, list[AttemptRecord]] = {}
        for a in self.conn.execute("SELECT * FROM attempts WHERE pair_idx=? ORDER BY round, attempt", (idx,)):
            atts.setdefault(a["round"], []).append(
                AttemptRecord(
                    index=a["attempt"],
                    seed=a["seed"],
                    trace_id=a["trace_id"],
                    judgement=self._decode(
                        Judgement,
                        a["judgement_json"],
                        "attempts",
                        "judgement_json",
                        f"pair {idx} round {a['round']} attempt {a['attempt']}",
                    ),
                    num_searches=a["num_searches"],
                )
            )
        rounds = []
        for r in self.conn.execute("SELECT * FROM rounds WHERE pair_idx=? ORDER BY round", (idx,)):
            cand = r["candidate_json"]
            where = f"pair {idx} round {r['round']}"
            rounds.append(
                RoundRecord(
                    round=r["round"],
                    kind=r["kind"],
                    candidate=self._decode(Candidate, cand, "rounds", "candidate_json", where),
                    gen_trace_id=r["gen_trace_id"],
                    verdict=self._decode(Verdict, r["verdict_json"], "rounds", "verdict_json", where),
                    attempts=tuple(atts.get(r["round"], [])),
                )
            )
        return PairRecord(
            index=idx,
            seed_doc_id=row["seed_doc_id"],
            target=row["target"],
            answer_type=row["answer_type"],
            state=row["state"],
            final_round=row["final_round"],
            qa=self._decode(QAPair, row["qa_json"], "pairs", "qa_json", f"pair {idx}"),
            output=row["output"],
            rounds=tuple(rounds),
        )

    def trajectory(self, tid: str) -> Trajectory:
        row = self.conn.execute("SELECT json FROM trajectories WHERE id=?", (tid,)).fetchone()
        if row is None:
            raise KeyError(tid)
        return self._decode(Trajectory, row["json"], "trajectories", "json", f"trajectory {tid}")

    def trajectories(self, agent: str | None = None) -> Iterator[tuple[str, Trajectory]]:
        sql = "SELECT id, json FROM trajectories"
        args: tuple[str, ...] = ()
        if agent is not None:
            sql, args = sql + " WHERE agent=?", (agent,)
        for row in self.conn.execute(sql + " ORDER BY pair_idx, round, id", args).fetchall():
            tid = row["id"]
            yield tid, self._decode(Trajectory, row["json"], "trajectories", "json", f"trajectory {tid}")

    def counts(self) -> dict[str, int]:
        """Pairs by state and by output file, plus rounds/attempts/trajectories/calls totals."""
        out: dict[str, int] = {"pairs": 0}
        for row in self.conn.execute("SELECT state, COUNT(*) AS n FROM pairs GROUP BY state"):
            out[row["state"]] = row["n"]
            out["pairs"] += row["n"]
        for row in self.conn.execute(
            "SELECT output, COUNT(*) AS n FROM pairs WHERE output IS NOT NULL GROUP BY output"
        ):
            out[f"output.{row['output']}"] = row["n"]
        for row in self.conn.execute(
            "SELECT state, COUNT(*) AS n FROM pairs WHERE output='duplicate' GROUP BY state"
        ):
            out[f"duplicate.{row['state']}"] = row["n"]
        for table in ("rounds", "attempts", "trajectories", "llm_calls", "events"):
            out[table] = self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        out["finished"] = sum(out.get(s, 0) for s in ("pass", "too_easy", "incorrect", "failed"))
        return out

    def outcomes(self) -> dict[str, int]:
        """Pairs per outcome (``sagegen.ledger.outcomes``): the one count status, summary and funnel show."""
        from sagegen.ledger.outcomes import outcome_counts

        rows = self.conn.execute("SELECT state, output FROM pairs")
        return outcome_counts((r["state"], r["output"]) for r in rows)

    def round_stats(self) -> dict[int, dict[str, int]]:
        """Per round number: how many rounds were generated, failed to generate, and each verdict label;
        ``accepted``: a round its pair was accepted in without a verdict here (``sagegen import``)."""
        stats: dict[int, dict[str, int]] = {}
        for row in self.conn.execute(
            "SELECT r.round AS round, r.candidate_json IS NULL AS gen_failed, r.label AS label, "
            "(r.label IS NULL AND p.state = 'pass' AND p.final_round = r.round) AS accepted, COUNT(*) AS n "
            "FROM rounds r JOIN pairs p ON p.idx = r.pair_idx GROUP BY 1, 2, 3, 4"
        ):
            s = stats.setdefault(row["round"], {})
            s["generated"] = s.get("generated", 0) + row["n"]
            key = (
                "gen_failed"
                if row["gen_failed"]
                else row["label"] or ("accepted" if row["accepted"] else "unverified")
            )
            s[key] = s.get(key, 0) + row["n"]
        order = ("generated", "gen_failed", "pass", "too_easy", "incorrect", "accepted", "unverified")
        rank = {k: i for i, k in enumerate(order)}
        return {
            r: dict(sorted(s.items(), key=lambda kv: rank.get(kv[0], len(order))))
            for r, s in sorted(stats.items())
        }

    def label_means(self) -> dict[str, dict[str, float]]:
        """Per final label: pairs, mean measured difficulty, mean Avg@K and mean round (finished pairs)."""
        out: dict[str, dict[str, float]] = {}
        for row in self.conn.execute(
            "SELECT state, COUNT(*) AS n, AVG(json_extract(qa_json, '$.difficulty')) AS difficulty, "
            "AVG(json_extract(qa_json, '$.avg_at_k')) AS avg_at_k, "
            "AVG(json_extract(qa_json, '$.round')) AS rnd "
            "FROM pairs WHERE qa_json IS NOT NULL GROUP BY state ORDER BY state"
        ):
            out[row["state"]] = {
                "pairs": row["n"],
                "difficulty": row["difficulty"],
                "avg_at_k": row["avg_at_k"],
                "round": row["rnd"],
            }
        return out

    def llm_usage(self, session: int | None = None) -> dict[str, dict[str, float]]:
        """Per role: calls, cached (cache hits), errors, prompt/completion tokens, seconds."""
        sql = (
            "SELECT role, COUNT(*) AS calls, SUM(cached) AS cached, SUM(error IS NOT NULL) AS errors, "
            "SUM(prompt_tokens) AS prompt_tokens, SUM(completion_tokens) AS completion_tokens, "
            "SUM(seconds) AS seconds FROM llm_calls"
        )
        args: tuple[Any, ...] = ()
        if session is not None:
            sql, args = sql + " WHERE session=?", (session,)
        out: dict[str, dict[str, float]] = {}
        for row in self.conn.execute(sql + " GROUP BY role ORDER BY role", args):
            keys = ("calls", "cached", "errors", "prompt_tokens", "completion_tokens", "seconds")
            out[row["role"]] = {k: row[k] or 0 for k in keys}
        return out

    def reply_stats(self, session: int | None = None) -> dict[str, dict[str, int]]:
        """Per role, over fresh calls with a reply: ``calls``, ``cut`` (finish_reason=length), ``empty``
        (no answer text nor tool call), ``thinking`` (calls that reasoned), ``reasoning_tokens``."""
        if (
            self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='llm_replies'"
            ).fetchone()
            is None
        ):
            return {}  # a ledger written before the table, read before any writer added it
        sql = (
            "SELECT role, COUNT(*) AS calls, SUM(finish_reason = 'length') AS cut, SUM(empty) AS empty, "
            "SUM(reasoning_chars > 0 OR reasoning_tokens > 0) AS thinking, "
            "SUM(reasoning_tokens) AS reasoning_tokens FROM llm_replies"
        )
        args: tuple[Any, ...] = ()
        if session is not None:
            sql, args = sql + " WHERE session=?", (session,)
        keys = ("calls", "cut", "empty", "thinking", "reasoning_tokens")
        return {
            row["role"]: {k: int(row[k] or 0) for k in keys}
            for row in self.conn.execute(sql + " GROUP BY role ORDER BY role", args)
        }

    def try_stats(self) -> dict[str, dict[str, Any]]:
        """Per role: requests sent (``tries``), ``retries`` (tries beyond the first of each call), seconds
        spent waiting between them, and requests by HTTP status (``None``: no response)."""
        has = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='llm_tries'"
        ).fetchone()
        if has is None:  # a version-1 ledger read before any writer migrated it
            return {}
        out: dict[str, dict[str, Any]] = {}
        for row in self.conn.execute(
            "SELECT role, COUNT(*) AS tries, COUNT(DISTINCT call_id) AS calls, SUM(wait) AS wait "
            "FROM llm_tries GROUP BY role ORDER BY role"
        ):
            out[row["role"]] = {
                "tries": row["tries"],
                "retries": row["tries"] - row["calls"],
                "wait": row["wait"] or 0.0,
                "statuses": {},
            }
        by_status = "SELECT role, status, COUNT(*) AS n FROM llm_tries GROUP BY role, status"
        for row in self.conn.execute(by_status):
            out[row["role"]]["statuses"][row["status"]] = row["n"]
        return out

    def endpoint_stats(self) -> list[dict[str, Any]]:
        """Per model and endpoint (``llm.base_url`` replicas): requests sent and connection errors /
        5xx among them over all sessions, and the requests in flight when the last session holding
        it ended (non-zero only after an interrupted session)."""
        has = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='llm_endpoints'"
        ).fetchone()
        if has is None:  # a ledger from before the table, read before any writer added it
            return []
        return [
            dict(r)
            for r in self.conn.execute(
                "SELECT model, endpoint, SUM(calls) AS calls, SUM(failures) AS failures, "
                "(SELECT e2.in_flight FROM llm_endpoints e2 "
                " WHERE e2.model=e.model AND e2.endpoint=e.endpoint"
                " ORDER BY e2.session DESC LIMIT 1) AS in_flight "
                "FROM llm_endpoints e GROUP BY model, endpoint ORDER BY model, endpoint"
            )
        ]

    def sessions(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM sessions ORDER BY id")]

    def events(self, pair_index: int | None = None) -> list[EventRecord]:
        sql = "SELECT * FROM events"
        args: tuple[int, ...] = ()
        if pair_index is not None:
            sql, args = sql + " WHERE pair_idx=?", (pair_index,)
        return [
            EventRecord(r["pair_idx"], r["round"], r["kind"], r["message"], r["created"])
            for r in self.conn.execute(sql + " ORDER BY id", args)
        ]


class _LedgerConnection(sqlite3.Connection):
    """A connection whose SQLite errors name the ledger file and say what to do (sagegen.ledger.damage)."""

    ledger_path: Path

    def execute(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        try:
            return super().execute(*args, **kwargs)
        except sqlite3.DatabaseError as e:
            raise ledger_error(self.ledger_path, e) from e

    def executescript(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        try:
            return super().executescript(*args, **kwargs)
        except sqlite3.DatabaseError as e:
            raise ledger_error(self.ledger_path, e) from e


def _connect(path: Path, target: str | Path, *, uri: bool = False) -> _LedgerConnection:
    try:
        conn = sqlite3.connect(target, uri=uri, isolation_level=None, factory=_LedgerConnection)
    except sqlite3.DatabaseError as e:
        raise ledger_error(path, e) from e
    conn.ledger_path = path
    return conn


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _check_file(path: Path) -> None:
    """A cut-short ledger is caught here, from its header, before any read meets the missing pages.

    The header (bytes 16-17: page size, 28-31: page count, valid when 92-95 equals the change counter
    at 24-27) says how long the file must be. A shorter file is not always damage: a checkpoint
    (copying the WAL's pages into the main file, page 1 first) that the disk filled up during leaves
    exactly that, with every missing page still in the WAL, and SQLite reads them from there and
    completes the checkpoint later. Only when the WAL does not hold them is the ledger damaged.
    """
    size = path.stat().st_size
    if size == 0:
        return  # an empty ledger holds no run: the caller says so, or starts one
    with open(path, "rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(_SQLITE_MAGIC):
        raise LedgerError(f"{path}: damaged (not a SQLite database): {keep_or_force(path)}")
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    if head[92:96] == head[24:28] and pages and size < pages * page_size:
        wal = path.with_name(path.name + "-wal")
        if _wal_restores(wal, size // page_size, page_size):
            return  # a checkpoint cut short (disk full): SQLite reads the pages from the WAL
        raise LedgerError(
            f"{path}: damaged (truncated: {size} of {pages * page_size} bytes, and its WAL "
            f"does not hold the missing pages): {keep_or_force(path)}"
        )


_WAL_MAGIC = (0x377F0682, 0x377F0683)  # checksums of little- / big-endian words


def _wal_restores(wal: Path, whole_pages: int, page_size: int) -> bool:
    """Whether ``wal`` holds, in committed frames SQLite will read, every page of the database past
    the first ``whole_pages`` (the ones the main file has in full). The WAL format, as SQLite
    reads it on recovery (sqlite.org/fileformat2.html#walformat): a 32-byte header (magic, version,
    page size, checkpoint sequence, two salts, a checksum), then frames of a 24-byte header (page
    number, database size in pages for the frame that commits a transaction, the header's salts,
    a cumulative checksum) and one page. Frames count up to the first bad salt or checksum, and
    only those up to the last commit; the database then has the size that commit says."""
    try:
        with open(wal, "rb") as f:
            data = f.read()
    except OSError:
        return False
    if len(data) < 32:
        return False
    magic, _version, wal_page, _seq, salt1, salt2, ck1, ck2 = struct.unpack(">8I", data[:32])
    if magic not in _WAL_MAGIC or wal_page != page_size:
        return False
    order = ">" if magic & 1 else "<"
    if _wal_checksum(data[:24], order, 0, 0) != (ck1, ck2):
        return False
    s0, s1 = ck1, ck2
    committed: set[int] = set()
    txn: set[int] = set()
    db_pages = 0
    frame = 24 + page_size
    for off in range(32, len(data) - frame + 1, frame):
        pgno, commit, f_salt1, f_salt2, f_ck1, f_ck2 = struct.unpack(">6I", data[off : off + 24])
        if (f_salt1, f_salt2) != (salt1, salt2):
            break
        s0, s1 = _wal_checksum(data[off : off + 8], order, s0, s1)
        s0, s1 = _wal_checksum(data[off + 24 : off + frame], order, s0, s1)
        if (s0, s1) != (f_ck1, f_ck2):
            break
        txn.add(pgno)
        if commit:
            committed |= txn
            txn = set()
            db_pages = commit
    return db_pages > 0 and all(p in committed for p in range(whole_pages + 1, db_pages + 1))


def _wal_checksum(block: bytes, order: str, s0: int, s1: int) -> tuple[int, int]:
    """SQLite's WAL checksum (walChecksumBytes) of ``block`` from the running pair ``s0, s1``."""
    words = struct.unpack(f"{order}{len(block) // 4}I", block)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def _expected_columns() -> dict[str, list[str]]:
    mem = sqlite3.connect(":memory:")
    try:
        mem.executescript(_SCHEMA)
        tables = [r[0] for r in mem.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {
            t: [r[1] for r in mem.execute(f"PRAGMA table_info({t})")]
            for t in tables
            if not t.startswith("sqlite_")
        }
    finally:
        mem.close()


def _check_ledger(conn: sqlite3.Connection, path: Path, *, created: bool) -> bool:
    """Refuse a ledger this version cannot use; True when it holds a run (its config is recorded).

    Checked: it is a SQLite database, its schema version is one we know, and every table it has
    carries the columns we read and write. A table added after schema version 1 (``llm_tries``,
    ``llm_endpoints``) may be missing, and the writer adds it; one every ledger has had since version
    1 was dropped from this one, with the rows it held, and is refused as damage instead of being
    re-created empty. A missing column or a newer schema is refused too, naming what and what to do.
    """
    have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "meta" not in have:
        if created:
            return False
        raise LedgerError(
            f"{path}: holds no run (an empty or unfinished ledger); rerun the generate "
            "command that made it, or pass --force to start over"
        )
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    config = conn.execute("SELECT value FROM meta WHERE key='config'").fetchone()
    if row is not None:
        version = row[0]
        if not str(version).isdigit():
            raise LedgerError(
                f"{path}: unknown ledger schema version {version!r} (this sagegen writes "
                f"{SCHEMA_VERSION}); the file was altered or is not a sagegen ledger"
            )
        if int(version) > SCHEMA_VERSION:
            raise LedgerError(
                f"{path}: ledger schema version {version} is newer than this sagegen's "
                f"({SCHEMA_VERSION}); upgrade sagegen to read it"
            )
        if int(version) < 1:
            raise LedgerError(
                f"{path}: ledger schema version {version} predates this sagegen's "
                f"({SCHEMA_VERSION}) and cannot be migrated: {keep_or_force(path)}"
            )
    for table, columns in _expected_columns().items():
        if table not in have:
            continue
        present = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        missing = [c for c in columns if c not in present]
        if missing:
            raise LedgerError(
                f"{path}: table {table} lacks column(s) {', '.join(missing)} (schema version "
                f"{SCHEMA_VERSION} has them): the ledger was altered or written by another "
                f"program: {keep_or_force(path)}"
            )
    if config is None:
        if created:
            return False
        raise LedgerError(
            f"{path}: holds no run configuration (an unfinished ledger); pass --force to start over"
        )
    dropped = [t for t in _TABLES_SINCE_V1 if t not in have]
    if dropped:
        raise LedgerError(
            f"{path}: table(s) {', '.join(dropped)} missing (every ledger has them since "
            f"schema version 1): the ledger was altered or damaged: {keep_or_force(path)}"
        )
    return True


#: The tables of schema version 1: a ledger that holds a run and lacks one lost its rows.
_TABLES_SINCE_V1 = ("meta", "sessions", "pairs", "rounds", "attempts", "trajectories", "llm_calls", "events")


@dataclass
class _Tx:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (rollback on error): each ledger write is atomic.

    ``before`` writes the queued call bookings first, so they commit with (never after) the write.
    """

    conn: sqlite3.Connection
    before: Callable[[], None] | None = None

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        if self.before is not None:
            try:
                self.before()
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return self.conn

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
