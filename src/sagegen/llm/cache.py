"""A persistent LLM call cache: a rerun never pays twice for the same call.

The key is the SHA-256 of the canonical JSON of everything that decides an answer: the backend's
``name`` ("backend:model"), its ``cache_identity()`` (GGUF path and size, request extras, ...), the
messages and every parameter, ``seed``, ``stop`` and ``tools`` included. Where a model is served
(``llm.base_url``) is not part of it: replicas of one model give the same answers, so a call cached
through one server is a hit through any other serving that model name. So K independent samples of one prompt
need K distinct seeds (the team-wide contract); failures are never cached.

Storage is one SQLite file in WAL mode, one row per call, committed as soon as the call returns:
a process killed at any moment leaves a valid database missing at most the call in flight.
Several processes may share the file (SQLite locks; ``busy_timeout`` waits them out), and
concurrent asyncio callers asking the same question at once share one backend call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from sagegen.errors import LLMError
from sagegen.llm.base import LLM, CallOptions, Message
from sagegen.records import Completion

#: Bump when the key recipe or the stored form changes; old rows then simply stop matching.
#: Not bumped when the openai backend's identity lost ``base_url``: the recipe is the same, and only
#: that backend's rows (which hold ``base_url``) stop matching, once; a bump would also throw away every
#: still-valid llamacpp, transformers and fixture row.
KEY_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    completion TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def cache_key(
    name: str, messages: Sequence[Message], params: dict[str, Any], identity: dict[str, Any] | None = None
) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces) of the call."""
    payload = {
        "v": KEY_VERSION,
        "name": name,
        "identity": identity or {},
        "messages": [dict(m) for m in messages],
        "params": params,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class CallCache:
    """The SQLite store; thread-safe, one connection guarded by a lock."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit (isolation_level=None): each INSERT is its own transaction, durable on return.
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL under WAL survives any process crash; only a power cut can drop the last commits.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.execute(_SCHEMA)
        except sqlite3.DatabaseError as e:
            from sagegen.ledger.damage import ledger_error

            # A full or read-only disk is said as such; only a damaged file is worth deleting.
            low = str(e).lower()
            if "not a database" in low or "malformed" in low:
                raise LLMError(
                    f"LLM call cache {self.path}: cannot open ({e}); delete it to start afresh"
                ) from None
            raise LLMError(f"LLM call cache {ledger_error(self.path, e)}") from None
        self._lock = threading.Lock()

    def get(self, key: str) -> Completion | None:
        with self._lock, self._named_errors():
            row = self._db.execute("SELECT completion FROM calls WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            return Completion.model_validate_json(row[0])
        except ValueError:
            return None  # a row from an incompatible release: treat as a miss, the put overwrites it

    def put(self, key: str, name: str, completion: Completion) -> None:
        blob = completion.model_copy(update={"cached": False}).model_dump_json()
        with self._lock, self._named_errors():
            self._db.execute(
                "INSERT OR REPLACE INTO calls (key, name, completion, created) VALUES (?, ?, ?, ?)",
                (key, name, blob, time.time()),
            )

    @contextlib.contextmanager
    def _named_errors(self) -> Iterator[None]:
        """A SQLite failure after opening (a page damaged later, a full disk) as one line naming this
        file and what to do (sagegen.ledger.damage). A LedgerError, not an LLMError: the run stops here, as on
        its own ledger's failure, instead of counting it as a backend failure of the pair."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            from sagegen.ledger.damage import ledger_error

            err = ledger_error(self.path, e)
            raise type(err)(f"LLM call cache {err}") from None

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CallStore(Protocol):
    """What a ``CachedLLM`` needs of its store: ``CallCache``, or the Ray workers' proxy to the ledger's."""

    @property
    def path(self) -> str | Path: ...

    def get(self, key: str) -> Completion | None: ...

    def put(self, key: str, name: str, completion: Completion) -> None: ...

    def close(self) -> None: ...


class CachedLLM(LLM):
    """Wraps any ``LLM``; same ``name``; hits come back with ``cached=True``.

    A hit returns the stored completion as it was first produced (its tokens and seconds are
    what that call cost), flagged ``cached`` so accounting can tell paid calls from free ones.
    """

    def __init__(self, inner: LLM, path: str | Path):
        self.inner = inner
        self.name = inner.name
        self.store: CallStore = CallCache(path)
        self._inflight: dict[str, asyncio.Future[Completion]] = {}
        self._identity: dict[str, Any] = getattr(inner, "cache_identity", dict)()

    def key(self, messages: Sequence[Message], **params: Any) -> str:
        return cache_key(self.name, messages, params, self._identity)

    async def _complete(self, messages: Sequence[Message], o: CallOptions) -> Completion:
        # The key's params keep their first form (lists, None when empty): caches written before still match.
        key = self.key(
            messages,
            max_tokens=o.max_tokens,
            temperature=o.temperature,
            stop=list(o.stop) or None,
            seed=o.seed,
            tools=list(o.tools) or None,
        )
        found = await asyncio.to_thread(self.store.get, key)
        if found is not None:
            return found.model_copy(update={"cached": True})
        loop = asyncio.get_running_loop()
        while (pending := self._inflight.get(key)) is not None and pending.get_loop() is loop:
            try:
                comp = await asyncio.shield(pending)
            except asyncio.CancelledError:
                if pending.cancelled():
                    continue  # the caller that made the call was cancelled, not us: make it ourselves
                raise
            return comp.model_copy(update={"cached": True})
        fut: asyncio.Future[Completion] = loop.create_future()
        self._inflight[key] = fut
        try:
            comp = await self.inner.complete(messages, **o.as_kwargs())
            await asyncio.to_thread(self.store.put, key, self.name, comp)
            fut.set_result(comp)
            return comp
        except BaseException as e:
            if isinstance(e, Exception):
                fut.set_exception(e)
                fut.exception()  # mark retrieved: nobody may be waiting on it
            else:
                fut.cancel()
            raise
        finally:
            self._inflight.pop(key, None)

    def close(self) -> None:
        self.store.close()
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()
