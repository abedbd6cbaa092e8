"""Inline SVG charts for the report: no plotting library, no script, nothing fetched.

Each function takes plain numbers and returns one ``<svg>`` element as a string. Every label is
HTML-escaped (names come from run data). Axes are laid out on "nice" ticks (1, 2 or 5 times a power
of ten) that enclose the data, so no point is clipped and no label reads like ``.2e+03``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from html import escape
from typing import Any

COLORS = {
    "pass": "#2e7d32",
    "too_easy": "#f9a825",
    "incorrect": "#c62828",
    "failed": "#757575",
    "accepted": "#2e7d32",
    "duplicate": "#90a4ae",
    "seeds": "#1565c0",
    "unfinished": "#bdbdbd",
    "ambiguous": "#6a1b9a",
    "too easy": "#f9a825",
    "generator failed": "#757575",
    "correct": "#1565c0",
}
PALETTE = ("#1565c0", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#ad1457")
BAR_PALETTE = ("#0d47a1", "#90caf9", "#2e7d32", "#f9a825")
CHAR_PX = 6.2  # width of a character at the 11 px tick font, for laying out labels


def _e(x: Any) -> str:
    return escape(str(x), quote=True)


def _open(title: str, width: float, height: float) -> list[str]:
    return [
        f'<svg class="chart" role="img" aria-label="{_e(title)}" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{width / 2}" y="16" text-anchor="middle" class="ct">{_e(title)}</text>',
    ]


def _legend(names: Sequence[str], colors: Sequence[str], x: float, y: float) -> str:
    return "".join(
        f'<rect x="{x}" y="{y + 18 * i - 9}" width="10" height="10" fill="{c}"/>'
        f'<text x="{x + 14}" y="{y + 18 * i}" class="tick">{_e(n)}</text>'
        for i, (n, c) in enumerate(zip(names, colors, strict=True))
    )


def _no_data(out: list[str], width: float, height: float) -> str:
    out.append(
        f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="tick">no data</text></svg>'
    )
    return "".join(out)


# ----------------------------------------------------------------------------- ticks


def nice_ticks(lo: float, hi: float, n: int = 5, *, integer: bool = False) -> list[float]:
    """About ``n`` evenly spaced round values from at or below ``lo`` to at or above ``hi``."""
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        lo, hi = (lo - 1, hi + 1) if integer else (lo - 0.5, hi + 0.5)
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    if integer:
        step = max(1.0, float(math.ceil(step)))
    start = math.floor(lo / step + 1e-9) * step
    ticks = []
    k = 0
    while True:
        t = start + k * step
        ticks.append(round(t, 10))
        if t >= hi - 1e-9 * step:
            return ticks
        k += 1


def fmt_tick(x: float, ticks: Sequence[float] = ()) -> str:
    """A tick label: as many decimals as the tick step needs, thousands grouped, ``k``/``M`` above 10⁴."""
    step = min((abs(b - a) for a, b in itertools.pairwise(ticks) if b != a), default=1.0)
    if x == 0:
        return "0"  # not "0k"
    top = max((abs(t) for t in ticks), default=abs(x))  # one unit for the whole axis: 5k 10k, not 5,000 10k
    if top >= 1e6 and step >= 1e5:
        return f"{x / 1e6:g}M"
    if top >= 1e4 and step >= 1e3:
        return f"{x / 1e3:g}k"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else 0
    if step < 1 and abs(step * 10**decimals - round(step * 10**decimals)) > 1e-9:  # 0.25 needs two
        decimals += 1
    return f"{x:,.{decimals}f}"


# ----------------------------------------------------------------------------- charts


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
    """Values over a few categorical x positions (rounds, evaluations), each point labelled."""
    left, right, top, bottom = 44, 110, 28, 36
    xs = sorted({x for pts in series.values() for x, _ in pts}) or [1]
    pw, ph = width - left - right, height - top - bottom

    def px(x: int) -> float:
        return left + (pw * (xs.index(x) / (len(xs) - 1)) if len(xs) > 1 else pw / 2)

    def py(y: float) -> float:
        return top + ph * (1 - y / ymax) if ymax else top + ph

    out = _open(title, width, height)
    yt = nice_ticks(0, ymax, 5)
    for t in yt:
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end" class="tick">'
            f"{fmt_tick(t, yt)}</text>"
        )
    for x in xs:
        tick = (xticks or {}).get(x, x)
        out.append(
            f'<text x="{px(x):.1f}" y="{top + ph + 16}" text-anchor="middle" class="tick">{_e(tick)}</text>'
        )
    out.append(
        f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle" class="tick">{_e(xlabel)}</text>'
        f'<text x="12" y="{top + ph / 2}" transform="rotate(-90 12 {top + ph / 2})" '
        f'text-anchor="middle" class="tick">{_e(ylabel)}</text>'
    )
    colors = [COLORS.get(name, PALETTE[i % len(PALETTE)]) for i, name in enumerate(series)]
    for (name, pts), color in zip(series.items(), colors, strict=True):
        good = [(x, y) for x, y in pts if y is not None]
        if len(good) > 1:
            d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in good)
            out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, y in good:
            out.append(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{color}">'
                f"<title>{_e(name)} {_e((xticks or {}).get(x, f'{xlabel} {x}'))}: {y:.1f}</title></circle>"
                f'<text x="{px(x):.1f}" y="{py(y) - 7:.1f}" text-anchor="middle" class="val">{y:.0f}</text>'
            )
    out.append(_legend(list(series), colors, left + pw + 12, top + 14))
    out.append("</svg>")
    return "".join(out)


def svg_bars(
    series: dict[str, dict[str, int]],
    categories: Sequence[str],
    *,
    title: str,
    width: float = 300,
    height: int = 180,
    xlabel: str = "",
) -> str:
    """Grouped bars: one group per category, one bar per series, counts on top."""
    left, right, top, bottom = 28, 8, 40, 32
    ymax = max((v for h in series.values() for v in h.values()), default=0) or 1
    # wide enough for a readable bar per series and for the whole title
    width = max(width, left + right + len(categories) * (10 + 12 * len(series)), 24 + 7.5 * len(title))
    pw, ph = width - left - right, height - top - bottom
    gw = pw / max(len(categories), 1)
    bw = max((gw - 4) / max(len(series), 1), 1)
    out = _open(title, width, height)
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" class="axis"/>')
    lx = float(left)
    for i, name in enumerate(series):
        out.append(
            f'<rect x="{lx:.1f}" y="21" width="9" height="9" fill="{BAR_PALETTE[i % 4]}"/>'
            f'<text x="{lx + 12:.1f}" y="29" class="tick">{_e(name)}</text>'
        )
        lx += 24 + CHAR_PX * len(name)
    if not categories:
        return _no_data(out, width, height + top)
    for i, c in enumerate(categories):
        x0 = left + i * gw + 2
        for j, (name, h) in enumerate(series.items()):
            v = h.get(c, 0)
            bh = ph * v / ymax
            x = x0 + j * bw
            out.append(
                f'<rect x="{x:.1f}" y="{top + ph - bh:.1f}" width="{max(bw - 1, 1):.1f}" '
                f'height="{bh:.1f}" fill="{BAR_PALETTE[j % 4]}"><title>{_e(name)}, {_e(c)} {_e(xlabel)}: {v}'
                f"</title></rect>"
            )
            if v:
                out.append(
                    f'<text x="{x + bw / 2:.1f}" y="{top + ph - bh - 2:.1f}" text-anchor="middle" '
                    f'class="val">{v}</text>'
                )
        out.append(
            f'<text x="{x0 + gw / 2 - 2:.1f}" y="{top + ph + 13}" text-anchor="middle" '
            f'class="tick">{_e(c)}</text>'
        )
    out.append(
        f'<text x="{left + pw / 2}" y="{height - 3}" text-anchor="middle" class="tick">{_e(xlabel)}</text>'
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
    """Histogram of integer values (e.g. searches): every value from the least to the greatest, gaps shown."""
    counts = {name: {str(int(k)): v for k, v in h.items()} for name, h in series.items()}
    keys = sorted({int(k) for h in counts.values() for k in h})
    cats = [str(c) for c in range(keys[0], keys[-1] + 1)] if keys else []
    return svg_bars(counts, cats, title=title, width=width, height=height, xlabel=xlabel)


def svg_hbars(stages: list[tuple[str, float]], *, title: str, width: int = 460, fmt: str = "{:g}") -> str:
    """Horizontal bars, one per row, widths proportional to the largest value."""
    row, top = 26, 26
    label_w = max(110, 12 + CHAR_PX * max((len(n) for n, _ in stages), default=0))
    height = top + row * len(stages) + 8
    base = max((v for _, v in stages), default=0) or 1
    pw = width - label_w - 70
    out = _open(title, width, height)
    for i, (name, v) in enumerate(stages):
        y = top + i * row
        w = pw * v / base
        out.append(
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" class="tick">{_e(name)}</text>'
            f'<rect x="{label_w:g}" y="{y + 3}" width="{max(w, 1):.1f}" height="{row - 8}" '
            f'fill="{COLORS.get(name, "#1565c0")}"><title>{_e(name)}: {fmt.format(v)}'
            f"</title></rect>"
            f'<text x="{label_w + w + 6:.1f}" y="{y + 15}" class="val">{fmt.format(v)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _axis_width(labels: Sequence[str]) -> float:
    return 14 + CHAR_PX * max((len(s) for s in labels), default=1)


def svg_curve(
    series: dict[str, list[tuple[float, float]]],
    *,
    title: str,
    xlabel: str = "step",
    width: int = 420,
    height: int = 220,
) -> str:
    """Line chart on numeric axes (training curves): nice ticks enclosing the data, integer x steps."""
    right, top, bottom = 110 if len(series) > 1 else 16, 28, 36
    pts = [pt for v in series.values() for pt in v]
    out = _open(title, width, height)
    if not pts:
        return _no_data(out, width, height)
    integer_x = all(float(x).is_integer() for x, _ in pts)
    xt = nice_ticks(min(p[0] for p in pts), max(p[0] for p in pts), 8, integer=integer_x)
    yt = nice_ticks(min(p[1] for p in pts), max(p[1] for p in pts), 5)
    ylabels = [fmt_tick(t, yt) for t in yt]
    left = _axis_width(ylabels)
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + pw * (x - xt[0]) / (xt[-1] - xt[0])

    def py(y: float) -> float:
        return top + ph * (1 - (y - yt[0]) / (yt[-1] - yt[0]))

    for t, label in zip(yt, ylabels, strict=True):
        out.append(
            f'<line x1="{left:g}" x2="{left + pw:g}" y1="{py(t):.1f}" y2="{py(t):.1f}" class="grid"/>'
            f'<text x="{left - 6:g}" y="{py(t) + 4:.1f}" text-anchor="end" class="tick">{label}</text>'
        )
    for t in xt:
        out.append(
            f'<text x="{px(t):.1f}" y="{top + ph + 16}" text-anchor="middle" class="tick xt">'
            f"{fmt_tick(t, xt)}</text>"
        )
    out.append(
        f'<text x="{left + pw / 2:g}" y="{height - 4}" text-anchor="middle" class="tick">{_e(xlabel)}</text>'
    )
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(series))]
    for (name, s), color in zip(series.items(), colors, strict=True):
        d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in sorted(s))
        out.append(
            f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="1.5">'
            f"<title>{_e(name)}</title></polyline>"
        )
        if len(s) == 1:  # a lone point draws no line
            x, y = s[0]
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>')
    if len(series) > 1:
        out.append(_legend(list(series), colors, left + pw + 12, top + 14))
    out.append("</svg>")
    return "".join(out)


def svg_scatter(
    points: dict[tuple[int, int], int],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    width: int = 320,
    height: int = 260,
) -> str:
    """Integer (x, y) → count as bubbles (area ∝ count) with the diagonal y = x drawn for reference."""
    left, right, top, bottom = 40, 40, 28, 40  # room right of the largest bubble for its count
    out = _open(title, width, height)
    if not points:
        return _no_data(out, width, height)
    vals = [v for xy in points for v in xy]
    ticks = nice_ticks(min(0, *vals), max(vals), 6, integer=True)
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + pw * (x - ticks[0]) / (ticks[-1] - ticks[0])

    def py(y: float) -> float:
        return top + ph * (1 - (y - ticks[0]) / (ticks[-1] - ticks[0]))

    for t in ticks:
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end" class="tick">{t:g}</text>'
            f'<text x="{px(t):.1f}" y="{top + ph + 16}" text-anchor="middle" class="tick">{t:g}</text>'
        )
    out.append(
        f'<line x1="{px(ticks[0]):.1f}" y1="{py(ticks[0]):.1f}" x2="{px(ticks[-1]):.1f}" '
        f'y2="{py(ticks[-1]):.1f}" class="diag"/>'
        f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle" class="tick">{_e(xlabel)}</text>'
        f'<text x="12" y="{top + ph / 2}" transform="rotate(-90 12 {top + ph / 2})" '
        f'text-anchor="middle" class="tick">{_e(ylabel)}</text>'
    )
    most = max(points.values())
    for (x, y), n in sorted(points.items()):
        r = 3 + 9 * math.sqrt(n / most)
        out.append(
            f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="{r:.1f}" class="dot">'
            f"<title>{_e(xlabel)} {x}, {_e(ylabel)} {y}: {n}</title></circle>"
            f'<text x="{px(x) + r + 2:.1f}" y="{py(y) + 4:.1f}" class="val">{n}</text>'
        )
    out.append("</svg>")
    return "".join(out)
