"""A run's wiring and life: its parts built from the config, its directory, lock, ledger and sessions.

:func:`run_generate` is ``sagegen generate`` without a screen: it opens (or resumes) the run
directory under its lock, runs :class:`sagegen.loop.pipeline.Pipeline` and returns a :class:`RunResult`;
what happens on the way reaches the caller as events (``sagegen.events``), which the command line
draws (``sagegen.cli.display``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from sagegen.config import Config
from sagegen.events import EventSink, RunWarning
from sagegen.ledger.store import RunStore
from sagegen.loop.components import Components
from sagegen.loop.pipeline import Pipeline, Stats


@dataclass
class RunResult:
    run_dir: Path
    resumed: bool
    stats: Stats
    seconds: float
    counts: dict[str, int]
    #: Pairs per outcome (``sagegen.ledger.outcomes``): what the output files hold.
    outcomes: dict[str, int]
    usage: dict[str, dict[str, float]]
    session_usage: dict[str, dict[str, float]]
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)
    #: The generator is the embedded demo model (llamacpp, no model named: SmolLM2-135M).
    demo: bool = False
    #: Lines naming each role whose replies were cut at the cap, and the setting to raise.
    caps: list[str] = field(default_factory=list)

    @property
    def calls(self) -> int:
        """LLM calls this session, as the ledger booked them (cache hits included)."""
        return int(sum(u["calls"] for u in self.session_usage.values()))

    @property
    def cached(self) -> int:
        return int(sum(u["cached"] for u in self.session_usage.values()))


def config_warnings(cfg: Config) -> list[str]:
    """Settings that are legal but weaken the data; kept as ledger events, shown in the end-of-run advice."""
    out = []
    if cfg.judge.method == "llm":
        judge, solver = cfg.judge_llm or cfg.llm, cfg.solver_llm or cfg.llm
        # Where a model is served does not change it (replicas of one model: the call cache's rule too).
        if (judge.backend, judge.model) == (solver.backend, solver.model):
            out.append(
                f"the judge is the solver's own model ({judge.backend}:{judge.model or 'default'}): it may "
                "excuse its own mistakes; set judge_llm to a separate model (the paper's release uses one)"
            )
    return out


def resolve_run_dir(out: str | None, cfg: Config, *, new_run: bool) -> Path:
    """``--out`` or ``runs/default``; ``--new-run`` picks a fresh ``NAME-2``, ``NAME-3``... instead."""
    base = Path(out) if out else Path("runs") / "default"
    if not new_run or not (base / "ledger.sqlite").exists():
        return base
    n = 2
    while (base.parent / f"{base.name}-{n}").exists():
        n += 1
    return base.parent / f"{base.name}-{n}"


def run_generate(
    cfg: Config,
    run_dir: str | Path,
    *,
    force: bool = False,
    on_event: EventSink | None = None,
    parts: Components | None = None,
) -> RunResult:
    """``sagegen generate``: open or resume the run at ``run_dir`` and run the SAGE loop to the end.

    Ctrl-C cancels the pairs in flight (each ledger write is atomic, nothing is corrupted) and
    re-raises ``KeyboardInterrupt``; rerunning the same command resumes.
    """
    from sagegen.ledger.lock import DirLock

    run_dir = Path(run_dir)
    own_parts = parts is None
    # Whatever can refuse the input comes before any run file is written (the config was validated
    # when loaded): the corpus is opened and the LLMs are built, so a mistyped path leaves nothing.
    parts = parts or Components.from_config(cfg)
    lock: DirLock | None = None
    store: RunStore | None = None
    status = "failed"
    try:
        lock = DirLock(run_dir, "run").acquire()  # one writer per run; released however this process ends
        store, resumed = RunStore.create_or_resume(
            run_dir, cfg.model_dump(mode="json"), cfg.dump(), force=force
        )
        # The JSONL files are views of the ledger: rebuilding them drops a line half-written by a killed run.
        store.rebuild_outputs()
        session = store.begin_session()
        t0 = time.monotonic()
        warnings = config_warnings(cfg)
        pipe = Pipeline(cfg, store, parts, run_name=run_dir.name, on_event=on_event)
        for w in warnings:
            store.event("warning", w)
            pipe.emit(RunWarning(w))
        if cfg.pipeline.workers > 1 or cfg.pipeline.executor == "ray":  # processes / Ray (sagegen.loop.scale)
            from sagegen.loop.scale import run_spread

            stats = run_spread(pipe)
        else:
            stats = asyncio.run(pipe.run())
        status = "completed" if not stats.errors else "errors"
        from sagegen.doctor import cap_advice

        return RunResult(
            run_dir,
            resumed,
            stats,
            time.monotonic() - t0,
            store.counts(),
            store.outcomes(),
            store.llm_usage(),
            store.llm_usage(session),
            warnings=warnings,
            demo=cfg.llm.backend == "llamacpp" and not cfg.llm.model,
            caps=cap_advice(store.reply_stats(session), cfg),
        )
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if store is not None:
            with contextlib.suppress(Exception):
                store.end_session(status)
            store.close()
        if lock is not None:
            lock.release()
        if own_parts:
            parts.close()


def runs_demo_model(cfg: Config) -> bool:
    """Every model of the run is the embedded demo model (llamacpp with no model named: SmolLM2-135M)
    or a scripted test fixture: the only runs the small demo budgets are for."""
    llms = [cfg.llm, cfg.solver_llm, cfg.judge_llm, *cfg.solver_llms]
    return all(
        c.backend == "scripted" or (c.backend == "llamacpp" and not c.model) for c in llms if c is not None
    )


def generate_config(path: Path | None, overrides: list[str], profile: str | None) -> tuple[Config, str]:
    """The config of a ``generate`` run and where its budgets come from: ``demo`` (no -c, no --profile,
    the embedded model: :func:`quick_defaults` under the overrides), ``profile NAME``, ``config FILE``
    or ``paper`` (every other backend without -c: the paper's budgets, the config's defaults)."""
    from sagegen.config import load_config
    from sagegen.profiles import load_profile

    cfg = load_config(path, overrides, base=load_profile(profile))
    if path is None and profile is None and runs_demo_model(cfg):
        return load_config(None, [*quick_defaults(), *overrides]), "demo"
    if profile:
        return cfg, f"profile {profile}"
    return cfg, f"config {path}" if path is not None else "paper"


def budget_line(cfg: Config, source: str) -> str:
    """One line naming the budgets a run uses and where they come from (the first lines of generate)."""
    g, so, j, p = cfg.generator, cfg.solver, cfg.judge, cfg.pipeline
    demo_model = "a scripted test model" if cfg.llm.backend == "scripted" else "the embedded SmolLM2"
    where = {
        "demo": f"demo budgets for {demo_model} (a config file gives the paper's)",
        "paper": "the paper's budgets",
    }.get(source, f"budgets of the {source}")
    return (
        f"{where}: S={p.target}, R={p.rounds} rounds, K={p.attempts} attempts; generator "
        f"{g.max_searches} searches x {g.max_turn_tokens} tokens/turn, solver {so.max_searches} searches "
        f"x {so.max_turn_tokens} tokens/turn, judge {j.max_tokens} tokens"
    )


def quick_defaults() -> list[str]:
    """Settings of the no-config ``sagegen generate``: the paper's loop, scaled to finish in minutes
    on 2 CPU cores with the embedded SmolLM2 (few seeds, short turns, a small search budget)."""
    return [
        "pipeline.num_seeds=4",
        "pipeline.target=2",
        "pipeline.rounds=2",
        "pipeline.attempts=2",
        "pipeline.concurrency=2",
        "generator.max_searches=4",
        "generator.max_turn_tokens=160",
        "generator.max_format_retries=1",
        "generator.seed_chars=1200",
        "generator.passage_chars=400",
        "solver.max_searches=4",
        "solver.max_turn_tokens=128",
        "solver.passage_chars=400",
        "judge.max_tokens=128",
    ]
