"""Every screen of the command line, drawn from what the core returns or emits (``sagegen.events``).

The core modules know no screen (``tests/test_architecture.py``); this module is the only place
besides ``cli.py`` that imports ``rich``: the live display of ``generate``, the end-of-run summary
and advice, ``status``, the eval table and ``solve``'s step lines.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from sagegen.cli.progress import PLAIN_EVERY, BusyTime, Clock, Heartbeat, eta_seconds, hms
from sagegen.events import (
    STAGES,
    CallsCounted,
    Event,
    LLMCallFinished,
    PairFailed,
    PairFinished,
    PairStage,
    PairStarted,
    RunStarted,
)
from sagegen.ledger.outcomes import OUTPUT_FILES
from sagegen.ledger.outcomes import name as outcome_name
from sagegen.ledger.store import RunStore
from sagegen.loop.pipeline import FINISHED, Stats
from sagegen.loop.session import RunResult

# ---------------------------------------------------------------------------- generate: live display


@dataclass
class GenerateView(Stats):
    """The run's counters (the pipeline's own :class:`Stats`, counted the same way from the same
    events; calls come from the accounting wrappers' ``LLMCallFinished``, and ``CallsCounted`` from
    workers) plus what only a screen
    needs: the pairs in flight and the stage each waits on, the clock, model-busy time.
    :meth:`line` is the live line under the bar, :meth:`plain_line` the line a log gets."""

    in_flight: int = 0
    calls: int = 0
    cached: int = 0
    tokens: int = 0
    rounds: int = 0
    #: Pair index -> (round, stage) of the pairs in flight that said where they are.
    stages: dict[int, tuple[int, str]] = field(default_factory=dict)
    clock: Clock = time.monotonic
    started: float | None = None
    busy: BusyTime = field(default_factory=BusyTime)

    def update(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.total, self.already_done, self.labels = event.total, event.already_done, dict(event.labels)
            self.outcomes = dict(event.outcomes)
            self.rounds, self.started = event.rounds, self.clock()
        elif isinstance(event, PairStarted):
            self.in_flight += 1
        elif isinstance(event, PairStage):
            self.stages[event.index] = (event.round, event.stage)
        elif isinstance(event, (PairFinished, PairFailed)):
            self.in_flight -= 1
            self.stages.pop(event.index, None)
        elif isinstance(event, LLMCallFinished):
            self.busy.add(self.clock(), event.seconds)
            self.calls, self.cached = self.calls + 1, self.cached + int(event.cached)
            self.tokens += event.tokens
        elif isinstance(event, CallsCounted):
            self.calls, self.cached = self.calls + event.calls, self.cached + event.cached
            self.tokens += event.tokens
        self.count(event)

    @property
    def completed(self) -> int:
        return self.already_done + self.done + self.errors

    @property
    def wall(self) -> float:
        return 0.0 if self.started is None else self.clock() - self.started

    def eta(self) -> float | None:
        """From the pairs this session finished, per wall second (concurrency included)."""
        return eta_seconds(self.total - self.completed, self.done + self.errors, self.wall)

    def stage(self) -> str:
        """``round 2/3 · in flight: 1 generator, 2 solver, 1 judge`` (what the pairs wait on now)."""
        parts = []
        # One copy (atomic under the GIL): the heartbeat thread reads while the loop's thread writes.
        now = list(self.stages.values())
        rounds = sorted({r for r, _ in now})
        of = f"/{self.rounds}" if self.rounds else ""
        if rounds:
            lo, hi = rounds[0], rounds[-1]
            parts.append(f"round {lo}{of}" if lo == hi else f"rounds {lo}-{hi}{of}")
        waits = [st for _, st in now]
        told = [f"{waits.count(st)} {st}" for st in STAGES if st in waits]
        unknown = self.in_flight - len(waits)  # workers in other processes say only start and end
        if unknown > 0:
            told.append(f"{unknown} pair{'s' if unknown != 1 else ''}")
        parts.append("in flight: " + (", ".join(told) if told else "none"))
        return " · ".join(parts)

    def outcome_counts(self) -> str:
        """``1 accepted, 2 too easy, ...``: the finished pairs by outcome, as the summary counts them."""
        out = self.outcomes
        shown = [
            f"{out.get(k, 0)} {outcome_name(k)}" for k in ("accepted", "too_easy", "incorrect", "failed")
        ]
        shown += [f"{out[k]} {outcome_name(k)}" for k in ("ambiguous", "duplicate") if out.get(k)]
        shown += [f"{self.errors} error{'s' if self.errors != 1 else ''}"] if self.errors else []
        return ", ".join(shown)

    def rate(self) -> str:
        wall = self.wall
        return f"{60 * self.calls / wall:.0f} LLM calls/min" if wall >= 1 else "— LLM calls/min"

    def times(self) -> str:
        return (
            f"wall {hms(self.wall)}, model busy {hms(self.busy.busy)}, "
            f"model time {hms(self.busy.summed)} summed over concurrent calls"
        )

    def line(self) -> str:
        """The live line under the bar (the bar shows pairs, elapsed and the ETA)."""
        return (
            f"{self.stage()} · {self.outcome_counts()}\n"
            f"calls {self.calls} ({self.cached} cached), {self.rate()} · tokens {self.tokens:,}"
            f" · {self.times()}"
        )

    def plain_line(self) -> str:
        """One line of a log: everything the live display shows, in words."""
        return (
            f"[{hms(self.wall)}] {self.completed}/{self.total} pairs done ({self.outcome_counts()}) · "
            f"{self.stage()} · {self.rate()} ({self.calls} calls, {self.cached} cached) · "
            f"ETA {hms(self.eta())} (from finished pairs) · {self.times()}"
        )


def resume_line(event: RunStarted) -> str:
    return (
        f"resuming {event.already_done}/{event.total}: {event.already_done} pairs finished by earlier "
        f"sessions are kept, {event.total - event.already_done} to go"
    )


@contextlib.contextmanager
def generate_display(
    console: Console, *, live: bool = True, every: float = PLAIN_EVERY, clock: Clock = time.monotonic
) -> Iterator[Any]:
    """An event sink for ``run_generate``, shown from the moment the run is open (corpus and models
    loaded). On a terminal: a live bar (pairs, elapsed, ETA from finished pairs) over the status line,
    redrawn four times a second (calls move it, not only pairs). Anywhere else (a log, a pipe): a
    plain line every ``every`` seconds and on every finished pair. ``live=False``: only the resume line."""
    view = GenerateView(clock=clock)
    bar = Progress(
        TextColumn("[bold]pairs"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        _Drawn(lambda: f"ETA {hms(view.eta())}"),
        console=console,
    )
    line = _Drawn(view.line)  # redrawn at each refresh: the wall clock moves between events too
    terminal = live and console.is_terminal
    screen = (
        Live(Group(bar, line), console=console, refresh_per_second=4, transient=False, redirect_stderr=False)
        if terminal
        else None
    )
    beat = (
        Heartbeat(view.plain_line, lambda s: _plain(console, s), every=every, clock=clock)
        if live and not terminal
        else None
    )
    task = None

    def sink(event: Event) -> None:
        nonlocal task
        view.update(event)
        if isinstance(event, RunStarted):
            if event.already_done:
                console.print(resume_line(event), highlight=False)
            task = bar.add_task("pairs", total=event.total)
            if screen is not None:
                screen.start()
            if beat is not None:
                beat.now()
                beat.start()
        if task is not None:
            bar.update(task, completed=view.completed)
        if beat is not None and isinstance(event, (PairFinished, PairFailed)):
            beat.now()

    try:
        yield sink
    finally:
        if screen is not None:
            screen.stop()
        if beat is not None:
            beat.stop()


class _Drawn(ProgressColumn):
    """Text computed when drawn (a live line, a bar column), not when the last event came."""

    def __init__(self, text: Callable[[], str]):
        super().__init__()
        self.text = text

    def render(self, task: Any = None) -> Text:
        return Text(self.text())

    def __rich__(self) -> Text:
        return self.render()


def _plain(console: Console, text: str) -> None:
    console.print(text, highlight=False, markup=False, soft_wrap=True)


# ---------------------------------------------------------------------------- eval, train --eval: questions


@dataclass
class QuestionView:
    """Progress of an evaluation (``eval``, each model of ``train --eval``), from its results."""

    what: str
    total: int
    already: int = 0
    k: int = 1
    done: int = 0
    solved: int = 0
    clock: Clock = time.monotonic
    started: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def add(self, row: dict[str, Any]) -> None:
        self.done += 1
        self.solved += int(bool(row.get("pass_at_k")))

    @property
    def wall(self) -> float:
        return self.clock() - self.started

    def score(self) -> str:
        return f"pass@{self.k} {self.solved}/{self.done} this run" if self.done else "no result yet"

    def plain_line(self) -> str:
        left = self.total - self.already - self.done
        eta = eta_seconds(left, self.done, self.wall)
        return (
            f"[{hms(self.wall)}] {self.what}: {self.already + self.done}/{self.total} questions done · "
            f"{self.score()} · ETA {hms(eta)} (from finished questions) · wall {hms(self.wall)}"
        )


@contextlib.contextmanager
def question_progress(
    console: Console, view: QuestionView, *, every: float = PLAIN_EVERY, clock: Clock | None = None
) -> Iterator[Any]:
    """A ``on_result`` hook for ``sagegen.loop.evaluate.evaluate``: a bar on a terminal, else a plain line
    every ``every`` seconds and on each finished question (a log under nohup is never silent)."""
    if console.is_terminal:
        columns = (
            TextColumn(f"[bold]{escape(view.what)}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[score]}"),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
        )
        with Progress(*columns, console=console) as bar:
            task = bar.add_task(view.what, total=view.total, completed=view.already, score="", eta="—")

            def on_bar(row: dict[str, Any]) -> None:
                view.add(row)
                eta = eta_seconds(view.total - view.already - view.done, view.done, view.wall)
                bar.update(task, advance=1, score=view.score(), eta=hms(eta))

            yield on_bar
        return
    beat = Heartbeat(view.plain_line, lambda t: _plain(console, t), every=every, clock=clock or view.clock)
    beat.now()
    beat.start()

    def on_line(row: dict[str, Any]) -> None:
        view.add(row)
        beat.now()

    try:
        yield on_line
    finally:
        beat.stop()


class CompareProgress:
    """``train --eval``'s progress: the base model's evaluation, then the trained one's, as plain
    lines (the trainer's own lines are plain too), every ``every`` seconds and per question; so
    loading a model or a slow question never leaves minutes without a line."""

    def __init__(self, console: Console, *, every: float = PLAIN_EVERY, k: int = 1):
        self.console, self.every, self.k = console, every, k
        self.beat: Heartbeat | None = None

    def watch(self, which: str, total: int) -> Any:
        self.close()
        view = QuestionView(f"{which} model", total, k=self.k)
        _plain(self.console, f"evaluating the {which} model on {total} questions (loading it first)")
        self.beat = Heartbeat(view.plain_line, lambda t: _plain(self.console, t), every=self.every).start()
        beat = self.beat

        def on_result(row: dict[str, Any]) -> None:
            view.add(row)
            beat.now()

        return on_result

    def close(self) -> None:
        if self.beat is not None:
            self.beat.stop()
            self.beat = None


# ---------------------------------------------------------------------------- generate: the end


def format_summary(res: RunResult) -> str:
    """The end-of-run summary: what was made (counted by outcome, as the files hold it), what it cost,
    where the files are, and what the result means and what to do next."""
    o, d = res.outcomes, res.run_dir
    tot = {
        k: sum(u[k] for u in res.usage.values())
        for k in ("calls", "cached", "prompt_tokens", "completion_tokens", "seconds")
    }
    finished = o["seeds"] - o["unfinished"]
    acc = o["accepted"]
    lines = [
        f"run        {d}  ({'resumed' if res.resumed else 'new'}; this session {res.seconds:.1f} s)",
        f"pairs      {finished} finished of {res.stats.total}"
        + (
            f", {res.stats.errors} unfinished by errors (rerun to retry; last: {res.stats.last_error[:200]})"
            if res.stats.errors
            else ""
        ),
        f"accepted   {acc}"
        + (f" ({100 * acc / finished:.0f}%)" if finished else "")
        + " in dataset.jsonl"
        + (f"; {o['ambiguous']} ambiguous in ambiguous.jsonl" if o["ambiguous"] else ""),
        f"{outcome_name('too_easy'):<10} {o['too_easy']}    {outcome_name('incorrect')} {o['incorrect']}"
        f"    {outcome_name('failed')} {o['failed']}"
        + (
            f"    {outcome_name('duplicate')} {o['duplicate']} (repeated questions, skipped)"
            if o["duplicate"]
            else ""
        ),
        f"LLM calls  {int(tot['calls'])} total ({int(tot['cached'])} cache hits); "
        f"this session {res.calls} ({res.cached} cache hits)",
        f"tokens     {int(tot['prompt_tokens']):,} prompt + {int(tot['completion_tokens']):,} completion",
        # Calls run side by side: their seconds add up past the wall clock, so both are named as such.
        f"time       wall {hms(res.seconds)} this session; model time {hms(tot['seconds'])} "
        "summed over all calls of the run (concurrent calls overlap, so the sum exceeds the wall)",
        "by role    " + ", ".join(f"{r}: {int(u['calls'])} calls" for r, u in res.usage.items()),
        f"files      {d / 'dataset.jsonl'}, {d / 'too_easy.jsonl'}, {d / 'unsolved.jsonl'} (incorrect),\n"
        f"           {d / 'ledger.sqlite'} (sagegen status {d})",
    ]
    return "\n".join(lines + advice(res))


#: The one-line next step with a real backend (as docs/generate.md gives it).
REAL_BACKEND = (
    "sagegen generate --new-run -s llm.backend=openai -s llm.model=Qwen/Qwen2.5-7B-Instruct "
    "-s llm.base_url=http://127.0.0.1:8001/v1"
)


def advice(res: RunResult) -> list[str]:
    """What the result means and a next step that works on this run's files (counted, not assumed),
    plus the settings that weaken the data."""
    o, d = res.outcomes, res.run_dir
    out: list[str] = []
    finished = o["seeds"] - o["unfinished"]
    if o["accepted"]:
        out.append(f"next       sagegen report {d}   (then {_export_step(d)})")
    elif finished:
        if res.demo:
            out += [
                "meaning    accepted 0 is what the embedded demo model (SmolLM2-135M) usually gives: it",
                "           rarely writes a question its own solver can verify; the run shows the loop, the",
                "           ledger and the files. Pairs come from a real model behind an OpenAI-compatible",
                "           server (vLLM, SGLang, Ollama, llama.cpp server, a hosted API):",
                f"next       {REAL_BACKEND}",
            ]
        else:
            out.append(
                f"meaning    no pair was accepted: sagegen report {d} shows each pair's traces and why"
            )
            if o["incorrect"] + o["failed"] > o["too_easy"]:
                out.append(
                    "           most questions were never answered correctly or never written: try a "
                    "stronger model, more rounds (--rounds), or more seeds (-n)"
                )
        if o["too_easy"]:  # the one file with verified pairs in it: say how to use it, as it is
            out.append(
                f"meanwhile  the {o['too_easy']} too-easy pairs (verified, below their target): "
                f"sagegen export {d} --include too_easy --min-difficulty 0, or sagegen train "
                f"{d / 'too_easy.jsonl'}"
            )
        else:
            out.append(f"meanwhile  nothing to export or train on yet (dataset.jsonl is empty): {d}")
    out += [f"note       {w}" for w in res.warnings]
    out += [f"cut        {c}" for c in res.caps]
    return out


def _export_step(run_dir: Path) -> str:
    """``sagegen export`` with a ``--min-difficulty`` that keeps the accepted pairs: its default (2)
    would refuse a run whose floor (``pipeline.min_difficulty_for_dataset``) was set lower."""
    import json

    default = 2
    diffs = []
    path = run_dir / "dataset.jsonl"
    if path.is_file():
        for line in path.open(encoding="utf-8"):
            if line.strip():
                with contextlib.suppress(ValueError, AttributeError):
                    diffs.append(int(json.loads(line).get("difficulty") or 0))
    low = min(diffs, default=default)
    flag = f" --min-difficulty {low}" if low < default else ""
    return f"sagegen export {run_dir} --format verl{flag}"


# ---------------------------------------------------------------------------- status


def format_status(store: RunStore) -> str:
    """``sagegen status RUN``: counts per round and state, accept rate, calls/tokens/time so far."""
    c = store.counts()
    o = store.outcomes()
    finished = c.get("finished", 0)
    lines = [f"run {store.run_dir}  (config {store.config_hash})"]
    states = ", ".join(f"{outcome_name(s)} {c.get(s, 0)}" for s in ("pending", "running", *FINISHED))
    lines.append(f"pairs {c['pairs']}: {states}")
    if finished:
        lines.append(f"accept rate {c.get('pass', 0)}/{finished} = {100 * c.get('pass', 0) / finished:.1f}%")
    lines.append("outcomes: " + ", ".join(f"{outcome_name(k)} {v}" for k, v in o.items() if k != "seeds"))
    outputs = {k.split(".", 1)[1]: v for k, v in c.items() if k.startswith("output.")}
    lines.append("files: " + ", ".join(f"{OUTPUT_FILES.get(k, k)} {v}" for k, v in outputs.items()))
    for label, m in store.label_means().items():
        diff = f"{m['difficulty']:.2f}" if m["difficulty"] is not None else "-"
        avg = f"{m['avg_at_k']:.2f}" if m["avg_at_k"] is not None else "-"  # unknown for some imports
        lines.append(
            f"{outcome_name(label)}: {int(m['pairs'])} pairs, mean difficulty {diff}, "
            f"mean Avg@K {avg}, mean round {m['round']:.2f}"
        )
    for rnd, s in store.round_stats().items():
        lines.append(f"round {rnd}: " + ", ".join(f"{outcome_name(k)} {v}" for k, v in s.items()))
    lines.append(f"attempts {c['attempts']}, trajectories {c['trajectories']}, events {c['events']}")
    tries = store.try_stats()
    for role, u in store.llm_usage().items():
        lines.append(
            f"llm {role}: {int(u['calls'])} calls ({int(u['cached'])} cached, {int(u['errors'])} errors), "
            f"{int(u['prompt_tokens']):,}+{int(u['completion_tokens']):,} tokens, {u['seconds']:.1f} s"
        )
        if role in tries:  # requests sent: retries and the time spent waiting between them count too
            t = tries[role]
            codes = ", ".join(
                f"{'no response' if k is None else k}: {n}"
                for k, n in sorted(t["statuses"].items(), key=lambda kv: (kv[0] is None, kv[0] or 0))
            )
            lines.append(
                f"  requests {t['tries']} ({t['retries']} retries, {t['wait']:.1f} s waiting; {codes})"
            )
    replies = store.reply_stats()
    for role, r in replies.items():  # what the replies were like (docs/models.md)
        lines.append(
            f"  replies {role}: {r['calls']} fresh, {r['cut']} cut at the cap, {r['empty']} empty, "
            f"{r['thinking']} thought ({r['reasoning_tokens']:,} reasoning tokens reported)"
        )
    from sagegen.doctor import cap_advice

    lines += [f"cut {c}" for c in cap_advice(replies)]
    for e in store.endpoint_stats():  # each server of llm.base_url (a list: replicas)
        lines.append(
            f"endpoint {e['endpoint']} ({e['model']}): {e['calls']} requests, "
            f"{e['failures']} failed, {e['in_flight']} in flight at the end"
        )
    for s in store.sessions():
        dur = (s["ended"] - s["started"]) if s["ended"] else None
        lines.append(f"session {s['id']}: {s['status']}" + (f", {dur:.1f} s" if dur is not None else ""))
    return "\n".join(lines)


# ---------------------------------------------------------------------------- eval and solve


def summary_table(summary: dict[str, Any], title: str = "eval") -> Table:
    """The eval summary as a table."""
    t = Table(title=title, show_header=True)
    t.add_column("metric")
    t.add_column("value", justify="right")
    k = summary["k"]
    rows = [
        ("questions", str(summary["questions"])),
        (f"attempts (K={k})", str(summary["attempts"])),
        (f"EM (avg@{k})", f"{summary['em']:.3f}"),
        (f"F1 (avg@{k})", f"{summary['f1']:.3f}"),
        (f"judge acc (avg@{k})", f"{summary['judge_acc']:.3f}"),
        (f"pass@{k} (judge)", f"{summary['pass_at_k']:.3f}"),
        (f"pass@{k} (EM)", f"{summary['em_pass_at_k']:.3f}"),
        ("mean searches", f"{summary['mean_searches']:.2f}"),
        (
            "answered / forced / failed",
            f"{summary['answered']:.2f} / {summary['forced']:.2f} / {summary['failed']:.2f}",
        ),
        ("judge methods", ", ".join(f"{m}={c}" for m, c in summary["judge_methods"].items()) or "-"),
    ]
    pq = summary["per_question"]
    wall = summary.get("wall_seconds_per_question_this_run")
    rows += [
        ("LLM calls / question", f"{pq['solver_calls']:.1f} solver + {pq['judge_calls']:.1f} judge"),
        ("tokens / question", f"{pq['prompt_tokens']:.0f} prompt + {pq['completion_tokens']:.0f} completion"),
        ("cached calls / question", f"{pq['cached_calls']:.1f}"),
        (
            "seconds / question",
            (f"{wall:.1f} wall this run; " if wall is not None else "")
            + f"{pq['seconds']:.1f} from first attempt to last judgement ({pq.get('llm_seconds', 0):.1f} "
            "generating)",
        ),
    ]
    for name, value in rows:
        t.add_row(name, value)
    return t


def print_export(summary: dict[str, Any]) -> None:
    """``sagegen export`` for a person: what was selected and the files written (``--json``: the JSON)."""
    t = Table(title=f"sagegen export ({summary['format']})", show_header=False)
    t.add_column("what")
    t.add_column("value")
    kinds = ", ".join(outcome_name("accepted" if k == "pass" else k) for k in summary.get("labels", ()))
    t.add_row("source", str(summary["source"]))
    t.add_row(
        "pairs",
        f"{summary['selected']} of {summary['available']} ({kinds}) "
        f"with difficulty ≥ {summary['min_difficulty']}",
    )
    counts = summary.get("counts") or {}
    if counts:
        t.add_row("counts", ", ".join(f"{k} {v}" for k, v in counts.items()))
    for k, v in (summary.get("files") or {}).items():
        t.add_row(f"file: {k}", str(v))
    for k in ("reward", "card"):
        if summary.get(k):
            t.add_row(k, str(summary[k]))
    for k, v in (summary.get("skipped") or {}).items():
        t.add_row(f"skipped: {k}", str(v))
    Console().print(t)


def print_facts(facts: dict[str, Any], title: str) -> None:
    """A command's result for a person, one row per fact (``--json`` prints the JSON instead); a
    nested value (a dict) is one row per entry."""
    t = Table(title=title, show_header=False)
    t.add_column("what")
    t.add_column("value")

    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else "—" if v is None else str(v)

    for k, v in facts.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                t.add_row(
                    f"{k}: {k2}",
                    ", ".join(f"{a} {cell(b)}" for a, b in v2.items()) if isinstance(v2, dict) else cell(v2),
                )
        else:
            t.add_row(k.replace("_", " "), cell(v))
    Console().print(t)


def print_eval(summary: dict[str, Any], title: str) -> None:
    """``sagegen eval`` for a person: the summary table on stdout (``--json`` prints the JSON instead)."""
    Console().print(summary_table(summary, title=title))


#: Why an attempt ended without an answer, by the last event the solver recorded (sagegen.agents.solver).
NO_ANSWER_WHY = {
    "no_forced_answer": "it stopped at its limit and solver.force_answer is off",
    "no_answer": "asked for its final answer at the limit, the model gave none",
    "forced_answer": "it was asked for its final answer and gave none",
    "llm_error": "the model call failed",
}


def answer_line(traj: Any) -> str:
    """``sagegen solve``'s last line: the answer, or "no answer" and why (never ``answer None``)."""
    facts = (
        f"[dim]status={traj.status} searches={traj.num_searches} "
        f"tokens={traj.prompt_tokens}+{traj.completion_tokens} seconds={traj.seconds:.1f}[/]"
    )
    if traj.answer:
        return f"[bold]answer[/] {escape(traj.answer)}  {facts}"
    events = [st for st in traj.steps if st.kind == "event"]
    last = events[-1] if events else None
    why = NO_ANSWER_WHY.get(last.event or "", last.event or "") if last is not None else ""
    detail = f" ({escape(' '.join(last.text.split())[:160])})" if last is not None and last.text else ""
    return f"[bold red]no answer[/]: {escape(why) or 'the model ended without an <answer>'}{detail}  {facts}"


def step_markup(step: Any) -> str:
    """One trajectory step as a line of rich markup, for ``sagegen solve``'s live view."""
    if step.kind == "search":
        return f"[bold cyan]search[/] {escape(step.query or '')!s} [dim]→ {escape(step.text)}[/]"
    if step.kind == "event":
        detail = f" [dim]{escape(step.text[:160])}[/]" if step.text else ""
        return f"[bold yellow]event[/] {escape(step.event or '')}{detail}"
    text = " ".join(step.text.split())
    thought = " ".join(getattr(step, "reasoning", "").split())
    cut = " [bold yellow]cut at the cap[/]" if getattr(step, "finish_reason", None) == "length" else ""
    return (
        (
            f"[bold magenta]thinks[/] [dim]{escape(thought[:240])}{'…' if len(thought) > 240 else ''}[/]\n"
            if thought
            else ""
        )
        + f"[bold green]model[/] [dim]({step.completion_tokens} tok, {step.seconds:.1f}s)[/]{cut} "
        f"{escape(text[:400])}"
    )
