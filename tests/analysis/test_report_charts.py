"""The report's pieces on their own: tick layout, the charts' geometry, each table defined once and
drawn the same for the terminal and the HTML, the answer-type check, cost per accepted pair, traces."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from fixture_ledger import PAIRS, build_ledger
from sagegen.analysis import charts as C
from sagegen.analysis import tables as T
from sagegen.analysis.analyze import analyze_run, answer_check
from sagegen.analysis.report import (
    INFO_CHARS,
    MSG_CHARS,
    _env,
    message_view,
    render_report,
    run_charts,
    train_charts,
    train_columns,
)


@pytest.fixture(scope="module")
def analysis(tmp_path_factory: pytest.TempPathFactory) -> dict:
    run = build_ledger(tmp_path_factory.mktemp("charts") / "run")
    return {**analyze_run(run, dup_method="jaccard"), "_run": run}


def _texts(svg: str, cls: str = "tick") -> list[str]:
    return re.findall(rf'class="{cls}">([^<]*)</text>', svg)


@pytest.mark.parametrize(
    ("lo", "hi", "n", "integer", "expected"),
    [
        (0, 2345, 6, False, [0, 500, 1000, 1500, 2000, 2500]),
        (0, 2345, 5, False, [0, 1000, 2000, 3000]),
        (1, 7, 5, True, [0, 2, 4, 6, 8]),
        (1, 3, 5, True, [1, 2, 3]),
        (0.12, 0.47, 5, False, [0.1, 0.2, 0.3, 0.4, 0.5]),
        (5, 5, 5, False, [4.5, 4.75, 5.0, 5.25, 5.5]),
    ],
)
def test_nice_ticks_enclose_the_data_on_round_steps(
    lo: float, hi: float, n: int, integer: bool, expected: list
) -> None:
    ticks = C.nice_ticks(lo, hi, n, integer=integer)
    assert ticks == pytest.approx(expected)
    assert ticks[0] <= lo and ticks[-1] >= hi


def test_tick_labels_are_readable() -> None:
    assert [C.fmt_tick(t, [0, 500, 1000]) for t in (0, 500, 1000)] == ["0", "500", "1,000"]
    assert [C.fmt_tick(t, [10_000, 20_000]) for t in (10_000, 20_000)] == ["10k", "20k"]
    assert C.fmt_tick(0.25, [0, 0.25, 0.5]) == "0.25" and C.fmt_tick(0.2, [0, 0.1, 0.2]) == "0.2"
    assert C.fmt_tick(3e6, [0, 1e6, 2e6, 3e6]) == "3M"
    axis = C.nice_ticks(2300, 11000, 6)  # one unit along an axis: 2k … 12k, not 2,000 … 12k
    assert [C.fmt_tick(t, axis) for t in axis] == ["2k", "4k", "6k", "8k", "10k", "12k"]
    assert [C.fmt_tick(t, [0, 5000, 10_000]) for t in (0, 5000, 10_000)] == ["0", "5k", "10k"]


def test_curve_axes_hold_every_point_with_integer_steps() -> None:
    # the values of the issue: ~2,300 tokens over 7 steps used to read ".2e+03" and "3.5"
    pts = [(float(i), 1800.0 + 90 * i) for i in range(1, 8)]
    svg = C.svg_curve({"completion_tokens": pts}, title="completion_tokens")
    labels = _texts(svg)
    assert not any("e+" in x or "e-" in x for x in labels)
    assert re.findall(r'class="tick xt">([^<]*)<', svg) == [str(i) for i in range(1, 8)]
    grid = [float(y) for y in re.findall(r'<line [^>]*y1="([\d.]+)"[^>]*class="grid"', svg)]
    top, bottom = min(grid), max(grid)
    (points,) = re.findall(r'<polyline points="([^"]+)"', svg)
    ys = [float(p.split(",")[1]) for p in points.split()]
    assert len(ys) == 7 and all(top <= y <= bottom for y in ys)
    assert min(ys) > top or max(ys) < bottom  # the data do not just touch the frame: nice ticks enclose them


def test_every_training_column_is_plotted_key_ones_first(tmp_path: Path) -> None:
    cols = [
        "zeta",
        "loss",
        "reward_std",
        "accuracy",
        "answered",
        "tool_calls_per_episode",
        "beta",
        "searches_per_episode",
        "reward_mean",
        "format_ok",
        "masked_tool_tokens",
    ]
    log = tmp_path / "log.jsonl"
    log.write_text(
        "".join(
            json.dumps({"step": i, "seconds": 10 * i, **{c: i * j for j, c in enumerate(cols)}}) + "\n"
            for i in range(1, 4)
        )
    )
    order = [
        "reward_mean",
        "accuracy",
        "searches_per_episode",
        "reward_std",
        "tool_calls_per_episode",
        "answered",
        "beta",
        "format_ok",
        "loss",
        "masked_tool_tokens",
        "zeta",
    ]
    rows = [{c: 1.0 for c in [*cols, "step", "seconds"]}]
    assert train_columns(rows) == order
    svgs = train_charts(log)
    assert [re.search(r'aria-label="([^"]+)"', s).group(1) for s in svgs] == order  # 11 charts, not 8


def test_scatter_draws_each_cell_of_target_against_measured() -> None:
    svg = C.svg_scatter({(2, 2): 1, (2, 3): 4, (3, 3): 2}, title="t", xlabel="target S", ylabel="measured")
    assert svg.count('class="dot"') == 3 and 'class="diag"' in svg
    assert "<title>target S 2, measured 3: 4</title>" in svg
    radius = {int(n): float(r) for r, n in re.findall(r'r="([\d.]+)" class="dot"><title>[^<]*: (\d+)<', svg)}
    assert radius[4] > radius[2] > radius[1]  # area grows with the count
    assert all(float(t).is_integer() for t in _texts(svg) if t not in ("target S", "measured"))
    assert "no data" in C.svg_scatter({}, title="t", xlabel="x", ylabel="y")


def _pair(want: str, found: object = "absent") -> SimpleNamespace:
    qa = (
        SimpleNamespace(answer_type=want)
        if found == "absent"
        else SimpleNamespace(answer_type=want, answer_type_found=found)
    )
    return SimpleNamespace(qa=qa)


def test_answer_check_counts_requested_against_found() -> None:
    pairs = [
        _pair("number", "number"),
        _pair("number", "entity"),
        _pair("date", None),
        _pair("entity"),
        SimpleNamespace(qa=None),
    ]
    c = answer_check(pairs)  # type: ignore[arg-type]
    assert c["pairs"] == 4 and c["checked"] == 2 and c["mismatched"] == 1
    assert c["requested"] == {"number": 2, "date": 1, "entity": 1} and c["found"] == {
        "number": 1,
        "entity": 1,
    }
    assert c["by_type"] == {"number": {"checked": 2, "mismatched": 1}}
    a = {
        "answer_types": {
            "number": {"n": 2, "share": 0.5, "pct_pass": 50.0},
            "entity": {"n": 1, "share": 0.25, "pct_pass": 0.0},
        },
        "answer_check": c,
    }
    t = T.answer_types_table(a)
    assert [c.label for c in t.columns][-3:] == ["found as this type", "checked", "mismatched"]
    assert t.cells()[0] == ["number", "2", "50.0", "50.0", "1", "2", "1"] and "2 of 4" in t.note
    unchecked = T.answer_types_table({**a, "answer_check": answer_check([_pair("number")])})
    assert len(unchecked.columns) == 4 and "requested ones" in unchecked.note


def test_cost_per_accepted_pair_from_the_ledger(analysis: dict) -> None:
    t = T.usage_table(analysis)
    # the fixture records one solver call per attempt: 100·(n+1) prompt and 10·(n+1) completion tokens
    attempts = [n for p in PAIRS for rnd in p["rounds"] if rnd for _, n in rnd]
    accepted = sum(p["output"] == "dataset" for p in PAIRS)
    tokens = sum(110 * (n + 1) for n in attempts)
    assert t.cells()[0][0] == "solver"
    assert t.cells()[0][-2:] == [f"{len(attempts) / accepted:.1f}", f"{tokens // accepted:,}"]
    assert t.footer_cells()[0] == "all" and t.footer_cells()[1] == str(len(attempts))
    # the chart draws the table's own figures
    tokens_svg, calls_svg = run_charts(analysis)["cost"]
    assert f'class="val">{tokens // accepted:,}<' in tokens_svg
    assert f'class="val">{len(attempts) / accepted:.1f}<' in calls_svg
    none = T.usage_table({**analysis, "funnel": {**analysis["funnel"], "accepted": 0}})
    assert none.cells()[0][-2:] == ["–", "–"]
    assert run_charts({**analysis, "funnel": {**analysis["funnel"], "accepted": 0}})["cost"] == []


def test_each_table_is_the_same_in_the_terminal_and_the_html(analysis: dict) -> None:
    from rich.console import Console

    from sagegen.cli.tables import print_analysis, render_rich

    html = render_report(analysis["_run"], analysis)
    for table in T.analysis_tables(analysis):
        out = io.StringIO()
        Console(file=out, width=300).print(render_rich(table))
        text = out.getvalue()
        assert table.title in " ".join(text.split())  # rich wraps a long title
        for row in table.cells():
            assert all(cell in text for cell in row)
            # the HTML row holds the same cells in the same order
            assert re.search(
                r"<tr>" + "".join(rf"<td[^>]*>{re.escape(c)}</td>" for c in row) + "</tr>", html
            ), (table.id, row)
    out = io.StringIO()
    print_analysis(analysis, Console(file=out, width=300))
    assert "State after each round (paper's table)" in out.getvalue()
    assert "Near-duplicates among 2 accepted questions" in out.getvalue()


def test_evaluations_table_shows_how_attempts_ended() -> None:
    t = T.evals_table([("base", {"questions": 8, "k": 2, "answered": 0.5, "forced": 0.375, "failed": 0.125})])
    assert [c.label for c in t.columns][-3:] == ["answered", "forced", "failed"]
    assert t.cells()[0][-3:] == ["0.50", "0.38", "0.12"] and t.cells()[0][3] == "–"  # EM absent


def test_long_messages_are_folded_not_cut() -> None:
    text = "feedback " * 800  # 7,200 characters, the size of a feedback prompt with both traces
    m = message_view({"role": "user", "content": text})
    assert m["head"] + m["rest"] == text and len(m["head"]) == MSG_CHARS
    html = _env().get_template("macros.html.j2").module.message(m)  # type: ignore[attr-defined]
    assert m["head"] in html and m["rest"] in html  # every character is in the page
    assert f"<summary>{len(text) - MSG_CHARS:,} more characters</summary>" in html
    short = message_view({"role": "assistant", "content": "<answer> 27 </answer>"})
    assert short["rest"] == "" and "<details" not in str(
        _env().get_template("macros.html.j2").module.message(short)
    )


def test_retrieved_passages_are_told_from_instructions() -> None:
    system = message_view({"role": "system", "content": "Results come back in <information> tags. " * 100})
    info = message_view({"role": "user", "content": "<information>Doc 1 " + "x" * 2000 + "</information>"})
    tool = message_view({"role": "tool", "content": "y" * 700})
    assert system["cls"] == "msg system" and len(system["head"]) == MSG_CHARS
    assert info["cls"] == "msg user retrieved" and len(info["head"]) == INFO_CHARS
    assert tool["cls"] == "msg tool retrieved" and tool["rest"] == "y" * (700 - INFO_CHARS)


def test_generator_trace_comes_before_the_solver_attempts(analysis: dict) -> None:
    html = render_report(analysis["_run"], analysis)
    pairs = html.split('<details class="pair"')[1:]
    rounds = [r for p in pairs for r in p.split('<div class="round">')[1:]]
    verified = [r for r in rounds if "attempt 0" in r]
    assert len(verified) == sum(1 for p in PAIRS for r in p["rounds"] if r)
    assert all(r.index("generator trace") < r.index("attempt 0") for r in verified)


def test_table_of_contents_links_every_section(analysis: dict) -> None:
    html = render_report(analysis["_run"], analysis)
    (nav,) = re.findall(r'<nav class="toc">(.*?)</nav>', html)
    links = re.findall(r'href="#([^"]+)"', nav)
    assert links[0] == "summary" and links[-1] == "pairs" and "cost" in links
    assert "evaluations" not in links and "training" not in links  # none given
    for target in links:
        assert html.count(f'id="{target}"') == 1


def test_the_templates_ship_with_the_package() -> None:
    """A fresh ``pip install .`` carries every template: each file matches a package-data glob."""
    from fnmatch import fnmatch

    tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11; the globs are the same on 3.10
    root = Path(__file__).resolve().parents[2]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "sagegen"
    ]
    package = root / "src" / "sagegen"
    templates = sorted((package / "analysis" / "templates").iterdir())
    assert {t.name for t in templates} >= {"report.html.j2", "macros.html.j2", "report.css", "report.js"}
    for t in templates:
        rel = t.relative_to(package).as_posix()
        assert any(fnmatch(rel, g) for g in globs), rel


def test_labels_get_a_section_and_the_same_table_in_the_terminal(analysis: dict) -> None:
    from rich.console import Console

    from sagegen.cli.tables import print_analysis

    lab = {
        "n": 4,
        "unparsed": 1,
        "counts": {"calculation": 3, "temporal": 1},
        "pct": {"calculation": 75.0, "temporal": 25.0},
    }
    a = {**analysis, "labels": {"strategies": lab, "easy_causes": {}}}
    (t,) = T.label_tables(a)  # an empty kind (nothing to label) draws no table
    assert t.title == "strategies (n=4, unparsed 1)" and t.cells() == [
        ["calculation", "3", "75.0"],
        ["temporal", "1", "25.0"],
    ]
    html = render_report(analysis["_run"], a)
    assert '<a href="#labels">' in html and '<h2 id="labels">' in html
    assert '<tr><td class="txt">calculation</td><td>3</td><td>75.0</td></tr>' in html
    out = io.StringIO()
    print_analysis(a, Console(file=out, width=200))
    assert "strategies (n=4, unparsed 1)" in out.getvalue() and "75.0" in out.getvalue()
