"""The HTML report: self-contained, escaped, and showing the data when rendered by headless Chromium."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixture_ledger import EVIL, build_ledger
from sagegen.analysis.analyze import analyze_run
from sagegen.analysis.charts import svg_hbars, svg_hist, svg_lines
from sagegen.analysis.report import render_report, write_report


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = build_ledger(tmp_path_factory.mktemp("report") / "run")
    analyze_run(run, dup_method="jaccard")
    return run


@pytest.fixture(scope="module")
def report(run_dir: Path) -> Path:
    return write_report(run_dir)


#: The run's charts in page order (the fixture: two target values, LLM usage recorded, 2 accepted).
RUN_CHARTS = [
    "% correct and % pass after each round",
    "Where the seeds ended",
    "Target S=2: 3 pairs, 2 correct",
    "Target S=3: 2 pairs, 2 correct",
    "Target S against measured difficulty",
    "Answer types: requested vs found",
    "Tokens per accepted pair, by role",
    "LLM calls per accepted pair, by role",
    "nearest-neighbour similarity of each question",
]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium not installed (Debian: apt-get install chromium); report not rendered")


def _run_chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={tmp_path / 'chrome-profile'}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def test_report_is_self_contained_and_escaped(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    # offline: no external scripts, styles, images or fonts
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", html)
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    # data from LLMs and retrieved text is escaped: the planted script never appears as markup
    assert EVIL not in html
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in html
    assert html.count("<script>") == 1  # ours, the filter
    assert html.count('<details class="pair"') == 6
    assert re.findall(r'<svg class="chart" role="img" aria-label="([^"]+)"', html) == RUN_CHARTS


def test_svg_charts_draw_the_numbers() -> None:
    lines = svg_lines({"pass": [(1, 40.0), (2, 60.0)], "correct": [(1, 60.0), (2, None)]}, title="t")
    assert lines.count("<circle") == 3 and ">40<" in lines and ">60<" in lines
    hist = svg_hist({"a": {2: 3, 4: 1}}, title="h")
    assert hist.count("<rect") == 3 + 1  # values 2, 3, 4 (one empty) + the legend swatch
    assert "<title>a, 2 searches: 3</title>" in hist and "<title>a, 3 searches: 0</title>" in hist
    funnel = svg_hbars([("seeds", 10), ("accepted", 5)], title="f")
    widths = [float(w) for w in re.findall(r'<rect x="110" y="[\d.]+" width="([\d.]+)"', funnel)]
    assert widths[1] == pytest.approx(widths[0] / 2)
    assert "no data" in svg_hist({}, title="empty")


def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    p = _run_chromium(["--virtual-time-budget=3000", "--dump-dom", report.as_uri()], tmp_path)
    dom = p.stdout
    assert p.returncode == 0 and "<body" in dom, p.stderr[-2000:]
    # the planted <script> in a retrieved passage did not run (it would have set the title)
    assert "<title>sagegen report — fixture-run</title>" in dom and "pwned</title>" not in dom
    assert "document.title='pwned'" in dom.replace("&#x27;", "'").replace("&#39;", "'")  # shown as text
    # the metrics table shows the fixture's numbers, round by round
    for row in (["1", "5", "60.0", "40.0", "50.0", "2.00"], ["3", "5", "80.0", "60.0", "60.0", "2.50"]):
        assert "".join(f"<td>{c}</td>" for c in row) in dom
    # our inline script ran: it counted the visible pairs
    assert '<span id="shown">6</span>' in dom
    assert re.findall(r'<svg class="chart" role="img" aria-label="([^"]+)"', dom) == RUN_CHARTS
    assert "When was the founder of the city of Lyon born?" in dom


def test_report_screenshot(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    p = _run_chromium(
        ["--window-size=1280,1800", "--hide-scrollbars", f"--screenshot={shot}", report.as_uri()], tmp_path
    )
    assert p.returncode == 0, p.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a blank page compresses to a few KB


def test_cli_analyze_and_report(tmp_path: Path) -> None:
    run = build_ledger(tmp_path / "run")
    p = subprocess.run(
        [sys.executable, "-m", "sagegen.cli.main", "analyze", str(run), "--json", "--dedup", "jaccard"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    assert result["by_round"]["2"]["pct_pass"] == pytest.approx(60.0)
    assert (run / "analysis.json").is_file()
    table = subprocess.run(
        [sys.executable, "-m", "sagegen.cli.main", "analyze", str(run), "--dedup", "jaccard"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert table.returncode == 0 and "State after each round" in table.stdout and "80.0" in table.stdout
    out = tmp_path / "r.html"
    p = subprocess.run(
        [sys.executable, "-m", "sagegen.cli.main", "report", str(run), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert out.is_file() and "fixture-run" in out.read_text()
    bad = subprocess.run(
        [sys.executable, "-m", "sagegen.cli.main", "report", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "not a sagegen run directory" in " ".join(bad.stderr.split())


def test_render_report_without_saved_analysis(tmp_path: Path) -> None:
    run = build_ledger(tmp_path / "run")
    html = render_report(run)  # computes the analysis on the fly
    assert "Metrics by round" in html and not (run / "analysis.json").exists()


def test_report_caps_the_pair_list(run_dir: Path) -> None:
    html = render_report(run_dir, max_pairs=2)
    assert html.count('<details class="pair"') == 2 and "first 2 of 6 pairs included" in html


def test_saved_analysis_is_reused_only_while_current(tmp_path: Path) -> None:
    import os

    from sagegen.analysis.analyze import ANALYSIS_FILE, saved_analysis
    from sagegen.ledger.store import RunStore

    run = build_ledger(tmp_path / "run")
    assert saved_analysis(run) is None
    analyze_run(run, dup_method="jaccard")
    assert saved_analysis(run)["funnel"]["accepted"] == 2
    render_report(run)  # reading the ledger does not make the analysis stale
    assert saved_analysis(run) is not None
    # a write to the ledger (a resumed run) makes it stale
    with RunStore.open(run, readonly=False) as store:
        store.event("note", "resumed")
    f = run / ANALYSIS_FILE
    past = f.stat().st_mtime - 10
    os.utime(f, (past, past))
    assert saved_analysis(run) is None
    # so does an analysis.json from an older sagegen
    analyze_run(run, dup_method="jaccard")
    data = json.loads(f.read_text())
    data["analysis_version"] = 1
    f.write_text(json.dumps(data))
    assert saved_analysis(run) is None


def test_report_with_evals_and_training_log(run_dir: Path, tmp_path: Path) -> None:
    before, after = tmp_path / "evals" / "base", tmp_path / "evals" / "trained"
    for d, acc in ((before, 0.25), (after, 0.625)):
        d.mkdir(parents=True)
        (d / "summary.json").write_text(
            json.dumps(
                {
                    "questions": 8,
                    "k": 2,
                    "attempts": 16,
                    "em": acc / 2,
                    "f1": acc,
                    "judge_acc": acc,
                    "pass_at_k": acc + 0.125,
                    "mean_searches": 1.5,
                }
            )
        )
    log = tmp_path / "train.jsonl"
    log.write_text(
        "\n".join(
            json.dumps({"step": i, "reward": i / 10, "loss": 1 - i / 20, "note": "x"}) for i in range(10)
        )
        + "\n"
    )
    csv_log = tmp_path / "train.csv"
    csv_log.write_text("step,reward_mean\n0,0.1\n1,0.2\n2,nan\n3,0.4\n")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "sagegen.cli.main",
            "report",
            str(run_dir),
            "--out",
            str(tmp_path / "r.html"),
            "--eval",
            str(before),
            "--eval",
            str(after),
            "--train-log",
            str(log),
            "--train-log",
            str(csv_log),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    html = (tmp_path / "r.html").read_text()
    assert '<h2 id="evaluations">Evaluations<' in html
    assert (
        '<td class="txt">base</td><td>8</td><td>2</td><td>0.125</td><td>0.250</td><td>0.250</td>'
        "<td>0.375</td>" in html
    )
    assert '<td class="txt">trained</td>' in html and ">75<" in html  # pass@K 75 % drawn on the chart
    training = html.split('<h2 id="training">')[1].split("<h2")[0]
    charts = re.findall(r'<h3>([^<]+)</h3>|aria-label="([^"]+)"', training)
    assert charts == [
        ("train.jsonl", ""),
        ("", "reward"),
        ("", "loss"),
        ("train.csv", ""),
        ("", "reward_mean"),
    ]
    assert "note" not in training
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "sagegen.cli.main",
            "report",
            str(run_dir),
            "--out",
            str(tmp_path / "x.html"),
            "--eval",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "summary.json" in " ".join(bad.stderr.split())


#: Run in the rendered page: every drawn piece of every chart inside its chart's box (nothing clipped),
#: every contents link pointing at a section that exists; the result lands in an attribute of <body>.
LAYOUT_PROBE = """<script>
(function(){
  var bad=[], charts=document.querySelectorAll('svg.chart');
  charts.forEach(function(svg){
    var box=svg.getBoundingClientRect();
    svg.querySelectorAll('text,rect,circle,polyline,line').forEach(function(el){
      var r=el.getBoundingClientRect();
      if(r.left<box.left-1||r.top<box.top-1||r.right>box.right+1||r.bottom>box.bottom+1)
        bad.push(svg.getAttribute('aria-label')+': '+(el.textContent||el.tagName));
    });
  });
  var links=[].map.call(document.querySelectorAll('nav.toc a'),function(a){return a.getAttribute('href');});
  var missing=links.filter(function(h){return !document.getElementById(h.slice(1));});
  document.body.setAttribute('data-probe', JSON.stringify({charts:charts.length, clipped:bad,
    links:links.length, missing:missing}));
})();
</script>"""


def test_full_report_lays_out_in_headless_chromium(run_dir: Path, tmp_path: Path) -> None:
    """Evaluations and a training log with large and small numbers: no chart clips, every link lands."""
    evals = []
    for name, acc in (("base", 0.25), ("trained", 0.5)):
        d = tmp_path / name
        d.mkdir()
        summary = {
            "questions": 300,
            "k": 4,
            "em": acc,
            "f1": acc,
            "judge_acc": acc,
            "pass_at_k": acc,
            "mean_searches": 2.5,
            "answered": 0.6,
            "forced": 0.3,
            "failed": 0.1,
        }
        (d / "summary.json").write_text(json.dumps(summary))
        evals.append(d)
    log = tmp_path / "train_log.jsonl"
    log.write_text(
        "".join(
            json.dumps(
                {
                    "step": i,
                    "reward": i / 7,
                    "completion_tokens": 1800 + 90 * i,
                    "trained_tokens": 25_000 * i,
                    "loss": 1e-3 * (8 - i),
                    "searches_per_episode": 0.5 * i,
                }
            )
            + "\n"
            for i in range(1, 8)
        )
    )
    page = write_report(run_dir, tmp_path / "full.html", evals=evals, train_logs=[log])
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", LAYOUT_PROBE + "</body>"))
    p = _run_chromium(["--virtual-time-budget=3000", "--dump-dom", probe.as_uri()], tmp_path)
    assert p.returncode == 0 and "<body" in p.stdout, p.stderr[-2000:]
    found = json.loads(html.unescape(re.search(r'data-probe="([^"]*)"', p.stdout).group(1)))
    assert found == {"charts": len(RUN_CHARTS) + 1 + 5, "clipped": [], "links": 10, "missing": []}
    dom = p.stdout
    # the training charts in the order a reader wants, tick labels readable, steps whole numbers
    training = dom.split('id="training"')[1]
    names = re.findall(r'aria-label="([^"]+)"', training)
    assert names == ["reward", "searches_per_episode", "completion_tokens", "loss", "trained_tokens"]
    ticks = re.findall(r'class="tick">([^<]*)<', training)
    assert not [t for t in ticks if "e+" in t or "e-" in t] and "200k" in ticks and "2,400" in ticks
    (steps,) = {tuple(re.findall(r'class="tick xt">([^<]*)<', svg)) for svg in training.split("<svg")[1:]}
    assert steps == ("1", "2", "3", "4", "5", "6", "7")  # every step a whole number, the same on each chart
    evals_row = '<td class="txt">base</td><td>300</td><td>4</td>'
    assert evals_row in dom and "<th>answered</th><th>forced</th><th>failed</th>" in dom
