"""Inline SVG charts of the report: accuracy vs latency (Pareto front) and latency distributions.

Plain SVG strings, no plotting library and no network; sizes and label placement are chosen so
the headless-Chromium layout check (:mod:`distill.report.browser`) finds nothing overlapping.
Accuracies arrive as fractions and are drawn in percent.
"""
from __future__ import annotations

import html
import math
import re
from collections.abc import Callable
from typing import Any

from distill.records import pct as percent
from distill.report.data import Z95, Point

COLORS = {"fp32": "#1f6fb4", "fp16": "#2a9d3a", "int8/ort-cpu": "#f07f0e", "int8/tensorrt": "#c8302c", "int8": "#f07f0e"}
SHAPES = {"torch": "square", "ort-cpu": "circle", "ort-cuda": "diamond", "ort-trt": "triangle", "tensorrt": "triangle"}


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def esc_wrap(x: Any) -> str:
    """Escaped, with line-break opportunities after ``_`` ``/`` ``.`` ``-`` (long domain names, paths)."""
    return re.sub(r"([_/.\-])", r"\1<wbr>", esc(x))


def pct(x: float | None, digits: int = 1) -> str:
    """A fraction as a percent table cell (:func:`distill.records.pct`); ``–`` when there is none."""
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else percent(x, digits)


def color(precision: str) -> str:
    """The colour of a precision; ``int8/ort-cpu (QAD)`` (a ``distill qad`` file) takes its flavour's."""
    return COLORS.get(precision.split(" (")[0], "#6b7682")


# --------------------------------------------------------------------------- svg helpers
def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values spanning [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + 1e-9 * step:
        if t >= lo - 1e-9 * step:
            ticks.append(round(t, 10))
        t += step
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    out = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10 ** e
            if lo <= v <= hi:
                out.append(v)
    return out or [lo, hi]


def fmt_num(v: float) -> str:
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.2f}".rstrip("0").rstrip(".") if v >= 0.1 else f"{v:.3g}"


def tick_labels(ticks: list[float], uniform: bool = True) -> list[str]:
    """Axis labels that name each tick's exact value: as many decimals as the finest tick needs (``uniform``: all
    alike, ``0.200 0.225 0.250``; else each its own, ``0.05 0.1 0.2``), up to 6 (then :func:`fmt_num`'s). Two
    decimals, as :func:`fmt_num` gives, labelled the tick at 0.225 ms "0.23"."""
    def places(t: float) -> int | None:
        return next((d for d in range(7) if abs(round(t, d) - t) <= 1e-9 * max(1.0, abs(t))), None)

    found = [places(t) for t in ticks]
    need = [d for d in found if d is not None]
    if len(need) < len(found):
        return [fmt_num(t) for t in ticks]
    if uniform:  # zero is "0" whatever the others need: "0.00" is wider than the latency chart's 8 px left margin
        most = max(need, default=0)
        return ["0" if t == 0 else f"{t:.{most}f}" for t in ticks]
    return [f"{t:.{d}f}" for t, d in zip(ticks, need)]


def marker(shape: str, x: float, y: float, fill: str, attrs: str) -> str:
    if shape == "square":
        return f'<rect x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" fill="{fill}" {attrs}/>'
    if shape == "diamond":
        return f'<path d="M{x:.1f},{y - 7:.1f}L{x + 7:.1f},{y:.1f}L{x:.1f},{y + 7:.1f}L{x - 7:.1f},{y:.1f}Z" fill="{fill}" {attrs}/>'
    if shape == "triangle":
        return f'<path d="M{x:.1f},{y - 7:.1f}L{x + 7:.1f},{y + 6:.1f}L{x - 7:.1f},{y + 6:.1f}Z" fill="{fill}" {attrs}/>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{fill}" {attrs}/>'


def text_width(text: str, size: float) -> float:
    """A generous estimate of rendered text width (sans-serif averages about 0.55 em per character)."""
    return len(text) * size * 0.6


def fit_text(text: str, max_px: float, size: float) -> str:
    """``text`` cut with an ellipsis to fit ``max_px`` (by :func:`text_width`); the full text goes in a tooltip."""
    if text_width(text, size) <= max_px:
        return text
    keep = max(1, int(max_px / (size * 0.6)) - 1)
    return text[:keep] + "…"


def _span(x: float, width: float, anchor: str) -> tuple[float, float]:
    return (x - width, x) if anchor == "end" else (x, x + width)


def _apart(ticks: list[float], pos: Callable[[float], float], size: float = 11) -> bool:
    """Whether the labels of log-axis ``ticks`` (:func:`tick_labels`), where ``pos`` puts them, leave 4 px between
    neighbours (by :func:`text_width`)."""
    labels = tick_labels(ticks, uniform=False)
    return all(pos(b) - pos(a) >= (text_width(la, size) + text_width(lb, size)) / 2 + 4
               for a, b, la, lb in zip(ticks, ticks[1:], labels, labels[1:]))


def front_no(points: list[Point], p: Point) -> int:
    """1, 2, ... for the Pareto points of ``points``, fastest first (0 for a point off the front)."""
    front = sorted((q for q in points if q.pareto and q.score is not None), key=lambda q: q.latency["p50"])
    return next((i + 1 for i, q in enumerate(front) if q is p), 0)


def pareto_svg(points: list[Point], width: int = 760, height: int = 420) -> str:
    """Accuracy (y, %) vs p50 latency (x, ms; log scale when it spans > 20x) with the front drawn."""
    pts = [p for p in points if p.score is not None]
    if not pts:
        return '<p class="note">No benchmark record here has a matching accuracy.</p>'
    ml, mr, mt, mb = 62, 24, 26, 46
    w, h = width - ml - mr, height - mt - mb
    xs = [p.latency["p50"] for p in pts]
    ys = [100 * p.scored for p in pts]
    xlo, xhi = min(xs), max(xs)
    use_log = xlo > 0 and xhi / xlo > 20
    if use_log:
        xlo, xhi = xlo / 1.3, xhi * 1.3
        fx = lambda v: ml + w * (math.log10(v) - math.log10(xlo)) / (math.log10(xhi) - math.log10(xlo))  # noqa: E731
        xt = log_ticks(xlo, xhi)
        if not _apart(xt, fx):  # seven decades and more: the 1-2-5 ticks' labels touch; the powers of ten only
            xt = [t for t in xt if abs(math.log10(t) - round(math.log10(t))) < 1e-9] or xt
    else:
        pad = (xhi - xlo) * 0.1 or max(xhi * 0.1, 0.01)
        xlo, xhi = max(0.0, xlo - pad), xhi + pad
        fx = lambda v: ml + w * (v - xlo) / (xhi - xlo)  # noqa: E731
        xt = nice_ticks(xlo, xhi)
    err = [100 * Z95 * p.score_se if p.score_se is not None else 0.0 for p in pts]
    ylo, yhi = min(y - e for y, e in zip(ys, err)), max(y + e for y, e in zip(ys, err))
    pad = max((yhi - ylo) * 0.08, 1.0)
    ylo, yhi = max(0.0, ylo - pad), min(100.0, yhi + pad)
    if yhi <= ylo:
        ylo, yhi = max(0.0, ylo - 1), min(100.0, yhi + 1) if yhi < 100 else 100.0
    fy = lambda v: mt + h - h * (v - ylo) / ((yhi - ylo) or 1.0)  # noqa: E731
    out = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" class="chart" '
           f'aria-label="accuracy vs latency" xmlns="http://www.w3.org/2000/svg">',
           f'<rect x="{ml}" y="{mt}" width="{w}" height="{h}" fill="#fbfcfd" stroke="#d5dbe1"/>']
    for t, label in zip(xt, tick_labels(xt, uniform=not use_log)):
        x = fx(t)
        out.append(f'<line x1="{x:.1f}" y1="{mt}" x2="{x:.1f}" y2="{mt + h}" stroke="#eceff2"/>'
                   f'<text x="{x:.1f}" y="{mt + h + 16}" font-size="11" text-anchor="middle" fill="#55606c">{label}</text>')
    yt = nice_ticks(ylo, yhi)
    for t, label in zip(yt, tick_labels(yt)):
        y = fy(t)
        out.append(f'<line x1="{ml}" y1="{y:.1f}" x2="{ml + w}" y2="{y:.1f}" stroke="#eceff2"/>'
                   f'<text x="{ml - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="#55606c">{label}</text>')
    out.append(f'<text x="{ml + w / 2}" y="{height - 8}" font-size="12" text-anchor="middle" fill="#38424e">'
               f'p50 latency, ms{" (log scale)" if use_log else ""} — lower is better</text>')
    out.append(f'<text transform="translate(14,{mt + h / 2}) rotate(-90)" font-size="12" text-anchor="middle" '
               f'fill="#38424e">accuracy, % — higher is better</text>')
    front = sorted((p for p in pts if p.pareto), key=lambda p: p.latency["p50"])
    if len(front) > 1:
        # staircase: a faster point's accuracy holds until the next, slower improvement
        d = [f"M{fx(front[0].latency['p50']):.1f},{fy(100 * front[0].scored):.1f}"]
        d += [f"H{fx(p.latency['p50']):.1f}V{fy(100 * p.scored):.1f}" for p in front[1:]]
        out.append(f'<path d="{" ".join(d)}" fill="none" stroke="#1d2b3a" stroke-width="1.5" stroke-dasharray="5,3"/>')
    for p in pts:  # 95 % intervals first, under every marker
        if p.score_se is not None:
            x, e = fx(p.latency["p50"]), 100 * Z95 * p.score_se
            y0, y1 = fy(max(0.0, 100 * p.scored - e)), fy(min(100.0, 100 * p.scored + e))
            out.append(f'<path d="M{x - 4:.1f},{y0:.1f}H{x + 4:.1f}M{x:.1f},{y0:.1f}V{y1:.1f}M{x - 4:.1f},{y1:.1f}'
                       f'H{x + 4:.1f}" stroke="{color(p.precision)}" stroke-width="1.2" fill="none" opacity="0.8"/>')
    labels: list[tuple[float, float, float, str, str]] = []  # (x, y, width, anchor, text) of placed labels
    for p in sorted(pts, key=lambda p: p.pareto):
        x, y = fx(p.latency["p50"]), fy(100 * p.scored)
        ci = (f" ± {percent(Z95 * p.score_se, 2)} (95 %)" if p.score_se is not None else " (test-set size unknown)")
        tip = (f"{p.named} · batch {p.batch}\np50 {p.latency['p50']:.3g} ms, p90 {p.latency['p90']:.3g}, "
               f"p99 {p.latency['p99']:.3g}\naccuracy {percent(p.score, 2)}%{ci}\n{p.device}")
        attrs = (f'data-point="1" stroke="{"#111" if p.pareto else "#fff"}" stroke-width="{1.6 if p.pareto else 1}" '
                 f'opacity="{1 if p.pareto else 0.75}"')
        out.append(f'<g>{marker(SHAPES.get(p.runtime, "circle"), x, y, color(p.precision), attrs)}'
                   f'<title>{esc(tip)}</title></g>')
        if p.pareto:  # numbered; the key under the chart names them (long labels would cover other points)
            text = str(front_no(pts, p))
            tw = text_width(text, 12)
            anchor = "end" if x + 9 + tw > ml + w else "start"
            lx = max(x - 9, ml + 4 + tw) if anchor == "end" else x + 9
            ly = y - 8
            for _ in range(len(labels) + 1):  # step down past labels already placed where this one would overlap
                a0, a1 = _span(lx, tw, anchor)
                hit = [b for b in labels if abs(b[1] - ly) < 13 and _span(b[0], b[2], b[3])[0] < a1
                       and a0 < _span(b[0], b[2], b[3])[1]]
                if not hit:
                    break
                ly = max(b[1] for b in hit) + 13
            ly = min(max(ly, mt + 11), mt + h - 4)
            labels.append((lx, ly, tw, anchor, text))
            out.append(f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="12" font-weight="700" text-anchor="{anchor}" '
                       f'fill="#1d232b">{esc(text)}<title>{esc(p.named)}</title></text>')
    out.append("</svg>")
    return "".join(out)


def latency_out_of_order(latency: dict[str, float]) -> str | None:
    """What keeps a record's latency off the latency chart (None: nothing): its p50, p90 and p99 must be finite, not
    negative, and in order, as the runners compute them (:func:`distill.bench.edge_runner.latency_stats`). A
    hand-made or edited record may break that; drawn, its bar (to p50) ran past its whisker (to p99), beyond the
    scale set by the largest p99, over the numbers column."""
    given = [latency.get(k) for k in ("p50", "p90", "p99")]
    nums = [float(v) for v in given if isinstance(v, (int, float)) and math.isfinite(v) and v >= 0]
    if len(nums) < 3:
        return "p50/p90/p99 {} / {} / {} ms are not all finite, non-negative numbers".format(*given)
    p50, p90, p99 = nums
    if p50 <= p90 <= p99:
        return None
    return f"p50 {p50:.3g} ms, p90 {p90:.3g} ms, p99 {p99:.3g} ms are out of order (p50 <= p90 <= p99)"


def latency_order_warnings(points: list[Point]) -> list[str]:
    """One warning per point :func:`latency_svg` leaves out (:func:`latency_out_of_order`), naming its bench file."""
    out = []
    for p in points:
        if (why := latency_out_of_order(p.latency)) is not None:
            where = f"{p.measured.source}: " if p.measured is not None else ""
            out.append(f"{where}the record of {p.named} (batch {p.batch}, {p.device}): {why} (a hand-made or edited "
                       "record?); left out of the latency chart, its numbers kept in the tables")
    return out


def latency_svg(points: list[Point], width: int = 760) -> str:
    """One row per measurement, its label on a line of its own above a bar to p50, whisker to p99 (tick at p90).
    A point whose percentiles cannot be drawn (:func:`latency_out_of_order`) is left out (the report warns)."""
    rows = sorted((p for p in points if latency_out_of_order(p.latency) is None), key=lambda p: p.latency["p50"])
    if not rows:
        return ""
    nums = [f'{p.latency["p50"]:.3g} / {p.latency["p90"]:.3g} / {p.latency["p99"]:.3g} ms' for p in rows]
    ml, mt, row_h = 8, 6, 36
    mr = int(max(text_width(t, 10) for t in nums)) + 14  # room for the numbers right of the longest whisker
    w = width - ml - mr
    height = mt + row_h * len(rows) + 34
    hi = max(p.latency["p99"] for p in rows) * 1.02 or 1.0
    fx = lambda v: ml + w * v / hi  # noqa: E731
    bottom = mt + row_h * len(rows)
    out = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" class="chart" '
           f'aria-label="latency distribution" xmlns="http://www.w3.org/2000/svg">']
    ticks = nice_ticks(0, hi)
    for t, label in zip(ticks, tick_labels(ticks)):
        x = fx(t)
        out.append(f'<line x1="{x:.1f}" y1="{mt}" x2="{x:.1f}" y2="{bottom}" stroke="#eceff2"/>'
                   f'<text x="{x:.1f}" y="{bottom + 14}" font-size="11" text-anchor="middle" '
                   f'fill="#55606c">{label}</text>')
    for i, (p, num) in enumerate(zip(rows, nums)):
        top = mt + i * row_h
        y = top + 25
        lat = p.latency
        c = color(p.precision)
        out.append(f'<text x="{ml}" y="{top + 12}" font-size="11" fill="#1d232b">{esc(fit_text(p.label, width - 2 * ml, 11))}'
                   f'<title>{esc(p.label)}</title></text>')
        out.append(f'<rect x="{fx(0):.1f}" y="{y - 6:.1f}" width="{max(1.0, fx(lat["p50"]) - fx(0)):.1f}" height="12" '
                   f'fill="{c}" opacity="0.85"><title>{esc(p.label)}: p50 {lat["p50"]:.3g} ms</title></rect>')
        out.append(f'<line x1="{fx(lat["p50"]):.1f}" y1="{y:.1f}" x2="{fx(lat["p99"]):.1f}" y2="{y:.1f}" stroke="#1d232b"/>'
                   f'<line x1="{fx(lat["p90"]):.1f}" y1="{y - 5:.1f}" x2="{fx(lat["p90"]):.1f}" y2="{y + 5:.1f}" '
                   f'stroke="#1d232b" stroke-width="2"/>'
                   f'<line x1="{fx(lat["p99"]):.1f}" y1="{y - 7:.1f}" x2="{fx(lat["p99"]):.1f}" y2="{y + 7:.1f}" stroke="#1d232b"/>')
        if "min" in lat:
            out.append(f'<circle cx="{fx(lat["min"]):.1f}" cy="{y:.1f}" r="2" fill="#fff" stroke="#1d232b"/>')
        out.append(f'<text x="{fx(lat["p99"]) + 6:.1f}" y="{y + 4:.1f}" font-size="10" fill="#55606c">{num}</text>')
    out.append(f'<text x="{ml + w / 2}" y="{height - 4}" font-size="11" text-anchor="middle" fill="#38424e">'
               'ms — bar: p50, tick: p90, whisker end: p99, dot: min; numbers: p50 / p90 / p99</text></svg>')
    return "".join(out)
