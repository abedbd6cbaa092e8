"""The ``sagegen`` command line. Each command is a thin shell over a library function."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sagegen import __version__
from sagegen.config import Config, load_config
from sagegen.errors import SagegenError

app = typer.Typer(
    name="sagegen",
    help="Verified, difficulty-controlled deep-search QA generation (SAGE), and search-agent training/eval.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config value, e.g. -s retrieval.kind=dense (repeatable)."),
]


_ProgressEvery = Annotated[
    float,
    typer.Option(
        "--progress-every",
        help="Output not a terminal (nohup, SLURM, a pipe): a progress line every N seconds and on each "
        "finished item (0: only on finished items).",
    ),
]


def resolve_config(config: Path | None, overrides: list[str] | None) -> Config:
    return load_config(config, overrides or [])


def flag_overrides(
    set_: list[str] | None, flags: Mapping[str, object], base: list[str] | None = None
) -> list[str]:
    """``base``, then the ``-s`` values, then one ``key=value`` per flag given (a flag wins over ``-s``).

    Values go JSON-quoted: JSON strings are valid YAML scalars, so paths, hosts and ranges survive the
    override parser unchanged.
    """
    import json

    given = [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]
    return [*(base or []), *(set_ or []), *given]


def _print_version(value: bool) -> None:
    if value:
        print(__version__)
        raise typer.Exit()


@app.callback()
def _main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Options of ``sagegen`` itself, given before the command."""


@app.command(rich_help_panel="Other")
def doctor(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    profile: Annotated[
        str | None,
        typer.Option("--profile", help="A named profile under the config: sage = the authors' release."),
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="Token cap of each probe call.")] = 2048,
    no_retriever: Annotated[bool, typer.Option("--no-retriever", help="Skip the retriever check.")] = False,
) -> None:
    """Probe each role's model and the retriever before spending money: reachable, the model served, where
    its thinking goes, whether stop strings cut it, refused parameters, the tag protocol; then the
    settings sagegen will use."""
    from sagegen.doctor import diagnose, diagnose_retriever
    from sagegen.loop.session import generate_config

    cfg, _ = generate_config(config, list(set_ or []), profile)
    ok = True
    for rep in diagnose(cfg, max_tokens=max_tokens):
        console.print(f"[bold]{rep.role}[/]: {rep.backend} {rep.model}", highlight=False)
        for what, finding in rep.lines:
            console.print(f"  {what:<18} {finding}", highlight=False, markup=False, soft_wrap=True)
        ok &= rep.ok
    if not no_retriever:
        good, line = diagnose_retriever(cfg)
        console.print(f"[bold]retriever[/]: {line}", highlight=False)
        ok &= good
    if not ok:
        raise typer.Exit(1)


@app.command(rich_help_panel="Other")
def version() -> None:
    """Print the sagegen version."""
    print(__version__)


@app.command(rich_help_panel="Search agents")
def solve(
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed passed to the LLM.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the trajectory as JSON on stdout.")] = False,
) -> None:
    """Run the search agent on one question, showing each step as it happens."""
    import asyncio

    from sagegen.agents.solver import solve as run_solver
    from sagegen.cli.display import answer_line, step_markup
    from sagegen.loop.evaluate import build_stack

    cfg = resolve_config(config, set_)
    from sagegen.doctor import cap_advice, preflight

    preflight(cfg)
    from sagegen.llm.accounting import AccountingLLM

    backend, _, retriever = build_stack(cfg, with_judge=False)
    llm = AccountingLLM(backend, "solver")  # counts the replies cut at the cap, as generate and eval do
    console.print(f"[bold]question[/] {question}", highlight=False)
    traj = asyncio.run(
        run_solver(
            question,
            llm,
            retriever,
            cfg.solver,
            seed=seed,
            on_step=lambda st: console.print(step_markup(st), highlight=False),
        )
    )
    from sagegen.agents.outage import check_solver

    check_solver(traj, "solve")  # a backend outage is an error, not an answer
    for line in cap_advice({"solver": llm.reply_counts()}, cfg):
        console.print(f"cut  {line}", style="yellow", markup=False, highlight=False)
    console.print(answer_line(traj), highlight=False)
    if as_json:
        print(traj.to_json())


@app.command(name="eval", rich_help_panel="Search agents")
def eval_(
    bench: Annotated[
        Path,
        typer.Argument(
            help="Benchmark JSONL: FlashRAG {id, question, golden_answers}, "
            "or answer/answers and _id/idx (see --answer-field)."
        ),
    ],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default evals/<bench name>).")] = None,
    k: Annotated[int, typer.Option("--k", help="Attempts per question (distinct seeds).")] = 1,
    limit: Annotated[int | None, typer.Option(help="Only the first N questions.")] = None,
    concurrency: Annotated[int, typer.Option(help="Attempts in flight at once.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of attempt 0; attempt j uses seed+j.")] = 0,
    restart: Annotated[bool, typer.Option(help="Discard earlier results in --out.")] = False,
    id_field: Annotated[
        str | None,
        typer.Option("--id-field", help="Field holding the id [id, _id or idx, else the line number]."),
    ] = None,
    question_field: Annotated[
        str | None,
        typer.Option("--question-field", help="Field holding the question [question]."),
    ] = None,
    answer_field: Annotated[
        str | None,
        typer.Option(
            "--answer-field",
            help="Field holding the gold answer(s), a string or a list [golden_answers, answers or answer].",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON on stdout instead of the table.")
    ] = False,
    progress_every: _ProgressEvery = 30.0,
) -> None:
    """Evaluate the search agent on a benchmark: EM, F1, judge accuracy, pass@k, searches, cost.

    Results are appended to <out>/results.jsonl as questions complete; rerun to resume.
    """
    import asyncio
    import json

    from sagegen.cli.display import QuestionView, print_eval, question_progress
    from sagegen.loop.benchmark_fields import Fields
    from sagegen.loop.evaluate import build_stack, completed_ids, default_eval_dir, evaluate, load_benchmark

    cfg = resolve_config(config, set_)
    items = load_benchmark(bench, limit, Fields(id=id_field, question=question_field, answer=answer_field))
    from sagegen.doctor import preflight

    preflight(cfg)  # a dead server or a refused key: one line now, before the index or a paid call
    out_dir = out or default_eval_dir(bench)
    if restart:
        already = 0
    else:
        ids = {it.id for it in items}
        already = sum(1 for i in completed_ids(out_dir) if i in ids) if out_dir.is_dir() else 0
    llm, judge_llm, retriever = build_stack(cfg, with_judge=True)
    view = QuestionView("eval", len(items), already, k)
    with question_progress(console, view, every=progress_every) as on_result:
        summary = asyncio.run(
            evaluate(
                items,
                llm,
                retriever,
                cfg,
                out_dir,
                judge_llm=judge_llm,
                k=k,
                concurrency=concurrency,
                seed=seed,
                bench_path=bench,
                restart=restart,
                on_result=on_result,
            )
        )
    if as_json:  # for machines: the summary alone, on stdout
        print(json.dumps(summary))
    else:
        print_eval(summary, title=f"sagegen eval {bench.name}")
    from sagegen.doctor import cap_advice

    for line in cap_advice(summary.get("replies", {}), cfg):
        console.print(f"cut  {line}", style="yellow", markup=False, highlight=False)
    console.print(
        f"results: {out_dir / 'results.jsonl'}  summary: {out_dir / 'summary.json'}", highlight=False
    )
    if summary.get("unfinished"):  # a backend outage: not scored; a script must not take this for success
        console.print(
            f"error: {summary['unfinished']} question(s) unfinished by errors, not stored; rerun "
            f"the same command to retry them (last: {summary['last_error'][:300]})",
            style="bold red",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(1)


def _shown(key: str) -> str:
    """A ``generate`` flag's default for ``--help``: the embedded demo's setting, and everyone else's."""
    from sagegen.loop.session import quick_defaults

    section, name = key.split(".")
    demo = dict(kv.split("=", 1) for kv in quick_defaults()).get(key)
    paper = getattr(getattr(Config(), section), name)
    return f"{demo} embedded demo, else {paper}" if demo is not None and demo != str(paper) else str(paper)


@app.command(rich_help_panel="Generate data")
def generate(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Run dir.",
            show_default="runs/default",
        ),
    ] = None,
    num: Annotated[
        int | None,
        typer.Option(
            "-n",
            "--num",
            help="Seed passages (pairs).",
            show_default=_shown("pipeline.num_seeds"),
        ),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            help="Target searches S: 3, or a range 3-7.",
            show_default=_shown("pipeline.target"),
        ),
    ] = None,
    rounds: Annotated[
        int | None,
        typer.Option(
            help="Rounds R (generation + feedback).",
            show_default=_shown("pipeline.rounds"),
        ),
    ] = None,
    k: Annotated[
        int | None,
        typer.Option(
            "--k",
            help="Solver attempts K per candidate.",
            show_default=_shown("pipeline.attempts"),
        ),
    ] = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            help="feedback | resample | none",
            show_default=_shown("pipeline.strategy"),
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            help="Pairs in flight.",
            show_default=_shown("pipeline.concurrency"),
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Processes running pairs (concurrency split among them).",
            show_default=_shown("pipeline.workers"),
        ),
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Pairs on Ray: --ray (RAY_ADDRESS or a local Ray), --ray auto, --ray HOST:PORT",
            show_default=False,
        ),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    new_run: Annotated[bool, typer.Option("--new-run", help="A new run beside an existing one.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Discard the run at --out, start over.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No live progress display.")] = False,
    progress_every: _ProgressEvery = 30.0,
    profile: Annotated[
        str | None,
        typer.Option("--profile", help="A named profile under the config: sage = the authors' release."),
    ] = None,
) -> None:
    """Generate verified, difficulty-controlled QA pairs (the SAGE loop); rerun the same command to resume.

    The embedded demo model without -c runs small demo settings (minutes on 2 CPU cores); any other
    backend, a config file or --profile runs the paper's (or the profile's). -s and the flags override.
    """
    from sagegen.cli.display import format_summary, generate_display
    from sagegen.loop.session import budget_line, generate_config, resolve_run_dir, run_generate

    # Without a config file the embedded model runs small demo settings (minutes on 2 cores); every
    # other backend, and every --profile, runs the paper's or the profile's budgets; -s and the flags
    # override either.
    flags = {
        "pipeline.num_seeds": num,
        "pipeline.target": target,
        "pipeline.rounds": rounds,
        "pipeline.attempts": k,
        "pipeline.strategy": strategy,
        "pipeline.concurrency": concurrency,
        "pipeline.workers": workers,
        "pipeline.executor": "ray" if ray is not None else None,
        "pipeline.ray_address": ray or None,
    }
    cfg, source = generate_config(config, flag_overrides(set_, flags), profile)
    run_dir = resolve_run_dir(str(out) if out else None, cfg, new_run=new_run)
    from sagegen.doctor import preflight

    preflight(cfg)  # a dead server or a refused key: one line now, before the index or a paid call
    console.print(budget_line(cfg, source), highlight=False, markup=False, soft_wrap=True)
    try:
        with generate_display(console, live=not no_progress, every=progress_every) as on_event:
            res = run_generate(cfg, run_dir, force=force, on_event=on_event)
    except KeyboardInterrupt:
        console.print(
            f"[yellow]interrupted: everything finished so far is in {run_dir}; "
            "rerun the same command to resume[/]",
            highlight=False,
            soft_wrap=True,
        )
        raise
    print(format_summary(res))
    if res.stats.errors:
        raise typer.Exit(1)  # some pairs are unfinished: a script must not mistake this for success


@app.command(rich_help_panel="Generate data")
def profile(name: Annotated[str, typer.Argument(help="A named profile: sage.")]) -> None:
    """Print a profile's YAML (copy it as a starting config for -c)."""
    from sagegen.profiles import profile_text

    print(profile_text(name), end="")


@app.command(name="import", rich_help_panel="Generate data")
def import_(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="The release's JSONL files (initial_questions, feedbacks, processed_data) or folders."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The run directory to create.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing run at --out.")] = False,
) -> None:
    """Import the authors' release outputs into a run ledger (then status / analyze / report / export)."""
    from sagegen.cli.display import format_status
    from sagegen.integrations.sage_release import import_release
    from sagegen.ledger.store import RunStore

    summary = import_release(files, out, force=force)
    print(summary)
    with RunStore.open(out) as store:
        print(format_status(store))


@app.command(rich_help_panel="Generate data")
def status(run: Annotated[Path, typer.Argument(help="A run directory, e.g. runs/default.")]) -> None:
    """Show a run's progress: pairs per state and round, accept rate, LLM calls, tokens and time."""
    from sagegen.cli.display import format_status
    from sagegen.ledger.store import RunStore

    with RunStore.open(run) as store:
        print(format_status(store))


@app.command(rich_help_panel="Generate data")
def estimate(
    run: Annotated[Path, typer.Argument(help="The pilot run directory (made first with --pilot N).")],
    pairs: Annotated[int, typer.Option("--pairs", "-p", help="Target number of accepted pairs.")] = 1000,
    pilot: Annotated[
        int | None, typer.Option(help="Run (or extend) a pilot of N seeds at RUN first.")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Pairs in flight in the real run.")] = 16,
    throughput: Annotated[float | None, typer.Option(help="Server completion tokens/s, all streams.")] = None,
    prompt_throughput: Annotated[float | None, typer.Option(help="Server prompt tokens/s (prefill).")] = None,
    price_in: Annotated[float, typer.Option(help="Price per million prompt tokens.")] = 0.0,
    price_out: Annotated[float, typer.Option(help="Price per million completion tokens.")] = 0.0,
    level: Annotated[float, typer.Option(help="Interval level (bootstrap over the pilot's seeds).")] = 0.9,
    json_out: Annotated[bool, typer.Option("--json", help="Print the estimate as JSON.")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Project LLM calls, tokens, wall time and cost of N accepted pairs from a pilot run, with intervals."""
    from sagegen.loop.estimate import estimate as project
    from sagegen.loop.estimate import estimate_json, format_estimate, pilot_costs

    if pilot is not None:
        from sagegen.cli.display import generate_display
        from sagegen.loop.session import generate_config, run_generate

        cfg, _ = generate_config(config, flag_overrides(set_, {"pipeline.num_seeds": pilot}), None)
        with generate_display(console) as on_event:  # a pilot is a generate run: it shows progress too
            run_generate(cfg, run, on_event=on_event)
    costs, _ = pilot_costs(run)
    res = project(
        costs,
        pairs,
        concurrency=concurrency,
        throughput=throughput,
        prompt_throughput=prompt_throughput,
        price_in=price_in,
        price_out=price_out,
        level=level,
    )
    print(estimate_json(res) if json_out else format_estimate(res))


_ServeIndex = Annotated[
    Path | None,
    typer.Option("--index", help="Serve this index directory (from `sagegen index`)."),
]
_ServeCorpus = Annotated[
    str | None,
    typer.Option("--corpus", help="Corpus to serve, indexed on first use (default: corpus.path / bundled)."),
]
_ServeKind = Annotated[
    str | None,
    typer.Option("--kind", help="bm25 | dense | hybrid (default: retrieval.kind)."),
]
_ServeHost = Annotated[
    str | None,
    typer.Option("--host", help="Interface (default 127.0.0.1); others need server.api_key_env set."),
]
_ServePort = Annotated[
    int | None,
    typer.Option("--port", help="Port (default 8000); 0 picks a free one."),
]
_ServeWorkers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        help="Server processes sharing the port (default 1): past one core. "
        "A worker that dies is restarted; workers that keep dying stop the server "
        "(docs/server.md#concurrency).",
    ),
]


@app.command(rich_help_panel="Corpora and retrieval")
def serve(
    index: _ServeIndex = None,
    corpus: _ServeCorpus = None,
    kind: _ServeKind = None,
    host: _ServeHost = None,
    port: _ServePort = None,
    workers: _ServeWorkers = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Serve a retriever over HTTP: Search-R1's POST /retrieve, GET /health, API docs at /docs."""
    from sagegen.server import serve_from_config

    if index is not None and (corpus is not None or kind is not None):
        raise SagegenError("--index serves a built index as it is; do not combine it with --corpus or --kind")
    flags = {
        "corpus.path": corpus,
        "retrieval.kind": kind,
        "server.host": host,
        "server.port": port,
        "server.workers": workers,
    }
    cfg = resolve_config(config, flag_overrides(set_, flags))

    def ready(url: str) -> None:
        print(f"sagegen retrieval server: {url}/retrieve  (health {url}/health, docs {url}/docs)", flush=True)

    def loading(message: str) -> None:
        console.print(message, highlight=False)

    serve_from_config(cfg, index=index, on_ready=ready, on_loading=loading)


_RunArg = Annotated[Path, typer.Argument(help="A run directory, e.g. runs/default.")]


@app.command(rich_help_panel="After a run")
def analyze(
    run: _RunArg,
    bench: Annotated[
        Path | None,
        typer.Option("--bench", help="FlashRAG JSONL benchmark to check for contamination against."),
    ] = None,
    labels: Annotated[
        bool, typer.Option("--labels", help="LLM-label strategies and failure causes (cached).")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the whole analysis as JSON.")] = False,
    dedup: Annotated[str, typer.Option("--dedup", help="auto | embedding | jaccard.")] = "auto",
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Metrics by round and target S, difficulty agreement, duplicates, leaks; writes RUN/analysis.json.
    RUN may be a benchmark file with --labels: the reasoning strategies of its questions."""
    import json

    from sagegen.analysis.analyze import analyze_run
    from sagegen.cli.tables import print_analysis

    if run.is_file():
        _label_benchmark_file(run, labels, json_out, config, set_)
        return

    label_llm = None
    if labels and (config is not None or set_):
        from sagegen.llm.factory import build_llm

        label_llm = build_llm(resolve_config(config, set_).llm)  # else the run's own judge/LLM config
    result = analyze_run(run, bench=bench, labels=labels, dup_method=dedup, label_llm=label_llm)
    if json_out:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_analysis(result, Console())
        console.print(f"wrote {run / 'analysis.json'}", highlight=False)


def _label_benchmark_file(
    bench: Path, labels: bool, json_out: bool, config: Path | None, set_: list[str] | None
) -> None:
    """``sagegen analyze BENCH.jsonl --labels``: strategies of a benchmark's questions (the paper's
    SAGE-vs-MuSiQue table), cached beside it; the labelling model is ``llm`` of --config/--set."""
    import json

    from sagegen.analysis.labels import benchmark_labels_path, label_benchmark
    from sagegen.analysis.tables import label_tables
    from sagegen.cli.tables import render_rich
    from sagegen.llm.factory import build_llm

    if not labels:
        raise SagegenError(
            f"{bench}: a file is analysed only with --labels (the reasoning strategies of its "
            "questions); give a run directory for the other analyses"
        )
    llm = build_llm(resolve_config(config, set_).llm)
    result = {"benchmark": str(bench), "labels": label_benchmark(bench, llm)}
    if json_out:
        print(json.dumps(result, indent=2, default=str))
        return
    console.print(f"[bold]{bench}[/]", highlight=False)
    for table in label_tables(result):
        if table.id == "labels-strategies":
            console.print(render_rich(table))
    console.print(f"labels cached in {benchmark_labels_path(bench)}", highlight=False)


@app.command(rich_help_panel="After a run")
def report(
    run: _RunArg,
    out: Annotated[Path | None, typer.Option("--out", help="HTML file [RUN/report.html].")] = None,
    max_pairs: Annotated[int, typer.Option("--max-pairs", help="Pairs listed with their traces.")] = 300,
    bench: Annotated[
        Path | None,
        typer.Option("--bench", help="Re-analyse with this FlashRAG benchmark for contamination."),
    ] = None,
    evals: Annotated[
        list[Path] | None,
        typer.Option("--eval", help="A `sagegen eval` output folder to tabulate (repeatable: before/after)."),
    ] = None,
    train_logs: Annotated[
        list[Path] | None,
        typer.Option("--train-log", help="A training log (JSONL or CSV) to plot (repeatable)."),
    ] = None,
) -> None:
    """One self-contained offline HTML report: metrics, charts and every pair with its traces."""
    from sagegen.analysis.analyze import analyze_run, saved_analysis
    from sagegen.analysis.report import write_report

    # A current RUN/analysis.json (from `sagegen analyze`, maybe with --labels) is reused as is.
    analysis = None if bench is not None else saved_analysis(run)
    if analysis is None:
        analysis = analyze_run(run, bench=bench)
    path = write_report(
        run, out, analysis=analysis, max_pairs=max_pairs, evals=evals or [], train_logs=train_logs or []
    )
    print(f"wrote {path}")


@app.command(rich_help_panel="After a run")
def export(
    run: Annotated[Path, typer.Argument(help="A run directory (or a dataset.jsonl of QAPair lines).")],
    format_: Annotated[str, typer.Option("--format", "-f", help="verl | sft | hf | flashrag")] = "verl",
    out: Annotated[Path | None, typer.Option("--out", help="Output folder [RUN/export/FORMAT].")] = None,
    split: Annotated[
        float, typer.Option("--split", help="Test fraction for verl/hf/flashrag (seeded).")
    ] = 0.1,
    dev: Annotated[
        float, typer.Option("--dev", help="flashrag: also write dev.jsonl with this fraction.")
    ] = 0.0,
    min_difficulty: Annotated[
        int, typer.Option("--min-difficulty", help="Keep pairs whose measured difficulty is at least this.")
    ] = 2,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the train/test split.")] = 0,
    include: Annotated[
        list[str] | None,
        typer.Option("--include", help="Also export pairs with this final label: too_easy, incorrect."),
    ] = None,
    data_source: Annotated[
        str, typer.Option("--data-source", help="verl data_source (stock Search-R1: nq, hotpotqa...).")
    ] = "sagegen",
    sft_style: Annotated[str, typer.Option("--sft-style", help="SFT layout: chat | searchr1.")] = "chat",
    all_trajectories: Annotated[
        bool, typer.Option("--all-trajectories", help="SFT: keep forced/malformed correct trajectories too.")
    ] = False,
    per_pair: Annotated[
        int | None,
        typer.Option("--per-pair", help="SFT: at most N trajectories per pair (fewest searches first)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON on stdout instead of the table.")
    ] = False,
) -> None:
    """Export accepted pairs: verl parquet + reward, SFT chats, HF dataset, FlashRAG JSONL."""
    import json

    from sagegen.export.api import export_run

    summary = export_run(
        run,
        format_,
        out,
        split=split,
        min_difficulty=min_difficulty,
        seed=seed,
        labels=("pass", *(include or [])),
        data_source=data_source,
        sft_style=sft_style,
        clean=not all_trajectories,
        per_pair=per_pair,
        dev_split=dev,
    )
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        from sagegen.cli.display import print_export

        print_export(summary)


_IndexCorpus = Annotated[
    str | None,
    typer.Option(
        "--corpus",
        help="Corpus file or folder (.jsonl Search-R1 or {id,title,text}, .parquet, "
        "a folder of .txt/.md); default: corpus.path, else the bundled Wikipedia leads.",
    ),
]
_IndexKind = Annotated[
    str | None,
    typer.Option("--kind", help="bm25 | dense | hybrid (default: retrieval.kind)."),
]
_IndexOut = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Index directory (default: retrieval.index_dir/<kind>-<hash>)."),
]


def _retrieval_overrides(set_: list[str] | None, corpus: str | None, kind: str | None) -> list[str]:
    return flag_overrides(set_, {"corpus.path": corpus, "retrieval.kind": kind})


@app.command(rich_help_panel="Corpora and retrieval")
def index(
    corpus: _IndexCorpus = None,
    kind: _IndexKind = None,
    out: _IndexOut = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if the index is up to date.")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Build the search index of a corpus (atomically; an up-to-date index is reused)."""
    from sagegen.cli.retrieval import run_index

    cfg = resolve_config(config, _retrieval_overrides(set_, corpus, kind))
    try:
        summary = run_index(cfg, console, out=out, force=force)
    except KeyboardInterrupt:
        # An index is built in a temporary folder and moved into place only when complete.
        console.print(
            "[yellow]interrupted: no partial index was kept (an index already in place is "
            "untouched); rerun the same command to build it from the start[/]",
            highlight=False,
            soft_wrap=True,
        )
        raise
    print(summary["path"])


@app.command(rich_help_panel="Corpora and retrieval")
def search(
    query: Annotated[list[str], typer.Argument(help="One or more queries (searched as one batch).")],
    k: Annotated[int | None, typer.Option("-k", "--k", help="Passages per query.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per query on stdout.")] = False,
    index: Annotated[Path | None, typer.Option("--index", help="Search this index directory.")] = None,
    corpus: _IndexCorpus = None,
    kind: _IndexKind = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Search the corpus index (built first if missing) and show the top passages."""
    from sagegen.cli.retrieval import run_search

    if k is not None and k < 1:
        raise SagegenError("-k must be at least 1")
    cfg = resolve_config(config, _retrieval_overrides(set_, corpus, kind))
    run_search(cfg, query, console, k=k, index=index, as_json=as_json)


_TrainOut = Annotated[
    Path | None,
    typer.Option("--out", help="Output folder (default: train.output_dir)."),
]
_TrainBackend = Annotated[
    str | None,
    typer.Option("--backend", help="trl (this machine) | verl (cluster)."),
]
_TrainSteps = Annotated[int | None, typer.Option("--steps", help="GRPO steps (train.steps).")]
_TrainSft = Annotated[
    int | None,
    typer.Option("--sft-warmup", help="SFT warm-up steps before RL (train.sft_warmup_steps)."),
]
_TrainSftData = Annotated[
    Path | None,
    typer.Option("--sft-data", help="SFT trajectories JSONL (default: built from DATA)."),
]
_TrainEval = Annotated[
    Path | None,
    typer.Option("--eval", help="After training: base vs trained on this FlashRAG JSONL."),
]


@app.command(rich_help_panel="Search agents")
def train(
    data: Annotated[Path, typer.Argument(help="dataset.jsonl / run dir, FlashRAG JSONL, or verl parquet.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: _TrainOut = None,
    backend: _TrainBackend = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="verl: write the recipe, print it.")] = False,
    steps: _TrainSteps = None,
    sft_warmup: _TrainSft = None,
    sft_data: _TrainSftData = None,
    eval_bench: _TrainEval = None,
    eval_limit: Annotated[int, typer.Option("--eval-limit", help="Questions of --eval to use.")] = 20,
    progress_every: _ProgressEvery = 30.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON on stdout instead of the table.")
    ] = False,
) -> None:
    """Train a search agent with RL (GRPO + the search tool), or emit the verl cluster recipe."""
    import json

    flags = {
        "train.backend": backend,
        "train.steps": steps,
        "train.sft_warmup_steps": sft_warmup,
        "train.sft_data": str(sft_data) if sft_data else None,
        "train.output_dir": str(out) if out else None,
    }
    cfg = resolve_config(config, flag_overrides(set_, flags))
    out_dir = Path(cfg.train.output_dir)
    if cfg.train.backend == "verl":
        from sagegen.integrations.verl.corpus import served_corpus
        from sagegen.integrations.verl.recipe import convert_for_tools, write_recipe

        if not dry_run:
            raise SagegenError(
                "--backend verl runs on a GPU cluster: use --dry-run here to write the recipe "
                "(run_verl.sh) and copy it there; see examples/verl/README.md"
            )
        served = served_corpus(data, cfg)  # before anything is written: refuses when it cannot know
        data_dir = data.parent if data.is_file() else data
        if (data_dir / "train.parquet").is_file():  # an export: rewrite its prompts for the tool rollout
            convert_for_tools(data_dir, out_dir / "data", max_searches=cfg.train.max_turns)
            data_dir = out_dir / "data"
        files = write_recipe(cfg, data_dir, out_dir, served)
        print(files["script"].read_text())
        console.print(
            f"wrote {files['script']} and {files['tool_config']}; it serves {served.describe()}",
            highlight=False,
        )
        if files["checked"]:
            console.print(
                f"checked against verl {files['checked']['verl']}: Hydra config and "
                "validate_config accept every override",
                highlight=False,
            )
        else:
            console.print(
                "not checked here (no verl; set SAGEGEN_VERL_PYTHON to an interpreter with "
                "verl): run_verl.sh checks with the cluster's verl before training",
                highlight=False,
            )
        return
    if dry_run:
        raise SagegenError("--dry-run is for --backend verl")
    from sagegen.doctor import preflight
    from sagegen.ledger.lock import DirLock

    preflight(cfg)  # the judge reward or an eval model behind a server: reachable before training starts
    from sagegen.train.grpo import train as run_train

    with DirLock(out_dir, "training run"):  # two trainers in one folder would overwrite each other
        result = run_train(cfg, data, progress=lambda m: console.print(m, highlight=False, markup=False))
    summary = result.summary()
    if eval_bench is not None:
        from sagegen.cli.display import CompareProgress
        from sagegen.train.compare import compare

        shown = CompareProgress(console, every=progress_every)
        try:
            cmp = compare(
                cfg,
                eval_bench,
                cfg.train.model,
                result.checkpoint,
                out_dir / "comparison",
                limit=eval_limit,
                seed=cfg.train.seed,
                watch=shown.watch,
            )
        finally:
            shown.close()
        console.print((out_dir / "comparison" / "comparison.md").read_text(), highlight=False, markup=False)
        summary["comparison"] = cmp["metrics"]
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        from sagegen.cli.display import print_facts

        print_facts(summary, f"sagegen train ({cfg.train.backend})")


_HELP_ORDER = ["Generate data", "Corpora and retrieval", "Search agents", "After a run", "Other"]
# Typer lists panels in registration order; list them in the order a user meets them instead.
app.registered_commands.sort(key=lambda c: _HELP_ORDER.index(c.rich_help_panel or "Other"))


def quiet_third_party_bars() -> None:
    """Each command draws its own progress (or prints plain lines in a log); the tqdm bars of
    huggingface_hub, transformers ("Loading weights"), datasets and sentence-transformers would
    only interleave with it. ``--verbose`` (anywhere on the line) keeps them. Set before those
    libraries are imported: they read these switches once."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers follows this switch
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # its fork warning is noise here too


def main() -> None:
    import logging
    import os
    import sqlite3

    from sagegen.errors import scrub
    from sagegen.ledger.damage import ledger_error, os_error

    # --debug (anywhere on the line) or SAGEGEN_DEBUG=1: let errors raise with their traceback.
    debug = os.environ.get("SAGEGEN_DEBUG", "") not in ("", "0") or "--debug" in sys.argv[1:]
    verbose = debug or "--verbose" in sys.argv[1:]
    sys.argv[1:] = [a for a in sys.argv[1:] if a not in ("--debug", "--verbose")]
    if not verbose:
        quiet_third_party_bars()
    # `--ray` takes an optional address: alone (last, or before another option) it means "--ray=".
    sys.argv[1:] = [
        "--ray=" if a == "--ray" and (i + 1 == len(sys.argv) or sys.argv[i + 1].startswith("-")) else a
        for i, a in enumerate(sys.argv[1:], 1)
    ]

    # The corpus loader's notices (a skipped unreadable document, the folder summary) go to stderr.
    corpus_log = logging.getLogger("sagegen.corpus")
    if not corpus_log.handlers:
        corpus_log.addHandler(logging.StreamHandler(sys.stderr))
        corpus_log.setLevel(logging.INFO)
    try:
        app()
    except (SagegenError, sqlite3.DatabaseError, OSError) as e:
        if debug:
            raise
        if isinstance(e, sqlite3.DatabaseError):  # not a ledger's (those say their file): the call cache's
            e = ledger_error("the LLM call cache (llm.cache_path)", e)
        elif isinstance(e, OSError):
            e = os_error(e)
        console.print(f"error: {scrub(str(e))}", style="bold red", markup=False, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
