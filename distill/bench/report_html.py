"""Render :class:`~distill.bench.report.ReportData` as one self-contained HTML page.

Inline CSS, inline SVG charts and a few lines of inline JS (batch switcher, sortable tables);
no network, no CDN. When the script has run without throwing it sets
``document.body.dataset.reportReady = "1"`` (tests look for ``data-report-ready="1"``).
"""
from __future__ import annotations

import html
import json
import math
import os
import re
from typing import Any

from distill.bench.report import Z95, Point, ReportData, device_label
from distill.bench.report_runs import RunGroup, teacher_label

COLORS = {"fp32": "#1f6fb4", "fp16": "#2a9d3a", "int8/ort-cpu": "#f07f0e", "int8/tensorrt": "#c8302c", "int8": "#f07f0e"}
SHAPES = {"torch": "square", "ort-cpu": "circle", "ort-cuda": "diamond", "ort-trt": "triangle", "tensorrt": "triangle"}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d232b;background:#f6f7f9}
header{background:#1d2b3a;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#b9c6d3;font-size:12px}
main{max-width:1180px;margin:0 auto;padding:8px 24px 40px}
section{background:#fff;border:1px solid #e1e5ea;border-radius:8px;padding:14px 18px;margin:16px 0;overflow-x:auto}
h2{font-size:17px;margin:2px 0 10px}h3{font-size:14px;margin:14px 0 6px;color:#38424e}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{padding:4px 6px;border-bottom:1px solid #eceff2;text-align:left;vertical-align:top}
th{background:#f1f3f6;cursor:pointer;user-select:none}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.muted,td.path{overflow-wrap:anywhere}td.path{font-size:12px;color:#55606c;min-width:5.5em}
td.flags{font-size:11px;overflow-wrap:anywhere;min-width:10em}td.label{min-width:9em}table.prov td{font-size:12px}
td.src{background:#eaf1fb}span.legend-src{background:#eaf1fb;padding:0 4px;border-radius:3px}
td.tm{font-weight:600}.sd{color:#6b7682;font-size:12px}
table.acc thead th{font-size:12px}table.acc td.label{min-width:8em}
ol.key{list-style:none;padding:0;margin:4px 0 10px;font-size:12px}ol.key li{margin:1px 0}
ol.key b{display:inline-block;min-width:1.4em}
tr.grp th{background:#fff;cursor:default;color:#38424e;font-size:13px;padding-top:12px;border-bottom:1px solid #c9d1da}.facts{font-size:13px;margin:4px 0 10px}
svg.chart{width:100%;max-width:1000px;height:auto;display:block}
header details{color:#b9c6d3;font-size:12px;margin-top:4px}header summary{padding:0}
.bad{color:#b3261e;font-weight:600}.good{color:#1b7a34}.muted{color:#6b7682}.pill{display:inline-block;padding:0 6px;border-radius:9px;font-size:11px;color:#fff}
.bar{background:#e9edf2;height:10px;border-radius:3px;min-width:60px}.bar>div{background:#4b7bb5;height:10px;border-radius:3px}
.tabs button{border:1px solid #c9d1da;background:#fff;border-radius:5px;padding:3px 10px;margin-right:6px;cursor:pointer}
.tabs button.on{background:#1d2b3a;color:#fff;border-color:#1d2b3a}
details{margin:6px 0}summary{cursor:pointer;padding:3px 0}
.legend span{margin-right:14px;font-size:12px;white-space:nowrap}code{font-size:12px;background:#f1f3f6;padding:0 3px;border-radius:3px}
svg text{font-family:inherit}.note{font-size:12px;color:#6b7682;margin:6px 0}
"""

JS = """
(function(){
  var tabs=document.querySelectorAll('[data-batch-tab]');
  function show(b){
    document.querySelectorAll('[data-batch-panel]').forEach(function(el){el.style.display=(el.getAttribute('data-batch-panel')===b)?'':'none';});
    tabs.forEach(function(t){t.classList.toggle('on',t.getAttribute('data-batch-tab')===b);});
  }
  tabs.forEach(function(t){t.addEventListener('click',function(){show(t.getAttribute('data-batch-tab'));});});
  if(tabs.length){show(tabs[0].getAttribute('data-batch-tab'));}
  document.querySelectorAll('table.sortable').forEach(function(tb){
    if(!tb.tHead){return;}
    tb.tHead.querySelectorAll('th').forEach(function(th,i){
      th.addEventListener('click',function(){
        var asc=th.getAttribute('data-asc')!=='1';
        Array.prototype.forEach.call(tb.tBodies,function(body){
          var rows=Array.prototype.filter.call(body.rows,function(r){return !r.classList.contains('grp');});
          rows.sort(function(a,b){
            var x=a.cells[i]?a.cells[i].getAttribute('data-v')||a.cells[i].textContent:'',y=b.cells[i]?b.cells[i].getAttribute('data-v')||b.cells[i].textContent:'';
            var nx=parseFloat(x),ny=parseFloat(y);var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);return asc?c:-c;});
          rows.forEach(function(r){body.appendChild(r);});});
        th.setAttribute('data-asc',asc?'1':'0');
      });
    });
  });
  document.body.setAttribute('data-points',String(document.querySelectorAll('svg [data-point]').length));
  document.body.dataset.reportReady='1';
})();
"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def esc_wrap(x: Any) -> str:
    """Escaped, with line-break opportunities after ``_`` ``/`` ``.`` ``-`` (long domain names, paths)."""
    return re.sub(r"([_/.\-])", r"\1<wbr>", esc(x))


def pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}"


def color(precision: str) -> str:
    return COLORS.get(precision, "#6b7682")


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
    ys = [100 * p.score for p in pts]
    xlo, xhi = min(xs), max(xs)
    use_log = xlo > 0 and xhi / xlo > 20
    if use_log:
        xlo, xhi = xlo / 1.3, xhi * 1.3
        fx = lambda v: ml + w * (math.log10(v) - math.log10(xlo)) / (math.log10(xhi) - math.log10(xlo))  # noqa: E731
        xt = log_ticks(xlo, xhi)
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
    for t in xt:
        x = fx(t)
        out.append(f'<line x1="{x:.1f}" y1="{mt}" x2="{x:.1f}" y2="{mt + h}" stroke="#eceff2"/>'
                   f'<text x="{x:.1f}" y="{mt + h + 16}" font-size="11" text-anchor="middle" fill="#55606c">{fmt_num(t)}</text>')
    for t in nice_ticks(ylo, yhi):
        y = fy(t)
        out.append(f'<line x1="{ml}" y1="{y:.1f}" x2="{ml + w}" y2="{y:.1f}" stroke="#eceff2"/>'
                   f'<text x="{ml - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="#55606c">{fmt_num(t)}</text>')
    out.append(f'<text x="{ml + w / 2}" y="{height - 8}" font-size="12" text-anchor="middle" fill="#38424e">'
               f'p50 latency, ms{" (log scale)" if use_log else ""} — lower is better</text>')
    out.append(f'<text transform="translate(14,{mt + h / 2}) rotate(-90)" font-size="12" text-anchor="middle" '
               f'fill="#38424e">accuracy, % — higher is better</text>')
    front = sorted((p for p in pts if p.pareto), key=lambda p: p.latency["p50"])
    if len(front) > 1:
        # staircase: a faster point's accuracy holds until the next, slower improvement
        d = [f"M{fx(front[0].latency['p50']):.1f},{fy(100 * front[0].score):.1f}"]
        d += [f"H{fx(p.latency['p50']):.1f}V{fy(100 * p.score):.1f}" for p in front[1:]]
        out.append(f'<path d="{" ".join(d)}" fill="none" stroke="#1d2b3a" stroke-width="1.5" stroke-dasharray="5,3"/>')
    for p in pts:  # 95 % intervals first, under every marker
        if p.score_se is not None:
            x, e = fx(p.latency["p50"]), 100 * Z95 * p.score_se
            y0, y1 = fy(max(0.0, 100 * p.score - e)), fy(min(100.0, 100 * p.score + e))
            out.append(f'<path d="M{x - 4:.1f},{y0:.1f}H{x + 4:.1f}M{x:.1f},{y0:.1f}V{y1:.1f}M{x - 4:.1f},{y1:.1f}'
                       f'H{x + 4:.1f}" stroke="{color(p.precision)}" stroke-width="1.2" fill="none" opacity="0.8"/>')
    labels: list[tuple[float, float, float, str, str]] = []  # (x, y, width, anchor, text) of placed labels
    for p in sorted(pts, key=lambda p: p.pareto):
        x, y = fx(p.latency["p50"]), fy(100 * p.score)
        ci = (f" ± {100 * Z95 * p.score_se:.2f} (95 %)" if p.score_se is not None else " (test-set size unknown)")
        tip = (f"{p.label} · batch {p.batch}\np50 {p.latency['p50']:.3g} ms, p90 {p.latency['p90']:.3g}, "
               f"p99 {p.latency['p99']:.3g}\naccuracy {100 * p.score:.2f}%{ci}\n{p.device}")
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
                       f'fill="#1d232b">{esc(text)}<title>{esc(p.label)}</title></text>')
    out.append("</svg>")
    return "".join(out)


def latency_svg(points: list[Point], width: int = 760) -> str:
    """One row per measurement, its label on a line of its own above a bar to p50, whisker to p99 (tick at p90)."""
    rows = sorted(points, key=lambda p: p.latency["p50"])
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
    for t in nice_ticks(0, hi):
        x = fx(t)
        out.append(f'<line x1="{x:.1f}" y1="{mt}" x2="{x:.1f}" y2="{bottom}" stroke="#eceff2"/>'
                   f'<text x="{x:.1f}" y="{bottom + 14}" font-size="11" text-anchor="middle" '
                   f'fill="#55606c">{fmt_num(t)}</text>')
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
                   f'<line x1="{fx(lat["p90"]):.1f}" y1="{y - 5:.1f}" x2="{fx(lat["p90"]):.1f}" y2="{y + 5:.1f}" stroke="#1d232b" stroke-width="2"/>'
                   f'<line x1="{fx(lat["p99"]):.1f}" y1="{y - 7:.1f}" x2="{fx(lat["p99"]):.1f}" y2="{y + 7:.1f}" stroke="#1d232b"/>')
        if "min" in lat:
            out.append(f'<circle cx="{fx(lat["min"]):.1f}" cy="{y:.1f}" r="2" fill="#fff" stroke="#1d232b"/>')
        out.append(f'<text x="{fx(lat["p99"]) + 6:.1f}" y="{y + 4:.1f}" font-size="10" fill="#55606c">{num}</text>')
    out.append(f'<text x="{ml + w / 2}" y="{height - 4}" font-size="11" text-anchor="middle" fill="#38424e">'
               'ms — bar: p50, tick: p90, whisker end: p99, dot: min; numbers: p50 / p90 / p99</text></svg>')
    return "".join(out)


# --------------------------------------------------------------------------- sections
def _legend(points: list[Point]) -> str:
    precs = sorted({p.precision for p in points})
    rts = sorted({p.runtime for p in points})
    items = [f'<span><svg width="12" height="12"><circle cx="6" cy="6" r="5" fill="{color(pr)}"/></svg> {esc(pr)}</span>'
             for pr in precs]
    shapes = {"circle": "●", "square": "■", "diamond": "◆", "triangle": "▲"}
    items += [f'<span>{shapes[SHAPES.get(rt, "circle")]} {esc(rt)}</span>' for rt in rts]
    return ('<div class="legend">' + "".join(items) + ' <span>outlined + numbered: Pareto front</span>'
            '<span>│ vertical bar: 95 % interval</span></div>')


def _sizes(points: list[Point]) -> str:
    """How many test images stand behind the points' accuracies, e.g. "n = 48-50 images per domain"."""
    ns = sorted({n for p in points if p.score is not None for n in (p.count or {}).values()})
    unknown = any(p.score is not None and p.score_se is None for p in points)
    if not ns:
        return "test-set size unknown: no interval, plain comparison"
    s = f"n = {ns[0]}" + (f"–{ns[-1]}" if ns[-1] != ns[0] else "") + " images per domain"
    return s + ("; some points' test-set size unknown: no interval" if unknown else "")


def section_pareto(data: ReportData) -> str:
    batches = sorted({p.batch for p in data.points})
    if not batches:
        return ('<section id="pareto"><h2>Accuracy vs latency</h2><p class="note">No benchmark records: run '
                '<code>distill bench EXPORT_DIR --batch 1,8 --out bench.jsonl</code> and pass the .jsonl.</p></section>')
    dom = ", ".join(data.common_domains) if data.common_domains else "each point's own domains"
    parts = ['<section id="pareto"><h2>Accuracy vs latency (Pareto front)</h2>',
             f'<p class="note">Accuracy: mean top-1 over {esc(dom)}, with its 95 % interval from the test-set size '
             f'(binomial; {esc(_sizes(data.points))}). Latency: p50 per batch. A point is on the front unless another '
             'is at least as fast and not significantly less accurate: points whose intervals overlap this much are '
             'not told apart. Hover a point for details.</p>', _legend(data.points),
             '<div class="tabs">' + "".join(f'<button data-batch-tab="{b}">batch {b}</button>' for b in batches) + "</div>"]
    several = len({p.device for p in data.points}) > 1  # one device: named once, above the chart
    if not several:
        parts.insert(2, f'<p class="note">Measured on {esc(data.points[0].device)}.</p>')
    for b in batches:
        pts = [p for p in data.points if p.batch == b]
        rows = "".join(
            f'<tr><td>{esc(p.student)}</td><td><span class="pill" style="background:{color(p.precision)}">'
            f'{esc(p.precision)}</span></td><td>{esc(p.runtime)}</td>'
            + (f'<td>{esc(p.device)}</td>' if several else "")
            + f'<td class="num" data-v="{p.latency["p50"]}">{p.latency["p50"]:.3g}</td>'
            f'<td class="num" data-v="{p.score if p.score is not None else -1}">{pct(p.score, 2)}'
            + (f'<span class="sd"> ±\u00a0{100 * Z95 * p.score_se:.2f}</span>' if p.score_se is not None else "") + '</td>'
            f'<td>{f"★ {front_no(pts, p)}" if p.pareto else ""}</td></tr>'
            for p in sorted(pts, key=lambda p: p.latency["p50"]))
        key = "".join(f'<li><b>{front_no(pts, p)}</b> {esc(p.label)}</li>'
                      for p in sorted((p for p in pts if p.pareto), key=lambda p: p.latency["p50"]))
        parts.append(f'<div data-batch-panel="{b}">{pareto_svg(pts)}'
                     + (f'<ol class="key" title="the Pareto front, fastest first">{key}</ol>' if key else "")
                     + '<table class="sortable"><thead><tr><th>model</th><th>precision</th><th>runtime</th>'
                     + ("<th>device</th>" if several else "") + '<th>p50 ms</th><th>accuracy % (95 %)</th>'
                     f'<th>front</th></tr></thead><tbody>{rows}</tbody></table></div>')
    if data.unmatched:
        parts.append(f'<p class="note">{data.unmatched} record(s) have no matching accuracy (no export.json/summary.json '
                     'for their model among the inputs) and are not on the chart.</p>')
    parts.append("</section>")
    return "".join(parts)


def _pm(mean: float | None, std: float | None) -> str:
    """``mean ± std`` in percent (the std only with more than one seed)."""
    if mean is None:
        return "–"
    return f"{100 * mean:.1f}" + (f'<span class="sd"> ±\u00a0{100 * std:.1f}</span>' if std is not None else "")


def _group_rows(groups: list[RunGroup], doms: list[str]) -> str:
    rows = []
    for g in groups:
        src = set(g.source_domains)
        cells = "".join(
            f'<td class="num{" src" if d in src else ""}" data-v="{g.mean[d]}">{_pm(g.mean[d], g.std.get(d))}</td>'
            if d in g.mean else f'<td class="num{" src" if d in src else ""}">–</td>' for d in doms)
        seeds = [s for s in g.seeds if s is not None]
        seed_note = f"seeds {', '.join(map(str, seeds))}" if seeds else "seed not recorded"
        tip = esc("; ".join(r.dir for r in g.runs))
        rows.append(f'<tr><td class="label" title="{tip}">{esc_wrap(g.label)}</td><td class="num" title="{esc(seed_note)}">'
                    f'{g.n}</td><td class="num tm" data-v="{g.target_mean if g.target_mean is not None else -1}">'
                    f'{_pm(g.target_mean, g.target_std)}</td>{cells}</tr>')
    return "".join(rows)


def _export_rows(data: ReportData, doms: list[str]) -> str:
    rows = []
    for ex in data.exports:
        e = ex["export"]
        run = data.run_of(e)
        src = set(run.source_domains) if run else set()
        targets = run.target_domains if run else []
        fp32 = next((m.get("accuracy") for m in e.get("models", []) if m.get("precision") == "fp32"), None) or {}
        count = (e.get("data") or {}).get("eval_count") or {}
        for m in e.get("models", []):
            acc = m.get("accuracy") or {}
            cells = []
            for d in doms:
                cls = "num src" if d in src else "num"
                if d not in acc:
                    cells.append(f'<td class="{cls}">–</td>')
                    continue
                delta = round(100 * (acc[d] - fp32.get(d, acc[d])), 1) + 0.0  # + 0.0: no "-0.0"
                extra = (f' <span class="{"bad" if delta < -1.0 else "sd"}">({delta:+.1f})</span>'
                         if m.get("precision") != "fp32" else "")
                n = f' title="{count[d]} test images"' if d in count else ""
                cells.append(f'<td class="{cls}" data-v="{acc[d]}"{n}>{100 * acc[d]:.1f}{extra}</td>')
            tmean = (sum(acc[d] for d in targets) / len(targets)) if targets and all(d in acc for d in targets) else None
            prec = m["precision"] + (f"/{m['flavour']}" if m.get("flavour") else "")
            rows.append(f'<tr><td class="label" title="{esc(ex["dir"])}/{esc(m["file"])}">{esc_wrap(data.export_label(e))} '
                        f'<span class="pill" style="background:{color(prec)}">{esc(prec)}</span></td>'
                        f'<td class="num">–</td><td class="num tm" data-v="{tmean if tmean is not None else -1}">'
                        f'{pct(tmean)}</td>{"".join(cells)}</tr>')
    return "".join(rows)


def section_accuracy(data: ReportData) -> str:
    """One table, one body per kind of row (teacher, source-trained, source-free, exported), so columns line up."""
    doms = data.domains
    ncol = 3 + len(doms)
    bodies = []

    def body(title: str, rows: str, note: str = "") -> None:
        if rows:
            bodies.append(f'<tbody><tr class="grp"><th colspan="{ncol}">{title}'
                          + (f' <span class="muted">{note}</span>' if note else "") + f"</th></tr>{rows}</tbody>")

    body("Teacher (zero-shot)", "".join(
        f'<tr><td class="label">{esc_wrap(t)}</td><td class="num">–</td><td class="num">–</td>'
        + "".join(f'<td class="num" data-v="{zs[d]}">{100 * zs[d]:.1f}</td>' if d in zs else '<td class="num">–</td>'
                  for d in doms) + "</tr>"
        for t, zs in data.teachers.items()))
    body("Trained on the source domains", _group_rows([g for g in data.groups if not g.adapted], doms))
    body("Adapted to the target domains without source data (source-free)",
         _group_rows([g for g in data.groups if g.adapted], doms))
    body("Exported models", _export_rows(data, doms),
         "ONNX Runtime on the export's evaluation images; in brackets: points vs the fp32 ONNX model "
         "(red: more than 1 point lost)")
    if not bodies:
        return ""
    head = "".join(f"<th>{esc_wrap(d)}</th>" for d in doms)
    return ('<section id="accuracy"><h2>Per-domain accuracy (%)</h2><p class="note">Top-1 on each domain\'s test '
            'split. <span class="src legend-src">shaded</span>: a source (training) domain of that row; '
            '<b>target mean</b>: mean over the row\'s target domains, the number to rank by. Runs that differ only '
            'in their seed are one row: mean ± standard deviation over the <b>n</b> seeds.</p>'
            f'<table class="sortable acc"><thead><tr><th>model</th><th title="runs (seeds)">n</th><th>target mean</th>'
            f'{head}</tr></thead>{"".join(bodies)}</table></section>')


def section_latency(data: ReportData) -> str:
    if not data.records:
        return ""
    batches = sorted({p.batch for p in data.points})
    parts = ['<section id="latency"><h2>Latency distributions</h2>']
    for b in batches:
        parts.append(f'<div data-batch-panel="{b}"><h3>batch {b}</h3>{latency_svg([p for p in data.points if p.batch == b])}</div>')
    recs = [r for r in data.records if r.get("latency_ms")]
    several = len({device_label(r) for r in recs}) > 1  # one device: named once, in Provenance
    rows = "".join(
        f'<tr><td class="label" title="{esc(r.get("model", ""))}">{esc(r.get("_label") or r.get("model_name", ""))}</td>'
        f'<td>{esc(r.get("runtime"))}</td><td class="num">{r.get("batch")}</td>'
        f'<td class="num">{r.get("threads") if r.get("threads") is not None else "default"}</td>'
        + "".join(f'<td class="num" data-v="{r["latency_ms"][k]}">{r["latency_ms"][k]:.3g}</td>' for k in ("p50", "p90", "p99"))
        + f'<td class="num">{r.get("throughput_ips", 0):.1f}</td><td class="num">{_mem(r)}</td>'
        + (f'<td>{esc(device_label(r))}</td>' if several else "") + "</tr>"
        for r in recs)
    one = "" if several or not recs else f' <span class="muted">on {esc(device_label(recs[0]))}</span>'
    parts.append(f'<h3>All records{one}</h3><table class="sortable"><thead><tr><th>model</th><th>runtime</th>'
                 '<th>batch</th><th>threads</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>img/s</th>'
                 '<th>peak RSS Δ MiB</th>' + ("<th>device</th>" if several else "")
                 + f'</tr></thead><tbody>{rows}</tbody></table></section>')
    return "".join(parts)


def _mem(r: dict[str, Any]) -> str:
    m = r.get("memory") or {}
    v = m.get("peak_rss_delta_mb")
    g = m.get("gpu_peak_mb")
    s = f"{v:.1f}" if isinstance(v, (int, float)) else "–"
    return s + (f" (GPU {g:.0f})" if isinstance(g, (int, float)) else "")


def _dev(r: dict[str, Any]) -> str:
    v = r.get("versions") or {}
    libs = ", ".join(f"{k} {v[k]}" for k in ("onnxruntime", "onnxruntime-gpu", "tensorrt", "torch") if k in v)
    return f"{device_label(r)}; {libs}"


def section_top_ops(data: ReportData) -> str:
    prof = [r for r in data.records if r.get("top_ops")]
    if not prof:
        return ('<section id="ops"><h2>Top operators</h2><p class="note">No profiled records: add '
                '<code>--profile</code> to <code>distill bench</code>.</p></section>')
    parts = ['<section id="ops"><h2>Top operators (onnxruntime profiler)</h2>']
    for i, r in enumerate(prof):
        rows = "".join(
            f'<tr><td>{esc(o["op"])}</td><td class="num">{o.get("calls", "")}</td><td class="num">{o["total_ms"]:.2f}</td>'
            f'<td class="num">{o.get("pct", 0):.1f}</td><td style="width:40%"><div class="bar"><div style="width:'
            f'{min(100.0, o.get("pct", 0)):.1f}%"></div></div></td></tr>' for o in r["top_ops"])
        top = r["top_ops"][0]
        parts.append(f'<details{" open" if i == 0 else ""}><summary><b>{esc(r.get("_label") or r.get("model_name"))} · '
                     f'{esc(r.get("runtime"))} · batch {r.get("batch")}</b> <span class="muted">— top: '
                     f'{esc(top["op"])} {top.get("pct", 0):.0f}%</span></summary>'
                     '<table><thead><tr><th>op type</th><th>calls</th><th>total ms</th><th>% of kernel time</th>'
                     f'<th></th></tr></thead><tbody>{rows}</tbody></table></details>')
    parts.append("</section>")
    return "".join(parts)


def section_int8(data: ReportData) -> str:
    rows = []
    for ex in data.exports:
        e = ex["export"]
        for m in e.get("models", []):
            if m.get("precision") != "int8":
                continue
            fb = m.get("fallback") or {}
            lc = m.get("latency_check") or {}
            # the fallback decides on label-free top-1 disagreement with fp32 over calibration images;
            # the test-accuracy drop is reported beside it (older exports decided on the drop itself)
            fb_before = fb.get("before") or {}
            dis_before = fb_before.get("worst_disagreement_pts")
            decided_on_drop = dis_before is None and "disagreement_pts" not in m
            before = fb_before.get("worst_drop_pts") if decided_on_drop else dis_before
            after = max((m.get("drops_pts" if decided_on_drop else "disagreement_pts") or {}).values(), default=None)
            drop = max((m.get("drops_pts") or {}).values(), default=None)
            kept = fb.get("kept_float") or []
            ratio = lc.get("ratio_vs_fp32")
            slow = lc.get("slower_than_fp32")
            rep = lc.get("representative", True)
            ratio_s = "–" if ratio is None else f"{ratio:.2f}×"
            if slow and rep:
                ratio_s = f'<span class="bad">{ratio_s} slower than fp32</span>'
            elif not rep:
                ratio_s += ' <span class="muted">(CPU, not the target)</span>'
            cost = lc.get("fallback_cost_ratio")
            qdq = m.get("tensorrt_qdq_check")
            qdq_s = "–" if qdq is None else ('<span class="good">ok</span>' if qdq.get("ok") else
                                             f'<span class="bad">{len(qdq.get("problems", []))} problem(s)</span>')
            decision = ("not needed" if not fb.get("triggered") else
                        ("within budget" if fb.get("satisfied") else '<span class="bad">budget not met</span>'))
            steps = fb.get("steps") or []
            if steps:
                decision += (f'<br><span class="muted">{len(steps)} layer(s) tried, '
                             f'{sum(bool(s.get("accepted")) for s in steps)} kept</span>')
            rows.append(
                f'<tr><td class="label">{esc(data.export_label(e))}</td><td title="target runtime: {esc(m.get("target_runtime"))}">{esc(m.get("flavour"))}</td>'
                f'<td class="num" data-v="{after if after is not None else -1}">{"–" if before is None else f"{before:.2f}"} → '
                f'{"–" if after is None else f"{after:.2f}"} <span class="sd">(max {fb.get("max_drop_pts", "–")})</span></td>'
                f'<td class="num">{"–" if drop is None else f"{drop:+.2f}"}</td>'
                f'<td>{decision}</td><td class="path">{"<br>".join(esc(k) for k in kept) or "none"}</td>'
                f'<td>{ratio_s}'
                + ("" if cost is None else f'<br><span class="muted">fallback cost {cost:.2f}×</span>')
                + f'</td><td>{qdq_s}</td></tr>')
    if not rows:
        return ""
    return ('<section id="int8"><h2>INT8 decisions</h2><p class="note">The fallback decides on label-free evidence: '
            'the worst per-domain top-1 disagreement with the fp32 model over the calibration images (% of images), '
            'before and after keeping sensitive layers in float, against the budget (--max-drop). The worst '
            'test-accuracy drop vs fp32 (points) is reported, never decided on. Latency ratio measured at export '
            'time, interleaved, on the exporting machine\'s CPU.</p><table class="sortable"><thead><tr><th>model</th>'
            '<th>flavour</th><th>worst disagreement, %: before → after</th><th>worst test drop, pts</th>'
            '<th>fallback</th><th>layers kept in float</th>'
            '<th>int8 / fp32 latency</th>'
            f'<th>TensorRT QDQ</th></tr></thead><tbody>{"".join(rows)}</tbody></table></section>')


def _gpu_cell(r: dict[str, Any]) -> str:
    dev = r.get("device") or {}
    if dev.get("jetson"):
        return json.dumps(dev["jetson"])
    gpus = dev.get("gpus") or []
    return "; ".join(f"{g.get('name')} (driver {g.get('driver')}, {g.get('memory')})" for g in gpus) or "–"


def _common_root(paths: list[str]) -> str:
    """The deepest folder holding every path (empty when there is none worth naming)."""
    absolute = [os.path.abspath(p) for p in paths if p]
    if not absolute:
        return ""
    try:
        root = os.path.commonpath(absolute)
    except ValueError:
        return ""
    if root in absolute and len(set(absolute)) == 1:
        root = os.path.dirname(root)
    return "" if root in ("", os.sep) else root


def _rel(path: Any, root: str) -> str:
    if not path:
        return "–"
    p = os.path.abspath(str(path))
    return os.path.relpath(p, root) if root and (p == root or p.startswith(root + os.sep)) else str(path)


def section_provenance(data: ReportData) -> str:
    prov_runs = {os.path.realpath(str((ex["export"].get("provenance") or {}).get("run", ""))) for ex in data.exports}
    lone_runs = [r for r in data.runs if os.path.realpath(r.dir) not in prov_runs]
    paths = ([ex["dir"] for ex in data.exports] + [str((ex["export"].get("provenance") or {}).get("run") or "")
                                                   for ex in data.exports]
             + [str(ex["export"].get("checkpoint") or "") for ex in data.exports] + [r.dir for r in lone_runs])
    root = _common_root([p for p in paths if p])
    teachers = list(dict.fromkeys(
        [t for t in (teacher_label((ex["export"].get("provenance") or {}).get("teacher")) for ex in data.exports) if t]
        + [r.teacher for r in data.runs if r.teacher]))
    rows = []
    for ex in data.exports:
        e = ex["export"]
        prov = e.get("provenance") or {}
        d = e.get("data") or {}
        calib = ", ".join(d.get("calib_domains", []) or []) or "–"
        if d.get("target_domains"):
            calib += f' <span class="muted">(targets unlabeled: {esc(", ".join(d["target_domains"]))})</span>'
        teacher = teacher_label(prov.get("teacher"))
        rows.append(
            f'<tr><td class="label">{esc(data.export_label(e))}</td>'
            + (f'<td>{esc(teacher or "–")}</td>' if len(teachers) > 1 else "")
            + f'<td class="path">run {esc(_rel(prov.get("run"), root))}<br>export {esc(_rel(ex["dir"], root))}</td>'
            f'<td class="path">{esc(_rel(e.get("checkpoint"), root))}<br>'
            f'<code>{esc(str(prov.get("checkpoint_sha256", ""))[:12])}</code></td>'
            f'<td class="path">{esc(d.get("root", "–"))}<br><code>{esc(str(d.get("fingerprint", ""))[:12])}</code></td>'
            f'<td>{calib}</td></tr>')
    run_rows = [
        f'<tr><td class="label">{esc(r.label)}</td>' + (f'<td>{esc(r.teacher or "–")}</td>' if len(teachers) > 1 else "")
        + f'<td class="num">{"–" if r.seed is None else r.seed}</td><td class="path">{esc(_rel(r.dir, root))}</td>'
        f'<td>{esc(", ".join(r.source_domains) or "–")} → {esc(", ".join(r.target_domains) or "–")}</td></tr>'
        for r in sorted(lone_runs, key=lambda r: (r.label, r.seed or 0))]
    versions = list(dict.fromkeys(
        ", ".join(f"{k} {v}" for k, v in (ex["export"].get("versions") or {}).items()) for ex in data.exports))
    devices = {}
    for r in data.records:
        devices.setdefault(json.dumps(r.get("device"), sort_keys=True), r)
    dev_rows = "".join(
        f'<tr><td>{esc(_dev(r))}</td><td class="path">{esc((r.get("device") or {}).get("platform", ""))}</td>'
        f'<td class="flags">{esc(" ".join(((r.get("device") or {}).get("cpu") or {}).get("flags", [])))}</td>'
        f'<td>{esc(_gpu_cell(r))}</td></tr>'
        for r in devices.values())
    if not rows and not run_rows and not dev_rows:
        return ""
    out = ['<section id="provenance"><h2>Provenance</h2>']
    th_teacher = "<th>teacher</th>" if len(teachers) > 1 else ""
    facts = []
    if len(teachers) == 1:
        facts.append(f"<b>teacher</b> {esc(teachers[0])}")
    if root:
        facts.append(f"<b>paths</b> relative to <code>{esc(root)}</code>")
    for v in versions:
        facts.append(f"<b>export libraries</b> {esc(v)}")
    if facts:
        out.append('<p class="facts">' + "<br>".join(facts) + "</p>")
    if rows:
        out.append(f'<h3>Exports</h3><table class="prov"><thead><tr><th>model</th>{th_teacher}<th>folders</th>'
                   '<th>checkpoint</th><th>data</th><th>calibration</th></tr></thead>'
                   f'<tbody>{"".join(rows)}</tbody></table>')
    if run_rows:
        out.append(f'<h3>{"Other runs" if rows else "Runs"}</h3><table class="prov"><thead><tr><th>model</th>{th_teacher}'
                   '<th>seed</th><th>folder</th><th>source → target domains</th></tr></thead>'
                   f'<tbody>{"".join(run_rows)}</tbody></table>')
    if dev_rows:
        out.append('<h3>Devices</h3><table class="prov"><thead><tr><th>device; libraries</th><th>platform</th>'
                   f'<th>CPU flags</th><th>GPU / Jetson</th></tr></thead><tbody>{dev_rows}</tbody></table>')
    out.append("</section>")
    return "".join(out)


def render_html(data: ReportData, title: str, generated: str) -> str:
    """The whole page."""
    body = "".join([section_pareto(data), section_accuracy(data), section_latency(data), section_top_ops(data),
                    section_int8(data), section_provenance(data)])
    sources = "<br>".join(esc(s) for s in data.sources)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f'<body data-report-ready="0"><header><h1>{esc(title)}</h1><p>generated {esc(generated)} · '
            f'{len(data.runs)} run(s), {len(data.exports)} export(s), {len(data.records)} benchmark record(s)</p>'
            f'<details><summary>inputs</summary>{sources}</details></header><main>{body}</main><script>{JS}</script></body></html>\n')
