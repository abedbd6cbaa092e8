"""``sagegen report RUN``: one self-contained, offline HTML file a researcher browses.

No CDN, no external file: the charts are inline SVG (:mod:`sagegen.analysis.charts`), the page is
Jinja2 templates with the styling and the small filter script inlined (``analysis/templates/``), and
the tables come from :mod:`sagegen.analysis.tables`, the same ones ``sagegen analyze`` prints. Every
piece of run data (questions, answers, traces) is HTML-escaped by the templates' autoescaping,
because it comes from LLMs and retrieved web/corpus text.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import jinja2

from sagegen.analysis import charts as C
from sagegen.analysis import tables as T
from sagegen.ledger.outcomes import OUTCOMES, outcome
from sagegen.ledger.outcomes import name as outcome_name
from sagegen.ledger.store import PairRecord, RunStore

REPORT_FILE = "report.html"
#: A message's first characters are shown; the rest of it sits in a collapsed <details> (nothing is cut).
MSG_CHARS = 2500
#: Retrieved passages are the bulk of a trace: a glimpse is enough until the reader opens them.
INFO_CHARS = 600
#: The training curves a reader looks for first; every other column follows alphabetically.
KEY_TRAIN_COLUMNS = (
    "reward_mean",
    "reward",
    "accuracy",
    "searches_per_episode",
    "reward_std",
    "tool_calls_per_episode",
)
#: Columns of a training log that are bookkeeping, not curves.
LOG_SKIP = {
    "step",
    "global_step",
    "epoch",
    "time",
    "timestamp",
    "wall",
    "seconds",
    "elapsed_s",
    "lr",
    "learning_rate",
}  # elapsed_s: sagegen train's running wall time (older logs: seconds)
#: Section anchors and titles, in page order (the table of contents shows those present).
SECTIONS = {
    "summary": "Summary",
    "rounds": "Metrics by round",
    "targets": "Metrics by target S",
    "difficulty": "Target S vs measured difficulty",
    "answer-types": "Answer types",
    "cost": "Cost per accepted pair",
    "quality": "Quality checks",
    "labels": "Labels",
    "evaluations": "Evaluations",
    "training": "Training",
    "pairs": "Pairs",
}


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(
            lambda name: files(__package__).joinpath("templates").joinpath(name).read_text(encoding="utf-8")
        ),
        autoescape=True,  # run data comes from LLMs and retrieved text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def load_eval_summary(path: str | Path) -> dict[str, Any]:
    """A ``sagegen eval`` summary: the output folder (its ``summary.json``) or the file itself."""
    from sagegen.errors import InputError

    p = Path(path)
    f = p / "summary.json" if p.is_dir() else p
    if not f.is_file():
        raise InputError("no sagegen eval summary here (expected summary.json)", path=p)
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON ({e.msg})", path=f) from None
    if not isinstance(data, dict) or "questions" not in data:
        raise InputError("not a sagegen eval summary", path=f, field="questions")
    return data


def load_train_log(path: str | Path) -> list[dict[str, float]]:
    """Numeric rows of a training log (JSONL objects or CSV with a header); other values dropped."""
    import csv

    from sagegen.errors import InputError

    p = Path(path)
    if not p.is_file():
        raise InputError("training log not found", path=p)
    rows: list[dict[str, Any]] = []
    with p.open(encoding="utf-8") as f:
        if p.suffix == ".csv":
            rows = list(csv.DictReader(f))
        else:
            for no, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise InputError(f"not valid JSON ({e.msg})", path=p, line=no) from None
    out = []
    for row in rows:
        clean: dict[str, float] = {}
        for k, v in row.items() if isinstance(row, dict) else []:
            try:
                x = float(v)
            except (TypeError, ValueError):
                continue
            if x == x and abs(x) != float("inf"):  # drop NaN/inf, they break the scale
                clean[str(k)] = x
        out.append(clean)
    return out


def train_columns(rows: list[dict[str, float]]) -> list[str]:
    """Every plottable column of a training log: the key ones first, then the rest alphabetically."""
    present = {k for r in rows for k in r} - LOG_SKIP
    return [k for k in KEY_TRAIN_COLUMNS if k in present] + sorted(present - set(KEY_TRAIN_COLUMNS))


def train_charts(path: Path) -> list[str]:
    rows = load_train_log(path)
    xkey = next((k for k in ("step", "global_step") if any(k in r for r in rows)), None)
    return [
        C.svg_curve(
            {key: [(r.get(xkey, i) if xkey else float(i), r[key]) for i, r in enumerate(rows) if key in r]},
            title=key,
            xlabel=xkey or "row",
        )
        for key in train_columns(rows)
    ]


def evals_chart(summaries: list[tuple[str, dict[str, Any]]]) -> str:
    keys = (
        ("judge_acc", "judge acc"),
        ("pass_at_k", "pass@K"),
        ("answered", "answered"),
        ("forced", "forced"),
    )
    return C.svg_lines(
        {
            label: [
                (i + 1, 100 * float(s[key]) if s.get(key) is not None else None)
                for i, (_, s) in enumerate(summaries)
            ]
            for key, label in keys
        },
        title="Evaluations, in the order given (%)",
        xlabel="evaluation",
        xticks={i + 1: name for i, (name, _) in enumerate(summaries)},
    )


def run_charts(a: dict[str, Any]) -> dict[str, Any]:
    """Every chart of the run itself, from the analysis dict."""
    by_round = {int(k): v for k, v in a["by_round"].items()}
    fun, check = a["funnel"], a.get("answer_check") or {}
    types = sorted(set(a["answer_types"]) | set(check.get("found", {})))
    series = {"requested": {k: v["n"] for k, v in a["answer_types"].items()}}
    if check.get("checked"):
        series["found"] = check["found"]
    # the per-accepted-pair figures come from the usage table itself, so chart and table agree to the digit
    per = [(row[0], row[-2], row[-1]) for row in T.usage_table(a).rows if row[-1] is not None]
    dv = a.get("diversity") or {}
    return {
        "rounds": C.svg_lines(
            {
                "correct": [(r, m["pct_correct"]) for r, m in by_round.items()],
                "pass": [(r, m["pct_pass"]) for r, m in by_round.items()],
            },
            title="% correct and % pass after each round",
        ),
        "funnel": C.svg_hbars(
            [(label, fun.get(k, 0)) for k, label in T.FUNNEL[:-1]], title="Where the seeds ended"
        ),
        "targets": [
            C.svg_hist(
                {"difficulty": m["difficulty_hist"], "searches per attempt": m["attempt_searches_hist"]},
                title=f"Target S={s}: {m['n']} pairs, {m['correct']} correct",
            )
            for s, m in a["by_target"].items()
        ],
        "agreement": C.svg_scatter(
            {
                (int(t), int(d)): n
                for t, row in a["difficulty_agreement"]["matrix"].items()
                for d, n in row.items()
            },
            title="Target S against measured difficulty",
            xlabel="target S",
            ylabel="measured difficulty",
        ),
        "answer_types": C.svg_bars(series, types, title="Answer types: requested vs found", xlabel="type"),
        "cost": [
            C.svg_hbars(
                [(r, t) for r, _, t in per], title="Tokens per accepted pair, by role", fmt="{:,.0f}"
            ),
            C.svg_hbars(
                [(r, c) for r, c, _ in per], title="LLM calls per accepted pair, by role", fmt="{:.1f}"
            ),
        ]
        if per
        else [],
        "diversity": C.svg_hist(
            {"questions": {int(k): v for k, v in dv["nn_histogram"].items()}},
            title="nearest-neighbour similarity of each question",
            xlabel="similarity × 10",
        )
        if dv
        else "",
    }


def message_view(m: dict[str, Any]) -> dict[str, str]:
    role = str(m.get("role", "?"))
    content = str(m.get("content") or "")
    if m.get("tool_calls"):
        content += "\n" + json.dumps(m["tool_calls"], ensure_ascii=False)
    # A tool result, or a user turn that is an <information> block (the prompt-format solvers); a system
    # prompt that merely names the tag is instructions, shown like any other message.
    retrieved = role == "tool" or (role == "user" and content.lstrip().startswith("<information>"))
    limit = INFO_CHARS if retrieved else MSG_CHARS
    return {
        "role": role,
        "cls": f"msg {role}" + (" retrieved" if retrieved else ""),
        "head": content[:limit],
        "rest": content[limit:],
    }


def _trace(store: RunStore, trace_id: str | None) -> Any:
    try:
        return store.trajectory(trace_id) if trace_id else None
    except KeyError:  # a trace the ledger lost (an old run): the pair is still shown
        return None


def _attempt_view(att: Any, store: RunStore) -> dict[str, Any]:
    traj = _trace(store, att.trace_id)
    return {
        "mark": "✔" if att.judgement.correct else "✘",
        "index": att.index,
        "searches": att.num_searches,
        "answer": str(traj.answer) if traj else "(trajectory missing)",
        "messages": [message_view(m) for m in traj.messages] if traj else [],
    }


def pair_view(p: PairRecord, store: RunStore) -> dict[str, Any]:
    """What the template shows of one pair: each round's generator trace, then its solver attempts."""
    last = next((r.candidate for r in reversed(p.rounds) if r.candidate), None)
    shown = p.qa or last
    q = shown.question if shown else "(no parsable pair)"
    a = shown.answer if shown else ""
    found = getattr(p.qa, "answer_type_found", None)  # the checked type, where the run recorded one
    rounds = []
    for r in p.rounds:
        v, gen = r.verdict, _trace(store, r.gen_trace_id)
        attempts = [_attempt_view(att, store) for att in r.attempts]
        verdict = (
            f"{v.label} · correct {v.correct} · difficulty {T.num()(v.difficulty)} · Avg@K {v.avg_at_k:.2f}"
            if v
            else "not verified"
        )
        rounds.append(
            {
                "round": r.round,
                "kind": r.kind,
                "candidate": r.candidate,
                "verdict": verdict,
                # shown for a failed generation too: its trace says why no pair came out
                "generator": {
                    "searches": gen.num_searches,
                    "messages": [message_view(m) for m in gen.messages],
                }
                if gen
                else None,
                "attempts": attempts,
            }
        )
    return {
        "index": p.index,
        # Where the pair ended, by the one name of each outcome (sagegen.ledger.outcomes), as every screen
        # says it.
        "state": outcome(p.state, p.output),
        "state_text": outcome_name(outcome(p.state, p.output)),
        "target": p.target,
        "difficulty": T.num()(p.qa.difficulty if p.qa else None),
        "answer_type": p.answer_type + (f" (found {found})" if found and found != p.answer_type else ""),
        "question": q,
        "answer": a,
        "search_text": f"{q} {a}".lower(),
        "rounds": rounds,
    }


def _tables(a: dict[str, Any], evals: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    quality = [T.near_duplicates_table(a), T.leaks_table(a)]
    if "contamination" in a:
        quality.append(T.contamination_table(a))
    return {
        "funnel": T.funnel_table(a),
        "rounds": T.rounds_table(a),
        "targets": T.targets_table(a),
        "agreement": T.agreement_table(a) if a["difficulty_agreement"]["matrix"] else None,
        "answer_types": T.answer_types_table(a),
        "usage": T.usage_table(a),
        "replies": T.replies_table(a) if a.get("llm_replies") else None,
        "quality": [t for t in quality if t.rows],
        "labels": T.label_tables(a),
        "evals": T.evals_table(evals),
    }


def render_report(
    run_dir: str | Path,
    analysis: dict[str, Any] | None = None,
    *,
    max_pairs: int = 300,
    evals: Sequence[str | Path] = (),
    train_logs: Sequence[str | Path] = (),
) -> str:
    """The report's HTML for a run (computing the analysis when none is given)."""
    from sagegen.analysis.analyze import analyze_run, saved_analysis

    run_dir = Path(run_dir)
    a = analysis or saved_analysis(run_dir) or analyze_run(run_dir, write=False, dup_method="jaccard")
    summaries = [(p.name if p.is_dir() else p.parent.name, load_eval_summary(p)) for p in map(Path, evals)]
    tables = _tables(a, summaries)
    charts = {
        **run_charts(a),
        "evals": evals_chart(summaries) if summaries else "",
        "training": [(Path(p).name, train_charts(Path(p))) for p in train_logs],
    }
    present = {
        "cost": bool(a.get("llm_usage")),
        "labels": bool(tables["labels"]),
        "evaluations": bool(summaries),
        "training": bool(train_logs),
    }
    cfg = a.get("config") or {}
    with RunStore.open(run_dir) as store:
        pairs = list(store.pairs())
        views = [pair_view(p, store) for p in pairs[:max_pairs]]
    return (
        _env()
        .get_template("report.html.j2")
        .render(
            run_id=a.get("run_id", run_dir.name),
            run_dir=str(run_dir),
            generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            pipe=cfg.get("pipeline") or {},
            llm=cfg.get("llm") or {},
            retrieval=cfg.get("retrieval") or {},
            toc={k: v for k, v in SECTIONS.items() if present.get(k, True)},
            tables=tables,
            charts=charts,
            agreement=T.agreement_line(a),
            imported=T.import_line(a),
            quality=T.quality_lines(a),
            pairs=views,
            total_pairs=len(pairs),
            outcomes=[(k, outcome_name(k)) for k in OUTCOMES],
        )
    )


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    analysis: dict[str, Any] | None = None,
    max_pairs: int = 300,
    evals: Sequence[str | Path] = (),
    train_logs: Sequence[str | Path] = (),
) -> Path:
    run_dir = Path(run_dir)
    path = Path(out) if out else run_dir / REPORT_FILE
    html = render_report(run_dir, analysis, max_pairs=max_pairs, evals=evals, train_logs=train_logs)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path
