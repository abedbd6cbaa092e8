"""Progress for every long command, with or without a terminal: the pieces ``generate``, ``eval``,
``train --eval`` and ``index`` share.

A terminal gets a live line (rich); anything else (a log under ``nohup`` or SLURM, a pipe) gets a
plain line every ``every`` seconds and on every finished item, so a run is never silent until it
ends. Time comes from an injectable clock, so the tests drive it without sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Clock = Callable[[], float]

#: Seconds between two plain progress lines when the output is not a terminal (``--progress-every``).
PLAIN_EVERY = 30.0


def hms(seconds: float | None) -> str:
    """``01:02:03``; ``—`` when unknown."""
    if seconds is None:
        return "—"
    s = max(0, round(seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def eta_seconds(remaining: int, finished: int, wall: float) -> float | None:
    """Seconds left at the rate finished items came in so far (items per wall second, so pairs run
    side by side count as they should); ``None`` before the first item finishes."""
    if finished <= 0 or wall <= 0:
        return None
    return remaining * wall / finished


class BusyTime:
    """Model-busy time: the union of the intervals during which at least one model call ran.

    Concurrent calls overlap, so their summed seconds exceed the wall clock (4,142 s in a 14-minute
    run); this counts each wall second once. A call is known when it finishes: its interval is
    ``[end - seconds, end]``.
    """

    #: Spans kept apart; older ones are folded into a total (a call reaching back past 64 gaps is
    #: rare, and then counts its overlap twice: a bound on the cost, not on the truth).
    KEEP = 64

    def __init__(self) -> None:
        self._spans: list[tuple[float, float]] = []  # disjoint, sorted
        self._folded = 0.0
        self.summed = 0.0

    def add(self, end: float, seconds: float) -> None:
        if seconds <= 0:
            return
        self.summed += seconds
        lo, hi = end - seconds, end
        keep: list[tuple[float, float]] = []
        for a, b in self._spans:
            if b < lo or a > hi:
                keep.append((a, b))
            else:
                lo, hi = min(lo, a), max(hi, b)
        keep.append((lo, hi))
        keep.sort()
        while len(keep) > self.KEEP:
            a, b = keep.pop(0)
            self._folded += b - a
        self._spans = keep

    @property
    def busy(self) -> float:
        return self._folded + sum(b - a for a, b in self._spans)


class Heartbeat:
    """Writes ``line()`` through ``write`` when ``every`` seconds have passed since the last line
    (:meth:`poke`), or at once (:meth:`now`: a finished item). :meth:`start` runs a thread that pokes
    once a second, so a long model call with no event in between still gets its line."""

    def __init__(
        self,
        line: Callable[[], str],
        write: Callable[[str], None],
        *,
        every: float = PLAIN_EVERY,
        clock: Clock = time.monotonic,
    ):
        self.line, self.write, self.every, self.clock = line, write, every, clock
        self.last = clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def now(self) -> None:
        with self._lock:
            self.last = self.clock()
            self.write(self.line())

    def poke(self) -> bool:
        """Write a line if one is due; whether it wrote."""
        if self.every <= 0 or self.clock() - self.last < self.every:
            return False
        self.now()
        return True

    def start(self) -> Heartbeat:
        def loop() -> None:
            while not self._stop.wait(min(1.0, self.every)):
                self.poke()

        if self.every > 0:
            self._thread = threading.Thread(target=loop, name="sagegen-progress", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
