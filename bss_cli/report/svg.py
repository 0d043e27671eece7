"""Small, deterministic SVG charts for the HTML report: lines, stacked bars, histograms, intervals
(forest plots) and per-seed strips. No library, no script, no fonts from anywhere: the same data
gives the same bytes, the page opens offline, and it prints.

Every chart is ``<svg class="chart" role="img">`` with a ``<title>``; marks carry ``class="mark"``
so a reader (or a test) can tell a chart with data from an empty frame.
"""

from __future__ import annotations

import math
from html import escape

# Okabe-Ito: distinguishable with the common colour-vision deficiencies, and in greyscale print
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
W, H = 500, 250
LEFT, RIGHT, TOP, BOTTOM = 56, 130, 28, 40  # the right margin holds the legend


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _n(v: float) -> str:
    """Coordinates with one decimal: fixed text, whatever the float's last bits."""
    return f"{v:.1f}"


def _label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.1e}"
    return f"{v:.4g}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(n, 1)
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * step:
            step *= m
            break
    first = math.floor(lo / step) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


class Frame:
    """A plot area with linear x and y scales, axes, gridlines and a legend."""

    def __init__(self, title: str, x_range, y_range, x_label: str = "", y_label: str = "", width: int = W,
                 height: int = H, x_ticks: list | None = None, legend: bool = True, left: int = LEFT,
                 right: int | None = None):
        self.title, self.width, self.height, self.left = title, width, height, left
        self.right = right if right is not None else (RIGHT if legend else 16)
        self.show_legend = legend
        self.x_ticks = x_ticks if x_ticks is not None else nice_ticks(*x_range)
        self.y_ticks = nice_ticks(*y_range)
        self.x0, self.x1 = min(self.x_ticks[0], x_range[0]), max(self.x_ticks[-1], x_range[1])
        self.y0, self.y1 = self.y_ticks[0], self.y_ticks[-1]
        if self.x1 == self.x0:
            self.x1 = self.x0 + 1
        if self.y1 == self.y0:
            self.y1 = self.y0 + 1
        self.x_label, self.y_label = x_label, y_label
        self.parts: list[str] = []
        self.legend: list[tuple[str, str, str]] = []  # (name, colour, kind)

    def x(self, v: float) -> float:
        return self.left + (v - self.x0) / (self.x1 - self.x0) * (self.width - self.left - self.right)

    def y(self, v: float) -> float:
        return self.height - BOTTOM - (v - self.y0) / (self.y1 - self.y0) * (self.height - TOP - BOTTOM)

    def add(self, svg: str) -> None:
        self.parts.append(svg)

    def render(self, x_tick_labels: dict | None = None) -> str:
        w, h = self.width, self.height
        out = [f'<svg class="chart" role="img" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
               f'xmlns="http://www.w3.org/2000/svg"><title>{escape(self.title)}</title>',
               f'<text x="{self.left}" y="16" class="ct">{escape(self.title)}</text>']
        for t in self.y_ticks:
            y = _n(self.y(t))
            out.append(f'<line x1="{self.left}" x2="{_n(w - self.right)}" y1="{y}" y2="{y}" class="grid"/>'
                       f'<text x="{self.left - 6}" y="{y}" class="yt">{_label(t)}</text>')
        for t in self.x_ticks:
            x = _n(self.x(t))
            text = (x_tick_labels or {}).get(t, _label(t))
            out.append(f'<line x1="{x}" x2="{x}" y1="{_n(h - BOTTOM)}" y2="{_n(h - BOTTOM + 4)}" class="axis"/>'
                       f'<text x="{x}" y="{_n(h - BOTTOM + 16)}" class="xt">{escape(str(text))}</text>')
        out.append(f'<line x1="{self.left}" x2="{_n(w - self.right)}" y1="{_n(h - BOTTOM)}" y2="{_n(h - BOTTOM)}" '
                   f'class="axis"/><line x1="{self.left}" x2="{self.left}" y1="{TOP}" y2="{_n(h - BOTTOM)}" class="axis"/>')
        if self.x_label:
            out.append(f'<text x="{_n((self.left + w - self.right) / 2)}" y="{h - 6}" class="xl">{escape(self.x_label)}</text>')
        if self.y_label:
            out.append(f'<text x="12" y="{_n((TOP + h - BOTTOM) / 2)}" class="yl" '
                       f'transform="rotate(-90 12 {_n((TOP + h - BOTTOM) / 2)})">{escape(self.y_label)}</text>')
        out += self.parts
        for i, (name, c, kind) in enumerate(self.legend if self.show_legend else []):
            y = TOP + 6 + 16 * i
            lx = w - self.right + 12
            key = (f'<line x1="{lx}" x2="{lx + 16}" y1="{y}" y2="{y}" stroke="{c}" stroke-width="2.5"/>'
                   if kind == "line" else f'<rect x="{lx}" y="{y - 5}" width="14" height="10" fill="{c}"/>')
            out.append(f'{key}<text x="{lx + 22}" y="{y + 4}" class="lg">{escape(name[:22])}</text>')
        out.append("</svg>")
        return "".join(out)


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def line_chart(title: str, xs: list, series: dict[str, list], x_label: str = "epoch", y_label: str = "",
               marks: dict[str, float] | None = None, y_range: tuple | None = None) -> str:
    """One line per series over ``xs`` (None values leave gaps); ``marks``: labelled vertical lines."""
    values = [v for ys in series.values() for v in _finite(ys)]
    lo, hi = y_range if y_range else ((min(values), max(values)) if values else (0.0, 1.0))
    f = Frame(title, (min(xs), max(xs)) if xs else (0, 1), (lo, hi), x_label, y_label,
              x_ticks=_int_ticks(xs) if xs and all(float(x).is_integer() for x in xs) else None)
    for name, at in (marks or {}).items():
        x = _n(f.x(at))
        f.add(f'<line x1="{x}" x2="{x}" y1="{TOP}" y2="{_n(f.height - BOTTOM)}" class="mk"/>'
              f'<text x="{x}" y="{TOP - 2}" class="mkt">{escape(name)}</text>')
    for i, (name, ys) in enumerate(series.items()):
        c = colour(i)
        runs, cur = [], []
        for x, y in zip(xs, ys):
            if y is None or not math.isfinite(float(y)):
                if cur:
                    runs.append(cur)
                cur = []
            else:
                cur.append(f"{_n(f.x(x))},{_n(f.y(float(y)))}")
        if cur:
            runs.append(cur)
        for pts in runs:
            if len(pts) == 1:
                cx, cy = pts[0].split(",")
                f.add(f'<circle class="mark" cx="{cx}" cy="{cy}" r="2.5" fill="{c}"/>')
            else:
                f.add(f'<polyline class="mark" points="{" ".join(pts)}" fill="none" stroke="{c}" stroke-width="2"/>')
        f.legend.append((name, c, "line"))
    return f.render()


def _int_ticks(xs: list) -> list[float]:
    lo, hi = int(min(xs)), int(max(xs))
    step = max(1, math.ceil((hi - lo + 1) / 10))
    return [float(t) for t in range(lo, hi + 1, step)]


def stacked_bars(title: str, xs: list, stacks: dict[str, list], x_label: str = "epoch", y_label: str = "") -> str:
    """A bar per x, stacked by category (the class composition of each epoch)."""
    totals = [sum(s[i] for s in stacks.values()) for i in range(len(xs))]
    f = Frame(title, (min(xs) - 0.5, max(xs) + 0.5) if xs else (0, 1), (0, max(totals) if totals else 1),
              x_label, y_label, x_ticks=_int_ticks(xs) if xs else [0.0])
    width = max(1.0, (f.x(1) - f.x(0)) * 0.8) if len(xs) else 10
    base = [0.0] * len(xs)
    for k, (name, counts) in enumerate(stacks.items()):
        c = colour(k)
        for i, x in enumerate(xs):
            if counts[i]:
                y_top, y_bottom = f.y(base[i] + counts[i]), f.y(base[i])
                f.add(f'<rect class="mark" x="{_n(f.x(x) - width / 2)}" y="{_n(y_top)}" width="{_n(width)}" '
                      f'height="{_n(y_bottom - y_top)}" fill="{c}"/>')
            base[i] += counts[i]
        f.legend.append((name, c, "box"))
    return f.render()


def histogram_chart(title: str, series: dict[str, tuple[list, list]], x_label: str = "", y_label: str = "samples",
                    density: bool = False) -> str:
    """Histograms as step outlines (several overlay): ``series[name] = (counts, edges)``."""
    edges_all = [e for _, edges in series.values() for e in edges]
    heights = {}
    for name, (counts, edges) in series.items():
        total = sum(counts) or 1
        heights[name] = [c / total / max(edges[i + 1] - edges[i], 1e-12) if density else c
                         for i, c in enumerate(counts)]
    top = max((h for hs in heights.values() for h in hs), default=1.0)
    f = Frame(title, (min(edges_all), max(edges_all)) if edges_all else (0, 1), (0, top or 1), x_label,
              "density" if density else y_label, legend=len(series) > 1)
    for i, (name, (counts, edges)) in enumerate(series.items()):
        c = colour(i)
        pts = [f"{_n(f.x(edges[0]))},{_n(f.y(0))}"]
        for j, h in enumerate(heights[name]):
            pts += [f"{_n(f.x(edges[j]))},{_n(f.y(h))}", f"{_n(f.x(edges[j + 1]))},{_n(f.y(h))}"]
        pts.append(f"{_n(f.x(edges[-1]))},{_n(f.y(0))}")
        fill = f' fill="{c}" fill-opacity="0.18"' if len(series) <= 3 else ' fill="none"'
        f.add(f'<polyline class="mark" points="{" ".join(pts)}"{fill} stroke="{c}" stroke-width="1.8"/>')
        f.legend.append((name, c, "line"))
    return f.render()


def interval_chart(title: str, rows: list[tuple[str, float, float, float, str]], x_label: str = "") -> str:
    """A forest plot: one row per (label, mean, low, high, note), a line at 0. Rows whose interval
    excludes 0 are drawn solid, the others hollow."""
    values = [v for _, m, lo, hi, _ in rows for v in (m, lo, hi) if v is not None and math.isfinite(v)] + [0.0]
    span = max(values) - min(values) or 1.0
    height = TOP + BOTTOM + 26 * max(len(rows), 1)
    # the label column is as wide as the longest label (about 6 px a character at 10 px), up to 300 px;
    # a longer label is shortened with an ellipsis and keeps its full text as a tooltip
    longest = max((len(str(r[0])) for r in rows), default=10)
    left = min(300, max(150, 6 * longest + 14))
    fit = (left - 14) // 6
    f = Frame(title, (min(values) - span * 0.05, max(values) + span * 0.05), (0, max(len(rows), 1)), x_label,
              width=W + 120 + left - 150, height=height, legend=False, left=left, right=190)
    f.y_ticks = []
    zero = _n(f.x(0))
    f.add(f'<line x1="{zero}" x2="{zero}" y1="{TOP}" y2="{_n(height - BOTTOM)}" class="zero"/>')
    for i, (label, mean, lo, hi, note) in enumerate(rows):
        y = _n(TOP + 13 + 26 * i)
        c = colour(i)
        f.add(f'<text x="{_n(f.width - f.right + 6)}" y="{y}" class="lg" dy="4">{escape(note)}</text>')
        shown = label if len(label) <= fit else label[:fit - 1] + "\u2026"
        f.add(f'<text x="{f.left - 6}" y="{y}" class="yt"><title>{escape(label)}</title>{escape(shown)}</text>')
        if mean is None or not math.isfinite(mean):
            continue
        if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
            f.add(f'<line class="mark" x1="{_n(f.x(lo))}" x2="{_n(f.x(hi))}" y1="{y}" y2="{y}" stroke="{c}" '
                  'stroke-width="2.5"/>')
        solid = lo is not None and hi is not None and (lo > 0 or hi < 0)
        f.add(f'<circle class="mark" cx="{_n(f.x(mean))}" cy="{y}" r="5" stroke="{c}" stroke-width="2" '
              f'fill="{c if solid else "#fff"}"/>')
    return f.render()


def strip_chart(title: str, groups: dict[str, dict[int, float]], y_label: str = "") -> str:
    """Per-seed values of each group, seeds joined across groups by thin lines (paired seeds)."""
    names = list(groups)
    values = [v for g in groups.values() for v in _finite(g.values())]
    f = Frame(title, (-0.5, len(names) - 0.5), (min(values), max(values)) if values else (0, 1), "", y_label,
              x_ticks=[float(i) for i in range(len(names))], legend=False)
    seeds = sorted({s for g in groups.values() for s in g})
    for s in seeds:
        pts = [f"{_n(f.x(i))},{_n(f.y(groups[n][s]))}" for i, n in enumerate(names) if groups[n].get(s) is not None]
        if len(pts) > 1:
            f.add(f'<polyline points="{" ".join(pts)}" class="pair"/>')
    for i, n in enumerate(names):
        for s, v in sorted(groups[n].items()):
            if v is not None and math.isfinite(v):
                f.add(f'<circle class="mark" cx="{_n(f.x(i))}" cy="{_n(f.y(v))}" r="3.5" fill="{colour(i)}" '
                      f'fill-opacity="0.8"/>')
    return f.render({float(i): n for i, n in enumerate(names)})


CSS = """
svg.chart{max-width:100%;height:auto;font-family:inherit}
@media (max-width:640px){svg.chart{max-width:none}}
svg .ct{font-size:13px;font-weight:600;fill:#222}
svg .grid{stroke:#e6e6e6;stroke-width:1}
svg .axis{stroke:#555;stroke-width:1}
svg .zero{stroke:#333;stroke-width:1.2;stroke-dasharray:4 3}
svg .mk{stroke:#888;stroke-width:1;stroke-dasharray:3 3}
svg .mkt{font-size:10px;fill:#555;text-anchor:middle}
svg .yt{font-size:10px;fill:#444;text-anchor:end;dominant-baseline:middle}
svg .xt{font-size:10px;fill:#444;text-anchor:middle}
svg .xl,svg .yl{font-size:11px;fill:#333;text-anchor:middle}
svg .lg{font-size:11px;fill:#333}
svg .pair{fill:none;stroke:#bbb;stroke-width:0.8}
"""
