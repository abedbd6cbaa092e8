"""Every table of ``sagegen analyze`` and the HTML report, each defined once: its columns, their
formatting and its rows, from the analysis dict (:func:`sagegen.analysis.analyze.analyze_run`).

A :class:`Table` is plain data. The report renders it as HTML (``templates/macros.html.j2``) and the
terminal through :func:`sagegen.cli.tables.render_rich`; neither decides a column or a number format.
The sentences that go with the tables (duplicates, diversity, leaks) are here too, for the same reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sagegen.ledger.outcomes import OUTCOMES
from sagegen.ledger.outcomes import name as outcome_name

Fmt = Callable[[Any], str]


def num(digits: int = 1) -> Fmt:
    """Floats to ``digits`` decimals, ints as they are, missing values as an en dash."""

    def fmt(x: Any) -> str:
        if x is None:
            return "–"
        return f"{x:.{digits}f}" if isinstance(x, float) else str(x)

    return fmt


def count(x: Any) -> str:
    """Whole numbers with thousands grouped (tokens run into millions)."""
    return "–" if x is None else f"{round(x):,}"


@dataclass(frozen=True)
class Column:
    label: str
    fmt: Fmt = field(default_factory=lambda: num(1))
    #: Text columns are left-aligned; numbers right-aligned so their digits line up.
    text: bool = False


@dataclass(frozen=True)
class Table:
    id: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Any, ...], ...]
    note: str = ""
    #: Shade numeric cells by value (a heat table: target S against measured difficulty).
    heat: bool = False
    footer: tuple[Any, ...] | None = field(default=None)

    def cells(self) -> list[list[str]]:
        return [self._format(r) for r in self.rows]

    def footer_cells(self) -> list[str] | None:
        return self._format(self.footer) if self.footer is not None else None

    def _format(self, row: Sequence[Any]) -> list[str]:
        return [c.fmt(v) for c, v in zip(self.columns, row, strict=True)]

    def shade(self, value: Any) -> float:
        """0..1 for a heat cell: the value relative to the table's largest."""
        top = max((v for r in self.rows for v in r[1:] if isinstance(v, (int, float))), default=0)
        return float(value) / top if self.heat and top and isinstance(value, (int, float)) else 0.0


# ----------------------------------------------------------------------------- run tables

#: The funnel's columns: seeds, then each outcome by its one name (sagegen.ledger.outcomes).
FUNNEL = (("seeds", "seeds"), *((k, outcome_name(k)) for k in OUTCOMES))


def funnel_table(a: dict[str, Any]) -> Table:
    fun = a["funnel"]
    return Table(
        "funnel",
        "Where the seeds ended",
        tuple(Column(label, count) for _, label in FUNNEL),
        (tuple(fun.get(k, 0) for k, _ in FUNNEL),),
    )


def rounds_table(a: dict[str, Any]) -> Table:
    return Table(
        "rounds",
        "State after each round (paper's table)",
        (
            Column("round", str),
            Column("pairs", str),
            Column("% correct"),
            Column("% pass"),
            Column("Avg@K"),
            Column("mean #search", num(2)),
            Column("mean searches / attempt", num(2)),
            Column("attempts run / verdict", num(2)),
        ),
        tuple(
            (
                int(r),
                m["n"],
                m["pct_correct"],
                m["pct_pass"],
                m["avg_at_k"],
                m["mean_searches"],
                m["mean_attempt_searches"],
                m.get("mean_attempts"),
            )
            for r, m in a["by_round"].items()
        ),
        note="State of every pair after round r: a pair that passed earlier keeps its passing verdict. "
        "mean #search = mean difficulty (fewest searches among correct attempts) of correct pairs. "
        "Avg@K is over the attempts actually run (early stopping may decide a verdict before all K).",
    )


def _hist_text(h: dict[Any, int]) -> str:
    return " ".join(f"{k}:{v}" for k, v in h.items()) or "–"


def targets_table(a: dict[str, Any]) -> Table:
    return Table(
        "targets",
        "Final state by target S",
        (
            Column("target S", str),
            Column("pairs", str),
            Column("% correct"),
            Column("% pass"),
            Column("Avg@K"),
            Column("mean difficulty", num(2)),
            Column("difficulty histogram", _hist_text, text=True),
        ),
        tuple(
            (
                int(s),
                m["n"],
                m["pct_correct"],
                m["pct_pass"],
                m["avg_at_k"],
                m["mean_searches"],
                m["difficulty_hist"],
            )
            for s, m in a["by_target"].items()
        ),
    )


def agreement_table(a: dict[str, Any]) -> Table:
    matrix = a["difficulty_agreement"]["matrix"]
    cols = sorted({int(d) for row in matrix.values() for d in row})
    return Table(
        "agreement",
        "Target S against measured difficulty (correct pairs)",
        (Column("target \\ measured", str), *(Column(str(c), str) for c in cols)),
        tuple((int(t), *(row.get(str(c), 0) for c in cols)) for t, row in matrix.items()),
        heat=True,
    )


def answer_types_table(a: dict[str, Any]) -> Table:
    check = a.get("answer_check") or {}
    checked = check.get("checked", 0)
    cols = [Column("type", text=True), Column("pairs", str), Column("share %"), Column("% pass")]
    if checked:
        cols += [Column("found as this type", str), Column("checked", str), Column("mismatched", str)]
    rows = []
    for k, v in a["answer_types"].items():
        row: tuple[Any, ...] = (
            k,
            v["n"],
            100 * v["share"] if v["share"] is not None else None,
            v["pct_pass"],
        )
        if checked:
            t = check["by_type"].get(k, {})
            row += (check["found"].get(k, 0), t.get("checked", 0), t.get("mismatched", 0))
        rows.append(row)
    note = (
        f"{checked} of {check.get('pairs', 0)} final pairs carry the type their answer was found to be."
        if checked
        else "The pairs carry no checked answer type (answer_type_found): the types are the requested ones."
    )
    return Table("answer-types", "Answer types", tuple(cols), tuple(rows), note=note)


def _per(x: float, accepted: int) -> float | None:
    return x / accepted if accepted else None


def usage_table(a: dict[str, Any]) -> Table:
    """LLM calls and tokens per role, and what each accepted pair cost (from the ledger's llm_calls)."""
    usage = a.get("llm_usage") or {}
    accepted = a["funnel"]["accepted"]
    keys = ("calls", "cached", "errors", "prompt_tokens", "completion_tokens", "seconds")

    def row(name: str, u: dict[str, float]) -> tuple[Any, ...]:
        tokens = u["prompt_tokens"] + u["completion_tokens"]
        return (
            name,
            *(u[k] for k in keys),
            _per(u["calls"], accepted),
            _per(tokens, accepted),
        )

    total = {k: sum(u[k] for u in usage.values()) for k in keys}
    return Table(
        "usage",
        "LLM usage and cost per accepted pair",
        (
            Column("role", text=True),
            Column("calls", count),
            Column("cached", count),
            Column("errors", count),
            Column("prompt tokens", count),
            Column("completion tokens", count),
            Column("seconds", num(1)),
            Column("calls / accepted", num(1)),
            Column("tokens / accepted", count),
        ),
        tuple(row(r, u) for r, u in usage.items()),
        note=f"Every call of the run, cache hits included; per accepted pair = over the {accepted} pairs "
        "written to dataset.jsonl (– while none is).",
        footer=row("all", total) if usage else None,
    )


def replies_table(a: dict[str, Any]) -> Table:
    """Per role, what the fresh replies were like (the ledger's llm_replies; docs/models.md): cut at the
    token cap, empty answers, calls that thought, reasoning tokens the server reported."""
    replies = a.get("llm_replies") or {}
    cols = ("calls", "cut", "empty", "thinking", "reasoning_tokens")
    return Table(
        "replies",
        "LLM replies: cut at the cap, empty, thinking",
        (
            Column("role", text=True),
            Column("fresh calls", count),
            Column("cut at the cap", count),
            Column("empty answers", count),
            Column("thought", count),
            Column("reasoning tokens", count),
        ),
        tuple((role, *(r.get(k, 0) for k in cols)) for role, r in replies.items()),
        note="Calls that came back with finish_reason=length, with no answer text and no tool call, and with "
        "reasoning (a field, <think> or reasoning tokens). Cut calls mean the role's token cap is too small "
        "for the model's thinking: raise generator.max_turn_tokens, solver.max_turn_tokens or "
        "judge.max_tokens.",
    )


def near_duplicates_table(a: dict[str, Any], limit: int = 50) -> Table:
    return Table(
        "near-duplicates",
        "Near-duplicate questions",
        (Column("a", text=True), Column("b", text=True), Column("similarity", num(3))),
        tuple((x["a"], x["b"], x["similarity"]) for x in a["duplicates"]["near_pairs"][:limit]),
    )


def leaks_table(a: dict[str, Any], limit: int = 50) -> Table:
    return Table(
        "leaks",
        "Answer appears in its question",
        (Column("id", text=True), Column("question", text=True), Column("answer", text=True)),
        tuple((x["id"], x["question"], x["answer"]) for x in a["leaks"][:limit]),
    )


def contamination_table(a: dict[str, Any], limit: int = 50) -> Table:
    c = a["contamination"]
    return Table(
        "contamination",
        f"Contamination vs {c['benchmark']}",
        (
            Column("id", text=True),
            Column("question", text=True),
            Column("exact", str),
            Column("overlap", num(3)),
            Column("benchmark id", text=True),
        ),
        tuple(
            (x["id"], x["question"], x["exact"], x["overlap"], x["benchmark_id"]) for x in c["items"][:limit]
        ),
    )


def label_tables(a: dict[str, Any]) -> list[Table]:
    return [
        Table(
            f"labels-{kind}",
            f"{kind.replace('_', ' ')} (n={lab['n']}, unparsed {lab['unparsed']})",
            (Column("category", text=True), Column("count", str), Column("%")),
            tuple((k, lab["counts"][k], lab["pct"][k]) for k in lab["counts"]),
        )
        for kind, lab in (a.get("labels") or {}).items()
        if lab
    ]


EVAL_COLUMNS = (
    ("questions", "questions", str),
    ("k", "K", str),
    ("em", "EM", num(3)),
    ("f1", "F1", num(3)),
    ("judge_acc", "judge acc", num(3)),
    ("pass_at_k", "pass@K", num(3)),
    ("mean_searches", "mean searches", num(2)),
    # How attempts ended: with an answer, forced to answer at the search budget, or failed outright.
    ("answered", "answered", num(2)),
    ("forced", "forced", num(2)),
    ("failed", "failed", num(2)),
)


def evals_table(summaries: list[tuple[str, dict[str, Any]]]) -> Table:
    return Table(
        "evals",
        "Evaluations",
        (Column("evaluation", text=True), *(Column(label, f) for _, label, f in EVAL_COLUMNS)),
        tuple((name, *(s.get(key) for key, _, _ in EVAL_COLUMNS)) for name, s in summaries),
        note="From sagegen eval summaries, in the order given (e.g. the base model, then the trained "
        "checkpoint, on the same benchmark and retriever). Accuracies are avg@K; answered / forced / failed "
        "are shares of attempts.",
    )


def analysis_tables(a: dict[str, Any]) -> list[Table]:
    """The main tables, in reading order (what ``sagegen analyze`` prints)."""
    tables = [funnel_table(a), rounds_table(a), targets_table(a)]
    if a["difficulty_agreement"]["matrix"]:
        tables.append(agreement_table(a))
    tables += [answer_types_table(a), usage_table(a)]
    if a.get("llm_replies"):
        tables.append(replies_table(a))
    tables += label_tables(a)
    return tables


# ----------------------------------------------------------------------------- sentences


def _f(x: Any, digits: int = 2) -> str:
    return num(digits)(x)


def import_line(a: dict[str, Any]) -> str | None:
    """What an imported run's source recorded (``RUN/import.json``), or None for a generated run."""
    m = a.get("import")
    if not isinstance(m, dict):
        return None

    def v(key: str) -> str:
        return "unknown" if m.get(key) is None else str(m[key])

    rounds = "unknown" if m.get("feedback_rounds") is None else f"{m['feedback_rounds'] + 1}"
    targets = "unknown" if m.get("target_min") is None else f"{m['target_min']}-{m['target_max']}"
    return (
        f"imported from {m.get('source', 'another run')}: generator {v('generator_model')} · reviser "
        f"{v('reviser_model')} · solver {v('solver_model')} · judge {v('judge_model')} · retriever "
        f"{v('retriever')} · rounds {rounds} (feedback {v('feedback_rounds')}) · targets S {targets} · "
        f"attempts K {v('attempts')} · min steps {v('min_search_step')} · "
        f"{len(m.get('skipped') or [])} lines skipped without a source record"
    )


def agreement_line(a: dict[str, Any]) -> str:
    ag = a["difficulty_agreement"]
    return (
        f"{ag['n']} correct pairs · exact {_f(ag['exact'])} · "
        f"measured ≥ target {_f(ag['at_least_target'])} · "
        f"MAE {_f(ag['mae'])} · mean (measured − target) {_f(ag['mean_diff'])} · "
        f"Spearman {_f(ag['spearman'])}"
    )


def duplicates_line(a: dict[str, Any]) -> str:
    d = a["duplicates"]
    return (
        f"Near-duplicates among {d['n']} accepted questions ({d['method']}, threshold {d['threshold']}): "
        f"{d['exact_duplicates']} exact, {len(d['near_pairs'])} near pairs."
    )


def diversity_line(a: dict[str, Any]) -> str | None:
    dv = a.get("diversity")  # absent from analysis.json files written before it existed
    if not dv:
        return None
    return (
        f"Diversity of {dv['n']} {dv['over']} questions ({dv['method'] or '–'} vectors): spread "
        f"{_f(dv['spread'], 3)}, mean nearest-neighbour similarity {_f(dv['mean_nn_similarity'], 3)}, "
        f"{dv['distinct_entities']} distinct of {dv['entities']} entity mentions, "
        f"{dv['distinct_seeds']} distinct seed passages."
    )


def leaks_line(a: dict[str, Any]) -> str:
    return f"Answer appears in its question: {len(a['leaks'])}."


def contamination_line(a: dict[str, Any]) -> str | None:
    c = a.get("contamination")
    if not c:
        return None
    return (
        f"Contamination vs {c['benchmark']} ({c['benchmark_size']} questions): {c['flagged']} of {c['n']} "
        f"flagged ({c['exact']} exact, {c['ngram']}-gram overlap ≥ {c['threshold']})."
    )


def quality_lines(a: dict[str, Any]) -> list[str]:
    lines = [duplicates_line(a), diversity_line(a), leaks_line(a), contamination_line(a)]
    return [x for x in lines if x]
