"""Every screen of the command line, drawn from what the core returns or emits (``sagegen.events``).

The core modules know no screen (``tests/test_architecture.py``); this module is the only place
besides ``cli.py`` that imports ``rich``: the live display of ``generate``, the end-of-run summary
and advice, ``status``, the eval table and ``solve``'s step lines.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from sagegen.events import (
    CallsCounted,
    Event,
    LLMCallFinished,
    PairFailed,
    PairFinished,
    PairStarted,
    RunStarted,
)
from sagegen.pipeline import FINISHED, Stats
from sagegen.session import RunResult
from sagegen.store import RunStore

# ---------------------------------------------------------------------------- generate: live display


@dataclass
class GenerateView(Stats):
    """The run's counters (the pipeline's own :class:`Stats`, counted the same way) plus the pairs in
    flight and the calls the accounting wrappers report (``LLMCallFinished``, and ``CallsCounted`` from
    workers), kept from events; :meth:`line` is the live status line."""

    in_flight: int = 0
    calls: int = 0
    cached: int = 0
    tokens: int = 0

    def update(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.total, self.already_done, self.labels = event.total, event.already_done, dict(event.labels)
        elif isinstance(event, PairStarted):
            self.in_flight += 1
        elif isinstance(event, (PairFinished, PairFailed)):
            self.in_flight -= 1
        elif isinstance(event, LLMCallFinished):
            self.calls, self.cached = self.calls + 1, self.cached + int(event.cached)
            self.tokens += event.tokens
        elif isinstance(event, CallsCounted):
            self.calls, self.cached = self.calls + event.calls, self.cached + event.cached
            self.tokens += event.tokens
        self.count(event)

    @property
    def completed(self) -> int:
        return self.already_done + self.done + self.errors

    def line(self) -> str:
        lab = self.labels
        return (
            f"accepted {lab.get('pass', 0)} · too easy {lab.get('too_easy', 0)} · "
            f"incorrect {lab.get('incorrect', 0)} · failed {lab.get('failed', 0)}"
            + (f" · ambiguous {lab['ambiguous']}" if lab.get("ambiguous") else "")
            + (f" · errors {self.errors}" if self.errors else "")
            + f" · in flight {self.in_flight} · calls {self.calls} ({self.cached} cached)"
            + f" · tokens {self.tokens:,}"
        )


def resume_line(event: RunStarted) -> str:
    return (
        f"resuming {event.already_done}/{event.total}: {event.already_done} pairs finished by earlier "
        f"sessions are kept, {event.total - event.already_done} to go"
    )


@contextlib.contextmanager
def generate_display(console: Console, *, live: bool = True) -> Iterator[Any]:
    """An event sink for ``run_generate``: a live bar (pairs, elapsed, ETA) over the status line,
    refreshed on every event (each LLM call, not only each pair), shown from the moment the run is
    open (corpus and models loaded); with ``live=False`` only the resume line. A console that is not
    a terminal gets no bar (logs stay clean)."""
    view = GenerateView()
    bar = Progress(
        TextColumn("[bold]pairs"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
    )
    line = Text("")
    screen = (
        Live(Group(bar, line), console=console, refresh_per_second=4, transient=False, redirect_stderr=False)
        if live and console.is_terminal
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
        if task is not None:
            bar.update(task, completed=view.completed)
        line.plain = view.line()

    try:
        yield sink
    finally:
        if screen is not None:
            screen.stop()


# ---------------------------------------------------------------------------- generate: the end


def format_summary(res: RunResult) -> str:
    """The end-of-run summary: what was made (counted by outcome, as the files hold it), what it cost,
    where the files are, and what the result means and what to do next."""
    o, d = res.outcomes, res.run_dir
    tot = {
        k: sum(u[k] for u in res.usage.values())
        for k in ("calls", "cached", "prompt_tokens", "completion_tokens", "seconds")
    }
    ses = {k: sum(u[k] for u in res.session_usage.values()) for k in ("calls", "cached")}
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
        f"too easy   {o['too_easy']}    unsolved {o['incorrect']}    generator failed {o['failed']}"
        + (f"    repeated questions skipped {o['duplicate']}" if o["duplicate"] else ""),
        f"LLM calls  {int(tot['calls'])} total ({int(tot['cached'])} cache hits); "
        f"this session {int(ses['calls'])} ({int(ses['cached'])} cache hits)",
        f"tokens     {int(tot['prompt_tokens']):,} prompt + {int(tot['completion_tokens']):,} completion; "
        f"model time {tot['seconds']:.1f} s",
        "by role    " + ", ".join(f"{r}: {int(u['calls'])} calls" for r, u in res.usage.items()),
        f"files      {d / 'dataset.jsonl'}, {d / 'too_easy.jsonl'}, {d / 'unsolved.jsonl'},\n"
        f"           {d / 'ledger.sqlite'} (sagegen status {d})",
    ]
    return "\n".join(lines + advice(res))


#: The one-line next step with a real backend (as docs/generate.md gives it).
REAL_BACKEND = (
    "sagegen generate --new-run -s llm.backend=openai -s llm.model=Qwen/Qwen2.5-7B-Instruct "
    "-s llm.base_url=http://127.0.0.1:8001/v1"
)


def advice(res: RunResult) -> list[str]:
    """What the result means and the next step, plus the settings that weaken the data."""
    o, d = res.outcomes, res.run_dir
    out: list[str] = []
    if res.demo and o["accepted"] == 0:
        out += [
            "meaning    accepted 0 is what the embedded demo model (SmolLM2-135M) usually gives: it",
            "           rarely writes a question its own solver can verify; the run shows the loop, the",
            "           ledger and the files. Pairs come from a real model behind an OpenAI-compatible",
            "           server (vLLM, SGLang, Ollama, llama.cpp server, a hosted API):",
            f"next       {REAL_BACKEND}",
        ]
    elif o["accepted"]:
        out.append(f"next       sagegen report {d}   (then sagegen export {d} --format verl)")
    elif o["seeds"] - o["unfinished"]:
        out.append(f"next       no pair passed: sagegen report {d} shows each pair's traces and why")
    out += [f"note       {w}" for w in res.warnings]
    out += [f"cut        {c}" for c in res.caps]
    return out


# ---------------------------------------------------------------------------- status


def format_status(store: RunStore) -> str:
    """``sagegen status RUN``: counts per round and state, accept rate, calls/tokens/time so far."""
    c = store.counts()
    o = store.outcomes()
    finished = c.get("finished", 0)
    lines = [f"run {store.run_dir}  (config {store.config_hash})"]
    states = ", ".join(f"{s} {c.get(s, 0)}" for s in ("pending", "running", *FINISHED))
    lines.append(f"pairs {c['pairs']}: {states}")
    if finished:
        lines.append(f"accept rate {c.get('pass', 0)}/{finished} = {100 * c.get('pass', 0) / finished:.1f}%")
    lines.append("outcomes: " + ", ".join(f"{k} {v}" for k, v in o.items() if k != "seeds"))
    lines.append(
        "outputs: " + ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in c.items() if k.startswith("output."))
    )
    for label, m in store.label_means().items():
        diff = f"{m['difficulty']:.2f}" if m["difficulty"] is not None else "-"
        avg = f"{m['avg_at_k']:.2f}" if m["avg_at_k"] is not None else "-"  # unknown for some imports
        lines.append(
            f"{label}: {int(m['pairs'])} pairs, mean difficulty {diff}, "
            f"mean Avg@K {avg}, mean round {m['round']:.2f}"
        )
    for rnd, s in store.round_stats().items():
        lines.append(f"round {rnd}: " + ", ".join(f"{k} {v}" for k, v in s.items()))
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
