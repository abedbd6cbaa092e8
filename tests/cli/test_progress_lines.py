"""The command line always says what it is doing: plain progress lines when the output is not a
terminal (at an interval and on every finished pair, driven here by a fake clock, not sleeps), the
stage each pair waits on, an ETA from finished pairs, wall time beside summed model time."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console

from sage_loop_helpers import DOCS, OverlapRetriever, RoleScript, answer, final, infos, search, small_config
from sagegen.cli.display import GenerateView, generate_display
from sagegen.cli.progress import BusyTime, Heartbeat, eta_seconds, hms
from sagegen.events import (
    LLMCallFinished,
    PairFinished,
    PairStage,
    PairStarted,
    RunStarted,
)
from sagegen.loop.session import Components, run_generate


class FakeClock:
    def __init__(self, t: float = 1000.0, step: float = 0.0):
        self.t, self.step = t, step

    def __call__(self) -> float:
        self.t += self.step  # a clock that moves on each reading: a run's time passes with its events
        return self.t


def test_eta_comes_from_finished_pairs_and_is_unknown_before_the_first() -> None:
    assert eta_seconds(10, 0, 50.0) is None and hms(None) == "—"
    # 4 pairs finished in 100 s of wall (side by side): 6 left take 150 s at that rate
    assert eta_seconds(6, 4, 100.0) == 150.0
    assert hms(150) == "00:02:30" and hms(3725) == "01:02:05"


def test_model_busy_time_counts_overlapping_calls_once() -> None:
    busy = BusyTime()
    busy.add(end=10.0, seconds=10.0)  # [0, 10]
    busy.add(end=12.0, seconds=10.0)  # [2, 12]: overlaps the first
    busy.add(end=30.0, seconds=5.0)  # [25, 30]
    assert busy.summed == 25.0 and busy.busy == 17.0


def test_the_stage_says_round_and_what_is_in_flight() -> None:
    clock = FakeClock()
    view = GenerateView(clock=clock)
    for e in (
        RunStarted(10, 0, {}, rounds=3, concurrency=4),
        PairStarted(0),
        PairStarted(1),
        PairStarted(2),
        PairStarted(3),
        PairStage(0, 1, "generator"),
        PairStage(1, 2, "solver"),
        PairStage(2, 2, "solver"),
    ):
        view.update(e)
    # pair 3 said nothing yet (as a worker in another process): counted as a pair, not dropped
    assert view.stage() == "rounds 1-2/3 · in flight: 1 generator, 2 solver, 1 pair"
    view.update(PairStage(2, 2, "judge"))
    view.update(PairFinished(0, "failed", "failed"))
    assert view.stage() == "round 2/3 · in flight: 1 solver, 1 judge, 1 pair"


def test_the_plain_line_has_eta_rate_wall_and_summed_model_time() -> None:
    clock = FakeClock()
    view = GenerateView(clock=clock)
    view.update(RunStarted(10, 0, {}, rounds=3, concurrency=2))
    view.update(PairStarted(0))
    assert "ETA — (from finished pairs)" in view.plain_line()
    clock.t += 30
    view.update(LLMCallFinished("solver", 10, 5, seconds=20.0))
    view.update(LLMCallFinished("judge", 10, 5, seconds=20.0))  # the same 20 s, side by side
    clock.t += 30
    view.update(PairFinished(0, "pass", "accepted"))
    line = view.plain_line()
    # 1 pair in 60 s of wall, 9 to go: 540 s
    assert line.startswith(
        "[00:01:00] 1/10 pairs done (1 accepted, 0 too easy, 0 incorrect, 0 generator failed)"
    )
    assert "ETA 00:09:00 (from finished pairs)" in line and "2 LLM calls/min (2 calls, 0 cached)" in line
    assert "wall 00:01:00, model busy 00:00:20, model time 00:00:40 summed over concurrent calls" in line


def test_heartbeat_writes_at_the_interval_and_when_asked() -> None:
    clock, lines = FakeClock(), []
    beat = Heartbeat(lambda: f"t={clock.t:.0f}", lines.append, every=30, clock=clock)
    clock.t += 29
    assert not beat.poke() and lines == []
    clock.t += 1
    assert beat.poke() and lines == ["t=1030"]
    clock.t += 10
    beat.now()  # a finished pair: at once, and the interval starts again
    clock.t += 25
    assert not beat.poke()
    clock.t += 5
    assert beat.poke() and lines == ["t=1030", "t=1040", "t=1070"]


def _parts() -> Components:
    q = "In which year was the engineer of the 1889 Paris tower born?"
    script = RoleScript(
        generator=lambda m: search(f"q {infos(m)}") if infos(m) < 2 else final(f"{q} #{len(m)}", "1832"),
        solver=lambda m: search(f"hop {infos(m)}") if infos(m) < 2 else answer("1832"),
    )
    llm = script.llm()
    return Components(list(DOCS), OverlapRetriever(), llm, llm, llm)


def test_a_run_without_a_terminal_prints_a_line_per_finished_pair(tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=300)
    clock = FakeClock(step=0.01)  # the heartbeat's thread would need 30 s of it: only pairs print here
    with generate_display(console, every=30, clock=clock) as sink:
        res = run_generate(small_config(num_seeds=3), tmp_path / "run", parts=_parts(), on_event=sink)
    lines = out.getvalue().splitlines()
    # one when the run opens, then one per finished pair: a log under nohup is never silent
    assert [re.sub(r"^\[[\d:]+\] ", "", ln).split(" pairs done")[0] for ln in lines] == [
        "0/3",
        "1/3",
        "2/3",
        "3/3",
    ]
    assert res.stats.done == 3 and all("ETA" in ln and "model time" in ln for ln in lines)
    assert "ETA —" in lines[0] and re.search(r"ETA \d\d:\d\d:\d\d", lines[1])
    assert "\x1b[" not in out.getvalue()  # no escape codes in a log
    # the last line counts the pairs as the end-of-run summary does (by outcome, from the ledger)
    o = res.outcomes
    assert f"({o['accepted']} accepted, {o['too_easy']} too easy, {o['incorrect']} incorrect" in lines[-1]


def test_the_pipeline_tells_each_pairs_stage_in_order(tmp_path: Path) -> None:
    events: list = []
    run_generate(small_config(num_seeds=1), tmp_path / "run", parts=_parts(), on_event=events.append)
    stages = [(e.round, e.stage) for e in events if isinstance(e, PairStage)]
    assert stages[0] == (1, "generator")
    # every solver attempt is followed by its judgement (EM judge: no model call, but a stage)
    assert [s for _, s in stages[1:5]] == ["solver", "judge", "solver", "judge"]
    started = next(e for e in events if isinstance(e, RunStarted))
    assert started.rounds == 3 and started.concurrency == 1


def test_no_progress_prints_nothing(tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=300)
    with generate_display(console, live=False) as sink:
        run_generate(small_config(num_seeds=1), tmp_path / "run", parts=_parts(), on_event=sink)
    assert out.getvalue() == ""
