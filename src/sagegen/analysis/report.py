"""``sagegen report RUN``: one self-contained, offline HTML file.

No CDN, no external file: the charts are inline SVG drawn here, the styling and the small
filter script are inline. Every piece of run data (questions, answers, traces) is HTML-escaped,
because it comes from LLMs and retrieved web/corpus text.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from html import escape
from pathlib import Path
from typing import Any

from sagegen.store import PairRecord, RunStore

REPORT_FILE = "report.html"
MSG_CHARS = 2500
INFO_CHARS = 600
COLORS = {
    "pass": "#2e7d32",
    "too_easy": "#f9a825",
    "incorrect": "#c62828",
    "failed": "#757575",
    "accepted": "#2e7d32",
    "duplicate": "#90a4ae",
    "seeds": "#1565c0",
    "unfinished": "#bdbdbd",
    "correct": "#1565c0",
}


def _e(x: Any) -> str:
    return escape(str(x), quote=True)


def _f(x: Any, digits: int = 1) -> str:
    if x is None:
        return "–"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


# ----------------------------------------------------------------------------- charts (SVG)


def svg_lines(
    series: dict[str, list[tuple[int, float | None]]],
    *,
    title: str,
    ymax: float = 100.0,
    width: int = 420,
    height: int = 240,
    xlabel: str = "round",
    ylabel: str = "%",
    xticks: dict[int, str] | None = None,
) -> str:
    """A small line chart; ``series`` maps a name to (x, y) points (y None = gap)."""
    left, right, top, bottom = 44, 110, 28, 36
    xs = sorted({x for pts in series.values() for x, _ in pts}) or [1]
    pw, ph = width - left - right, height - top - bottom

    def px(x: int) -> float:
        return left + (pw * (xs.index(x) / (len(xs) - 1)) if len(xs) > 1 else pw / 2)

    def py(y: float) -> float:
        return top + ph * (1 - y / ymax) if ymax else top + ph

    out = [
        f'<svg class="chart" role="img" aria-label="{_e(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{width / 2}" y="16" text-anchor="middle" class="ct">{_e(title)}</text>',
    ]
    for frac in (0, 0.25, 0.5, 0.75, 1):
        y = py(ymax * frac)
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{ymax * frac:g}</text>'
        )
    for x in xs:
        tick = (xticks or {}).get(x, x)
        out.append(
            f'<text x="{px(x):.1f}" y="{top + ph + 16}" text-anchor="middle" class="tick">{_e(tick)}</text>'
        )
    out.append(
        f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle" class="tick">{_e(xlabel)}</text>'
    )
    out.append(
        f'<text x="12" y="{top + ph / 2}" transform="rotate(-90 12 {top + ph / 2})" '
        f'text-anchor="middle" class="tick">{_e(ylabel)}</text>'
    )
    for i, (name, pts) in enumerate(series.items()):
        color = COLORS.get(name, ["#1565c0", "#2e7d32", "#6a1b9a", "#ef6c00"][i % 4])
        good = [(x, y) for x, y in pts if y is not None]
        if len(good) > 1:
            d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in good)
            out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, y in good:
            out.append(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{color}">'
                f"<title>{_e(name)} round {x}: {y:.1f}</title></circle>"
                f'<text x="{px(x):.1f}" y="{py(y) - 7:.1f}" text-anchor="middle" class="val">{y:.0f}</text>'
            )
        ly = top + 14 + 18 * i
        out.append(
            f'<rect x="{left + pw + 12}" y="{ly - 9}" width="10" height="10" fill="{color}"/>'
            f'<text x="{left + pw + 26}" y="{ly}" class="tick">{_e(name)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def svg_hist(
    series: dict[str, dict[Any, int]],
    *,
    title: str,
    width: int = 300,
    height: int = 180,
    xlabel: str = "searches",
) -> str:
    """Grouped histogram of integer values (e.g. searches): one bar per series per value, counts on top."""
    left, right, top, bottom = 28, 8, 40, 32
    palette = ["#0d47a1", "#90caf9", "#2e7d32", "#f9a825"]
    counts = {name: {int(k): v for k, v in h.items()} for name, h in series.items()}
    keys = sorted({k for h in counts.values() for k in h})
    cats = list(range(keys[0], keys[-1] + 1)) if keys else []
    ymax = max((v for h in counts.values() for v in h.values()), default=0) or 1
    pw, ph = width - left - right, height - top - bottom
    gw = pw / max(len(cats), 1)
    bw = max((gw - 4) / max(len(counts), 1), 1)
    out = [
        f'<svg class="chart" role="img" aria-label="{_e(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{width / 2}" y="15" text-anchor="middle" class="ct">{_e(title)}</text>',
        f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" class="axis"/>',
    ]
    lx = float(left)
    for i, name in enumerate(counts):
        out.append(
            f'<rect x="{lx:.1f}" y="21" width="9" height="9" fill="{palette[i % 4]}"/>'
            f'<text x="{lx + 12:.1f}" y="29" class="tick">{_e(name)}</text>'
        )
        lx += 24 + 6 * len(name)  # ~6 px per character at the 11 px tick font
    if not cats:
        out.append(
            f'<text x="{width / 2}" y="{top + ph / 2}" text-anchor="middle" class="tick">no data</text>'
        )
    for i, c in enumerate(cats):
        x0 = left + i * gw + 2
        for j, (name, h) in enumerate(counts.items()):
            v = h.get(c, 0)
            bh = ph * v / ymax
            x = x0 + j * bw
            out.append(
                f'<rect x="{x:.1f}" y="{top + ph - bh:.1f}" width="{max(bw - 1, 1):.1f}" '
                f'height="{bh:.1f}" fill="{palette[j % 4]}"><title>{_e(name)}, {c} {_e(xlabel)}: {v}'
                f"</title></rect>"
            )
            if v:
                out.append(
                    f'<text x="{x + bw / 2:.1f}" y="{top + ph - bh - 2:.1f}" text-anchor="middle" '
                    f'class="val">{v}</text>'
                )
        out.append(
            f'<text x="{x0 + gw / 2 - 2:.1f}" y="{top + ph + 13}" text-anchor="middle" '
            f'class="tick">{c}</text>'
        )
    out.append(
        f'<text x="{left + pw / 2}" y="{height - 3}" text-anchor="middle" class="tick">{_e(xlabel)}</text>'
    )
    out.append("</svg>")
    return "".join(out)


def svg_funnel(stages: list[tuple[str, int]], *, title: str, width: int = 460) -> str:
    """Horizontal bars, one per stage, widths proportional to the first stage."""
    row, top, label_w = 26, 26, 110
    height = top + row * len(stages) + 8
    base = max((v for _, v in stages), default=0) or 1
    pw = width - label_w - 60
    out = [
        f'<svg class="chart" role="img" aria-label="{_e(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{width / 2}" y="16" text-anchor="middle" class="ct">{_e(title)}</text>',
    ]
    for i, (name, v) in enumerate(stages):
        y = top + i * row
        w = pw * v / base
        out.append(
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" class="tick">{_e(name)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{max(w, 1):.1f}" height="{row - 8}" '
            f'fill="{COLORS.get(name.replace(" ", "_"), "#1565c0")}"><title>{_e(name)}: {v}</title></rect>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 15}" class="val">{v}</text>'
        )
    out.append("</svg>")
    return "".join(out)


# ----------------------------------------------------------------------------- HTML pieces


def _td(c: Any) -> str:
    # numbers right-aligned (the CSS default), text left-aligned so questions read naturally
    numeric = isinstance(c, (int, float)) or re.fullmatch(r"[\d.,–%-]+", str(c)) is not None
    return f"<td>{_e(c)}</td>" if numeric else f'<td class="txt">{_e(c)}</td>'


def _table(headers: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_td(c) for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _message_html(m: dict[str, Any]) -> str:
    role = str(m.get("role", "?"))
    content = str(m.get("content") or "")
    if m.get("tool_calls"):
        content += "\n" + json.dumps(m["tool_calls"], ensure_ascii=False)
    retrieved = role == "tool" or "<information>" in content
    # Retrieved passages are the bulk of a trace; a glimpse is enough here, the ledger keeps them whole.
    limit = INFO_CHARS if retrieved and role != "assistant" else MSG_CHARS
    if len(content) > limit:
        content = content[:limit] + f" [... {len(content) - limit} more characters]"
    cls = f"msg {role}" + (" retrieved" if retrieved and role != "assistant" else "")
    return f'<div class="{_e(cls)}"><span class="role">{_e(role)}</span><pre>{_e(content)}</pre></div>'


def _pair_html(p: PairRecord, store: RunStore) -> str:
    final = p.qa
    last_cand = next((r.candidate for r in reversed(p.rounds) if r.candidate), None)
    q = final.question if final else (last_cand.question if last_cand else "(no parsable pair)")
    a = final.answer if final else (last_cand.answer if last_cand else "")
    state = p.state + (" (duplicate)" if p.output == "duplicate" else "")
    diff = final.difficulty if final else None
    search_text = f"{q} {a}".lower()
    parts = [
        f'<details class="pair" data-state="{_e(p.state)}" data-text="{_e(search_text)}">',
        f'<summary><span class="badge {_e(p.state)}">{_e(state)}</span> '
        f'<span class="pid">#{p.index}</span> <span class="meta">S={p.target} · difficulty {_e(_f(diff))} · '
        f'{_e(p.answer_type)}</span> <span class="q">{_e(q)}</span> → <b class="a">{_e(a)}</b></summary>',
    ]
    for r in p.rounds:
        if r.candidate is None:
            parts.append(
                f'<div class="round"><h4>round {r.round} ({_e(r.kind)}): generator produced no '
                f"parsable pair</h4></div>"
            )
            continue
        v = r.verdict
        vtxt = (
            f"{v.label} · correct {v.correct} · difficulty {_f(v.difficulty)} · Avg@K {v.avg_at_k:.2f}"
            if v
            else "not verified"
        )
        parts.append(
            f'<div class="round"><h4>round {r.round} ({_e(r.kind)}) — {_e(vtxt)}</h4>'
            f"<p><b>Q:</b> {_e(r.candidate.question)}<br><b>A:</b> {_e(r.candidate.answer)}</p>"
        )
        if r.candidate.plan:
            parts.append(
                f'<details class="plan"><summary>answering steps</summary><pre>{_e(r.candidate.plan)}'
                f"</pre></details>"
            )
        for att in r.attempts:
            mark = "✔" if att.judgement.correct else "✘"
            try:
                traj = store.trajectory(att.trace_id)
                msgs = "".join(_message_html(m) for m in traj.messages) or "<p>(no transcript)</p>"
                ans = traj.answer
            except KeyError:
                msgs, ans = "<p>(trajectory missing)</p>", None
            parts.append(
                f'<details class="attempt"><summary>{mark} attempt {att.index}: {att.num_searches} '
                f"searches, answered {_e(ans)}</summary>{msgs}</details>"
            )
        if r.gen_trace_id:
            try:
                g = store.trajectory(r.gen_trace_id)
                gm = "".join(_message_html(m) for m in g.messages)
                parts.append(
                    f'<details class="attempt gen"><summary>generator trace ({g.num_searches} '
                    f"searches)</summary>{gm}</details>"
                )
            except KeyError:
                pass
        parts.append("</div>")
    parts.append("</details>")
    return "".join(parts)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#212121;
max-width:1200px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0;font-size:13px} th,td{border:1px solid #ddd;padding:4px 8px;
text-align:right} th{background:#f5f5f5} td:first-child,th:first-child{text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.chart{background:#fafafa;border:1px solid #eee;border-radius:4px}
.ct{font-size:13px;font-weight:600} .tick{font-size:11px;fill:#555} .val{font-size:10px;fill:#222}
.grid{stroke:#e0e0e0} td.txt{text-align:left} .axis{stroke:#999}
.pair{border:1px solid #e0e0e0;border-radius:4px;margin:4px 0;padding:4px 8px}
.pair>summary{cursor:pointer} .badge{font-size:11px;padding:1px 6px;border-radius:8px;color:#fff}
.badge.pass{background:#2e7d32}.badge.too_easy{background:#f9a825;color:#000}
.badge.incorrect{background:#c62828}
.badge.failed,.badge.running,.badge.pending{background:#757575}
.pid,.meta{color:#666;font-size:12px}
.round{margin:6px 0 6px 16px;border-left:3px solid #eee;padding-left:8px}
.round h4{margin:4px 0;font-size:13px} .attempt{margin:2px 0 2px 8px;font-size:13px}
.msg{margin:3px 0;padding:3px 6px;border-radius:3px;background:#f5f5f5} .msg.assistant{background:#e3f2fd}
.msg.retrieved{background:#fff8e1} .role{font-size:10px;text-transform:uppercase;color:#555}
pre{white-space:pre-wrap;word-break:break-word;margin:2px 0;font-size:12px}
#filter{padding:4px;width:320px} .muted{color:#777;font-size:12px}
"""

JS = """
(function(){
  var box=document.getElementById('filter'), sel=document.getElementById('state');
  var n=document.getElementById('shown');
  function apply(){
    var q=box.value.toLowerCase(), s=sel.value, k=0;
    document.querySelectorAll('details.pair').forEach(function(d){
      var ok=(!q||d.getAttribute('data-text').indexOf(q)>=0)&&(!s||d.getAttribute('data-state')===s);
      d.style.display=ok?'':'none'; if(ok){k++;}
    });
    n.textContent=k;
  }
  box.addEventListener('input',apply); sel.addEventListener('change',apply); apply();
})();
"""


# ----------------------------------------------------------------------------- evals and training logs

EVAL_COLUMNS = (
    ("questions", "questions"),
    ("k", "K"),
    ("em", "EM"),
    ("f1", "F1"),
    ("judge_acc", "judge acc"),
    ("pass_at_k", "pass@K"),
    ("mean_searches", "mean searches"),
)
#: Columns of a training log that are bookkeeping, not curves.
LOG_SKIP = {"step", "global_step", "epoch", "time", "timestamp", "wall", "seconds", "lr", "learning_rate"}
LOG_SKIP.add("elapsed_s")  # sagegen train's running wall time (older logs: "seconds")


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


def svg_curve(
    series: dict[str, list[tuple[float, float]]],
    *,
    title: str,
    xlabel: str = "step",
    width: int = 420,
    height: int = 220,
) -> str:
    """Line chart on numeric axes (many points: training curves), min/max ticks, no point labels."""
    left, right, top, bottom = 48, 110, 28, 36
    pts = [pt for v in series.values() for pt in v]
    out = [
        f'<svg class="chart" role="img" aria-label="{_e(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{width / 2}" y="16" text-anchor="middle" class="ct">{_e(title)}</text>',
    ]
    if not pts:
        out.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="tick">no data</text></svg>'
        )
        return "".join(out)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + pw * (x - x0) / (x1 - x0)

    def py(y: float) -> float:
        return top + ph * (1 - (y - y0) / (y1 - y0))

    for frac in (0, 0.5, 1):
        y = y0 + (y1 - y0) * frac
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{py(y):.1f}" y2="{py(y):.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end" class="tick">{y:.3g}</text>'
        )
    for x in (x0, (x0 + x1) / 2, x1):
        out.append(
            f'<text x="{px(x):.1f}" y="{top + ph + 16}" text-anchor="middle" class="tick">{x:.4g}</text>'
        )
    out.append(
        f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle" class="tick">{_e(xlabel)}</text>'
    )
    palette = ["#1565c0", "#2e7d32", "#6a1b9a", "#ef6c00"]
    for i, (name, s) in enumerate(series.items()):
        color = palette[i % 4]
        d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in sorted(s))
        out.append(
            f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="1.5">'
            f"<title>{_e(name)}</title></polyline>"
        )
        ly = top + 14 + 18 * i
        out.append(
            f'<rect x="{left + pw + 12}" y="{ly - 9}" width="10" height="10" fill="{color}"/>'
            f'<text x="{left + pw + 26}" y="{ly}" class="tick">{_e(name)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _evals_html(evals: list[Path]) -> list[str]:
    summaries = [(p.name if p.is_dir() else p.parent.name, load_eval_summary(p)) for p in evals]

    def cell(v: Any) -> Any:
        return "–" if v is None else (f"{v:.3f}" if isinstance(v, float) else v)

    rows = [[name, *[cell(summ.get(key)) for key, _ in EVAL_COLUMNS]] for name, summ in summaries]
    series = {
        label: [(i + 1, 100 * float(summ.get(key) or 0.0)) for i, (_, summ) in enumerate(summaries)]
        for key, label in (("judge_acc", "judge acc"), ("pass_at_k", "pass@K"))
    }
    chart = svg_lines(
        series,
        title="Evaluations, in the order given (%)",
        xlabel="evaluation",
        xticks={i + 1: name for i, (name, _) in enumerate(summaries)},
    )
    return [
        "<h2>Evaluations</h2>",
        "<p class='muted'>From <code>sagegen eval</code> summaries, in the order given (e.g. the base "
        "model, then the trained checkpoint, on the same benchmark and retriever). Accuracies are avg@K.</p>",
        _table(["evaluation", *[h for _, h in EVAL_COLUMNS]], rows, "evals"),
        f"<div class='charts'>{chart}</div>",
    ]


def _train_logs_html(logs: list[Path]) -> list[str]:
    html = ["<h2>Training</h2><div class='charts'>"]
    for p in logs:
        rows = load_train_log(p)
        keys = sorted({k for r in rows for k in r} - LOG_SKIP)
        xkey = next((k for k in ("step", "global_step") if any(k in r for r in rows)), None)
        for key in keys[:8]:
            pts = [(r.get(xkey, i) if xkey else float(i), r[key]) for i, r in enumerate(rows) if key in r]
            html.append(svg_curve({key: pts}, title=f"{p.name}: {key}", xlabel=xkey or "row"))
    html.append("</div>")
    return html


def render_report(
    run_dir: str | Path,
    analysis: dict[str, Any] | None = None,
    *,
    max_pairs: int = 300,
    evals: tuple[str | Path, ...] | list[str | Path] = (),
    train_logs: tuple[str | Path, ...] | list[str | Path] = (),
) -> str:
    """The report's HTML for a run (computing the analysis when none is given)."""
    from sagegen.analysis.analyze import analyze_run, saved_analysis

    run_dir = Path(run_dir)
    if analysis is None:
        analysis = saved_analysis(run_dir) or analyze_run(run_dir, write=False, dup_method="jaccard")
    a = analysis
    by_round = {int(k): v for k, v in a["by_round"].items()}
    by_target = {int(k): v for k, v in a["by_target"].items()}
    fun = a["funnel"]
    cfg = a.get("config") or {}
    pipe = cfg.get("pipeline") or {}
    html: list[str] = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>sagegen report — {_e(a.get('run_id', run_dir.name))}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>sagegen report: {_e(a.get('run_id', run_dir.name))}</h1>",
        f"<p class='muted'>run directory {_e(run_dir)} · generated "
        f"{_e(_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))} · "
        f"target S {_e(pipe.get('target'))}"
        f" · rounds {_e(pipe.get('rounds'))} · attempts K {_e(pipe.get('attempts'))} · strategy "
        f"{_e(pipe.get('strategy'))} · LLM {_e((cfg.get('llm') or {}).get('backend'))}/"
        f"{_e((cfg.get('llm') or {}).get('model') or 'default')} · retriever "
        f"{_e((cfg.get('retrieval') or {}).get('kind'))}</p>",
        "<h2>Summary</h2>",
        _table(
            ["seeds", "accepted", "duplicates", "too easy", "incorrect", "generator failed", "unfinished"],
            [
                [
                    fun["seeds"],
                    fun["accepted"],
                    fun["duplicate"],
                    fun["too_easy"],
                    fun["incorrect"],
                    fun["failed"],
                    fun["unfinished"],
                ]
            ],
            "summary",
        ),
        "<h2>Metrics by round</h2>",
        "<p class='muted'>State of every pair after round r (the paper's table): a pair that passed earlier "
        "keeps its passing verdict. mean #search = mean difficulty (fewest searches among correct attempts) "
        "of correct pairs. Avg@K is over the attempts actually run (early stopping may decide a verdict "
        "before all K).</p>",
        _table(
            [
                "round",
                "pairs",
                "% correct",
                "% pass",
                "Avg@K",
                "mean #search",
                "mean searches / attempt",
                "attempts run / verdict",
            ],
            [
                [
                    r,
                    m["n"],
                    _f(m["pct_correct"]),
                    _f(m["pct_pass"]),
                    _f(m["avg_at_k"]),
                    _f(m["mean_searches"], 2),
                    _f(m["mean_attempt_searches"], 2),
                    _f(m.get("mean_attempts"), 2),
                ]
                for r, m in by_round.items()
            ],
            "metrics",
        ),
        "<h2>Metrics by target S</h2>",
        _table(
            ["target S", "pairs", "% correct", "% pass", "Avg@K", "mean difficulty"],
            [
                [
                    s,
                    m["n"],
                    _f(m["pct_correct"]),
                    _f(m["pct_pass"]),
                    _f(m["avg_at_k"]),
                    _f(m["mean_searches"], 2),
                ]
                for s, m in by_target.items()
            ],
            "targets",
        ),
        "<h2>Charts</h2><div class='charts'>",
        svg_lines(
            {
                "correct": [(r, m["pct_correct"]) for r, m in by_round.items()],
                "pass": [(r, m["pct_pass"]) for r, m in by_round.items()],
            },
            title="% correct and % pass after each round",
        ),
        svg_funnel(
            [
                ("seeds", fun["seeds"]),
                ("accepted", fun["accepted"]),
                ("duplicate", fun["duplicate"]),
                ("too easy", fun["too_easy"]),
                ("incorrect", fun["incorrect"]),
                ("failed", fun["failed"]),
            ],
            title="Where the seeds ended",
        ),
        "</div><div class='charts'>",
        *[
            svg_hist(
                {
                    "difficulty": m["difficulty_hist"],
                    "searches per attempt": m["attempt_searches_hist"],
                },
                title=f"Target S={s}: {m['n']} pairs, {m['correct']} correct",
            )
            for s, m in by_target.items()
        ],
        "</div>",
    ]
    ag = a["difficulty_agreement"]
    html += [
        "<h2>Generated vs measured difficulty</h2>",
        f"<p>{ag['n']} correct pairs · exact {_e(_f(ag['exact'], 2))} · measured ≥ target "
        f"{_e(_f(ag['at_least_target'], 2))} · MAE {_e(_f(ag['mae'], 2))} · mean (measured − target) "
        f"{_e(_f(ag['mean_diff'], 2))} · Spearman {_e(_f(ag['spearman'], 2))}</p>",
    ]
    if ag["matrix"]:
        cols = sorted({int(d) for row in ag["matrix"].values() for d in row})
        html.append(
            _table(
                ["target \\ measured", *map(str, cols)],
                [[t, *[row.get(str(c), 0) for c in cols]] for t, row in ag["matrix"].items()],
            )
        )
    html += [
        "<h2>Answer types</h2>",
        _table(
            ["type", "pairs", "share %", "% pass"],
            [
                [k, v["n"], _f(100 * v["share"] if v["share"] is not None else None), _f(v["pct_pass"])]
                for k, v in a["answer_types"].items()
            ],
        ),
    ]
    d = a["duplicates"]
    html += [
        "<h2>Quality checks</h2>",
        f"<p>Near-duplicates among {d['n']} accepted questions ({_e(d['method'])}, threshold "
        f"{_e(d['threshold'])}): {d['exact_duplicates']} exact, {len(d['near_pairs'])} near pairs.</p>",
    ]
    if d["near_pairs"]:
        html.append(
            _table(
                ["a", "b", "similarity"], [[x["a"], x["b"], x["similarity"]] for x in d["near_pairs"][:50]]
            )
        )
    dv = a.get("diversity")  # absent from analysis.json files written before it existed
    if dv:
        html += [
            f"<p>Diversity of {dv['n']} {_e(dv['over'])} questions ({_e(dv['method'] or '–')} vectors): "
            "spread "
            f"{_f(dv['spread'], 3)}, mean nearest-neighbour similarity {_f(dv['mean_nn_similarity'], 3)}, "
            f"{dv['distinct_entities']} distinct of {dv['entities']} entity mentions, {dv['distinct_seeds']} "
            "distinct seed passages.</p>",
            svg_hist({"questions": {int(k): v for k, v in dv["nn_histogram"].items()}},
                     title="nearest-neighbour similarity of each question", xlabel="similarity × 10"),
        ]
    html.append(f"<p>Answer appears in its question: {len(a['leaks'])}</p>")
    if a["leaks"]:
        html.append(
            _table(
                ["id", "question", "answer"], [[x["id"], x["question"], x["answer"]] for x in a["leaks"][:50]]
            )
        )
    if "contamination" in a:
        c = a["contamination"]
        html.append(
            f"<p>Contamination vs {_e(c['benchmark'])} ({c['benchmark_size']} questions): {c['flagged']} of "
            f"{c['n']} flagged, {c['exact']} exact.</p>"
        )
        if c["items"]:
            html.append(
                _table(
                    ["id", "question", "exact", "overlap", "benchmark id"],
                    [
                        [x["id"], x["question"], x["exact"], x["overlap"], x["benchmark_id"]]
                        for x in c["items"][:50]
                    ],
                )
            )
    if "labels" in a:
        for kind, lab in a["labels"].items():
            html.append(f"<h3>{_e(kind.replace('_', ' '))} (n={lab['n']}, unparsed {lab['unparsed']})</h3>")
            html.append(
                _table(
                    ["category", "count", "%"],
                    [[k, lab["counts"][k], _f(lab["pct"][k])] for k in lab["counts"]],
                )
            )
    if evals:
        html += _evals_html([Path(p) for p in evals])
    if train_logs:
        html += _train_logs_html([Path(p) for p in train_logs])
    usage = a.get("llm_usage") or {}
    if usage:
        html += [
            "<h2>LLM usage</h2>",
            _table(
                ["role", "calls", "cached", "errors", "prompt tokens", "completion tokens", "seconds"],
                [
                    [
                        r,
                        int(u["calls"]),
                        int(u["cached"]),
                        int(u["errors"]),
                        int(u["prompt_tokens"]),
                        int(u["completion_tokens"]),
                        _f(float(u["seconds"])),
                    ]
                    for r, u in usage.items()
                ],
            ),
        ]
    with RunStore.open(run_dir) as store:
        pairs = list(store.pairs())
        shown = pairs[:max_pairs]
        html += [
            "<h2>Pairs</h2>",
            "<p><input id='filter' type='search' placeholder='filter by question or answer'> "
            "<select id='state'><option value=''>all states</option><option>pass</option>"
            "<option>too_easy</option><option>incorrect</option><option>failed</option></select> "
            f"<span class='muted'><span id='shown'>{len(shown)}</span> shown"
            + (f"; first {max_pairs} of {len(pairs)} pairs included" if len(pairs) > max_pairs else "")
            + "</span></p><div id='pairs'>",
            *[_pair_html(p, store) for p in shown],
            "</div>",
        ]
    html += [f"<script>{JS}</script></body></html>"]
    return "\n".join(html)


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    analysis: dict[str, Any] | None = None,
    max_pairs: int = 300,
    evals: tuple[str | Path, ...] | list[str | Path] = (),
    train_logs: tuple[str | Path, ...] | list[str | Path] = (),
) -> Path:
    run_dir = Path(run_dir)
    path = Path(out) if out else run_dir / REPORT_FILE
    html = render_report(run_dir, analysis, max_pairs=max_pairs, evals=evals, train_logs=train_logs)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path
