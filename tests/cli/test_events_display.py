"""Events from the core and the screens drawn from them: calls and tokens move while a pair is in
flight, a resumed run says so first, the end of a run says what it means, the CLI basics."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from sage_loop_helpers import (
    DOCS,
    OverlapRetriever,
    RoleScript,
    answer,
    final,
    infos,
    search,
    small_config,
)
from sagegen.cli.display import GenerateView, advice, format_summary, generate_display
from sagegen.events import LLMCallFinished, PairFinished, PairStarted, RunStarted, RunWarning
from sagegen.loop.session import Components, RunResult, run_generate

Q = "In which year was the engineer of the 1889 Paris tower born?"


def _parts() -> Components:
    script = RoleScript(
        generator=lambda m: search(f"q {infos(m)}") if infos(m) < 2 else final(f"{Q} #{len(m)}", "1832"),
        solver=lambda m: search(f"hop {infos(m)}") if infos(m) < 2 else answer("1832"),
    )
    llm = script.llm()
    return Components(list(DOCS), OverlapRetriever(), llm, llm, llm)


def test_llm_calls_are_reported_while_the_pair_is_in_flight(tmp_path: Path) -> None:
    events: list = []
    res = run_generate(small_config(num_seeds=2), tmp_path / "run", parts=_parts(), on_event=events.append)
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "RunStarted" and events[0].total == 2 and events[0].already_done == 0
    first_done = kinds.index("PairFinished")
    # the calls of pair 0 arrive one by one before pair 0 is finished, not in a lump after it
    assert kinds.index("PairStarted") < kinds.index("LLMCallFinished") < first_done
    calls = [e for e in events if isinstance(e, LLMCallFinished)]
    assert sum(1 for e in calls if events.index(e) < first_done) >= 3
    # the events add up to what the ledger recorded
    usage = res.usage
    assert len(calls) == sum(int(u["calls"]) for u in usage.values()) == res.calls
    tokens = sum(int(u["prompt_tokens"] + u["completion_tokens"]) for u in usage.values())
    assert sum(e.tokens for e in calls) == tokens > 0
    view = GenerateView()
    for e in events:
        view.update(e)
        if isinstance(e, LLMCallFinished) and view.done == 0:
            assert f"calls {view.calls} " in view.line() and view.in_flight == 1
    assert view.done == 2 and view.in_flight == 0 and f"tokens {tokens:,}" in view.line()


def test_a_resumed_run_says_how_far_it_is_first(tmp_path: Path) -> None:
    run_generate(small_config(num_seeds=2), tmp_path / "run", parts=_parts())
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with generate_display(console, live=False) as sink:
        res = run_generate(small_config(num_seeds=3), tmp_path / "run", parts=_parts(), on_event=sink)
    assert out.getvalue().splitlines()[0].startswith("resuming 2/3:")
    assert res.resumed and res.stats.already_done == 2 and res.stats.done == 1


def _result(tmp_path: Path, accepted: int, *, demo: bool, warnings: list[str]) -> RunResult:
    from sagegen.loop.pipeline import Stats

    outcomes = {
        "seeds": 4,
        "accepted": accepted,
        "ambiguous": 0,
        "duplicate": 0,
        "too_easy": 0,
        "incorrect": 4 - accepted,
        "failed": 0,
        "unfinished": 0,
    }
    usage = {
        "generator": {"calls": 3, "cached": 0, "prompt_tokens": 10, "completion_tokens": 5, "seconds": 1.0}
    }
    return RunResult(
        tmp_path, False, Stats(total=4), 1.0, {}, outcomes, usage, usage, warnings=warnings, demo=demo
    )


def test_the_end_of_a_demo_run_explains_accepted_zero_and_gives_the_next_step(tmp_path: Path) -> None:
    judge = "the judge is the solver's own model (llamacpp:default): it may excuse its own mistakes"
    text = format_summary(_result(tmp_path, 0, demo=True, warnings=[judge]))
    assert "accepted   0 (0%)" in text and "embedded demo model" in text
    assert "next       sagegen generate --new-run -s llm.backend=openai" in text
    assert "warning" not in text and f"note       {judge}" in text
    # a real backend that accepted pairs is pointed at the report instead
    lines = advice(_result(tmp_path, 2, demo=False, warnings=[]))
    assert lines == [f"next       sagegen report {tmp_path}   (then sagegen export {tmp_path} --format verl)"]


def test_the_view_counts_each_kind_of_event() -> None:
    view = GenerateView()
    for e in (
        RunStarted(5, 2, {"pass": 2}, {"accepted": 1, "duplicate": 1}),
        PairStarted(2),
        LLMCallFinished("solver", 7, 3, cached=True),
        RunWarning("w"),
        PairFinished(2, "too_easy", "too_easy"),
    ):
        view.update(e)
    assert view.completed == 3 and view.labels == {"pass": 2, "too_easy": 1} and view.in_flight == 0
    # counted by outcome, as the summary counts them: one of the two passes was a repeated question
    assert view.outcomes == {"accepted": 1, "duplicate": 1, "too_easy": 1}
    assert "1 accepted, 1 too easy, 0 incorrect, 0 generator failed, 1 duplicate" in view.line()
    assert "calls 1 (1 cached), — LLM calls/min · tokens 10" in view.line()


def test_cli_version_short_help_and_shown_defaults() -> None:
    from typer.testing import CliRunner

    from sagegen import __version__
    from sagegen.cli.main import app

    runner = CliRunner()
    assert runner.invoke(app, ["--version"]).output.strip() == __version__
    assert "Usage:" in runner.invoke(app, ["-h"]).output
    helptext = runner.invoke(app, ["generate", "-h"], env={"COLUMNS": "200"}).output
    assert "[default: (4 embedded demo, else 8)]" in helptext and "[default: (feedback)]" in helptext


def test_index_interrupted_says_what_was_kept(monkeypatch) -> None:
    from typer.testing import CliRunner

    import sagegen.cli.retrieval
    from sagegen.cli.main import app

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sagegen.cli.retrieval, "run_index", interrupted)
    res = CliRunner().invoke(app, ["index"], env={"COLUMNS": "200"})
    assert res.exit_code == 130  # click's answer to Ctrl-C, as the shell's
    assert "no partial index was kept" in res.output and "rerun the same command" in res.output


def test_a_pipeline_builds_in_a_child_process_from_config_and_run_dir(tmp_path: Path) -> None:
    # What a multi-process executor does: the parent opens the run, a child runs one pair from
    # (cfg, run_dir) alone and writes it to the same ledger.
    import subprocess
    import sys

    from sage_loop_helpers import SCRIPTED_RUN_SETS, write_corpus
    from sagegen.config import load_config
    from sagegen.ledger.store import RunStore

    write_corpus(tmp_path / "corpus.jsonl")
    sets = [s for s in SCRIPTED_RUN_SETS if s != "-s"] + ["pipeline.num_seeds=2", "pipeline.target=2"]
    cfg = load_config(None, sets)
    store, _ = RunStore.create_or_resume(tmp_path / "run", cfg.model_dump(mode="json"), cfg.dump())
    store.close()
    child = (
        "import asyncio, sys\n"
        "from sagegen.config import load_config\n"
        "from sagegen.loop.pipeline import Pipeline\n"
        "from sagegen.loop.session import Components\n"
        "from sagegen.ledger.store import RunStore\n"
        f"cfg = load_config(None, {sets!r})\n"
        "store = RunStore.open('run', readonly=False)\n"
        "print(asyncio.run(Pipeline(cfg, store, Components.from_config(cfg)).run_pair(1)))\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", child], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr[-2000:]
    with RunStore.open(tmp_path / "run") as store:
        pair = store.pair(1)
        assert pair is not None and pair.state == p.stdout.strip().splitlines()[-1] != ""
        assert store.pair(0) is None and store.llm_usage()  # only pair 1 ran; its calls are in the ledger
