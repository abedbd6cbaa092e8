"""Deterministic ids for one run: the seeds of its calls and the ids of its trajectories.

Both are pure functions of their parts (no ``hash()``, no clock), so a resumed or re-run pair gets the
same seeds (hence the same LLM cache keys) and its trajectories the same ids in the ledger.
"""

from __future__ import annotations

import hashlib
from typing import Any


def derive_seed(*parts: Any) -> int:
    """A stable 31-bit seed from parts (run seed, pair index, round, attempt, role...).

    Stable across processes and Python versions (no ``hash()``), so LLM cache keys, which
    include the seed, are identical when a run is resumed.
    """
    blob = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "big") & 0x7FFFFFFF


def trace_id(*parts: Any) -> str:
    """Deterministic trajectory id, e.g. ``p3.r2.gen`` / ``p3.r2.a1``."""
    return ".".join(str(p) for p in parts)
