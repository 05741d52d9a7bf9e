"""Render :class:`~distill.report.data.ReportData` as one self-contained HTML page.

Inline CSS, inline SVG charts (:mod:`~distill.report.charts`) and a few lines of inline JS
(batch switcher, sortable tables); no network, no CDN. When the script has run without throwing
it sets ``document.body.dataset.reportReady = "1"`` (tests look for ``data-report-ready="1"``).
The export-side sections (INT8 decisions, provenance) are in :mod:`~distill.report.export_sections`,
PTQ vs QAD per domain in :mod:`~distill.report.qad_sections`.
Accuracies arrive as fractions and are printed in percent.
"""
from __future__ import annotations

import os

from distill.records import BenchRecord
from distill.records import pct as percent
from distill.records.ship import threads_label
from distill.report.charts import SHAPES, color, esc, esc_wrap, front_no, latency_svg, pareto_svg, pct
from distill.report.data import Z95, Measurement, Point, ReportData, device_label, fan_label, file_cell
from distill.report.decision import int8_file_of
from distill.report.export_sections import section_int8, section_provenance
from distill.report.qad_sections import section_qad
from distill.report.repeats import repeat_notes
from distill.report.runs import RunGroup, against_best

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d232b;background:#f6f7f9}
header{background:#1d2b3a;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#b9c6d3;font-size:12px}
main{max-width:1180px;margin:0 auto;padding:8px 24px 40px}
section{background:#fff;border:1px solid #e1e5ea;border-radius:8px;padding:14px 18px;margin:16px 0;overflow-x:auto}
h2{font-size:17px;margin:2px 0 10px}h3{font-size:14px;margin:14px 0 6px;color:#38424e}h4{font-size:13px;margin:10px 0 4px;color:#38424e}
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
ul.welch{font-size:13px;margin:4px 0 10px;padding-left:20px}
"""  # noqa: E501 (CSS as shipped; rewrapping would change the page)

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
"""  # noqa: E501 (the page's script as shipped)


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


def _front(device: str, pts: list[Point], several: bool) -> str:
    """One device's chart, front key and table at one batch size ("" when it has no point there); ``several``:
    headed by the device (each device has its own front: :func:`distill.report.data.mark_pareto`)."""
    if not pts:
        return ""
    threads = len({_point_threads(p) for p in pts}) > 1  # one file timed at 1 and 4 threads: two rows told apart
    rows = "".join(
        f'<tr><td>{esc(p.student)}</td>'
        f'<td class="path" title="{esc(p.model)}">{esc_wrap(file_cell(p.file, p.note))}</td>'
        f'<td><span class="pill" style="background:{color(p.precision)}">'
        f'{esc(p.precision)}</span></td><td>{esc(p.runtime)}</td>'
        + (f'<td class="num">{_point_threads(p)}</td>' if threads else "") +
        f'<td class="num" data-v="{p.latency["p50"]}">{p.latency["p50"]:.3g}</td>'
        f'<td class="num" data-v="{p.score if p.score is not None else -1}">{pct(p.score, 2)}'
        + (f'<span class="sd"> ±\u00a0{percent(Z95 * p.score_se, 2)}</span>' if p.score_se is not None else "") + '</td>'
        f'<td>{f"★ {front_no(pts, p)}" if p.pareto else ""}</td></tr>'
        for p in sorted(pts, key=lambda p: p.latency["p50"]))
    key = "".join(f'<li><b>{front_no(pts, p)}</b> {esc(p.label)} <span class="muted">'
                  f'{esc_wrap(file_cell(p.file, p.note))}{f" · threads {_point_threads(p)}" if threads else ""}</span></li>'
                  for p in sorted((p for p in pts if p.pareto), key=lambda p: p.latency["p50"]))
    return ((f'<h3 class="device">{esc(device)}</h3>' if several else "") + pareto_svg(pts)
            + (f'<ol class="key" title="the Pareto front, fastest first">{key}</ol>' if key else "")
            + '<table class="sortable"><thead><tr><th>model</th>'
            '<th title="hover a file for its full path">file</th><th>precision</th><th>runtime</th>'
            + ("<th>threads</th>" if threads else "") + '<th>p50 ms</th><th>accuracy % (95 %)</th>'
            f'<th>front</th></tr></thead><tbody>{rows}</tbody></table>')


def section_pareto(data: ReportData) -> str:
    batches = sorted({p.batch for p in data.points})
    if not batches:
        return ('<section id="pareto"><h2>Accuracy vs latency</h2><p class="note">No benchmark records: run '
                '<code>distill bench EXPORT_DIR --batch 1,8 --out bench.jsonl</code> and pass the .jsonl.</p></section>')
    dom = ", ".join(data.common_domains) if data.common_domains else "each point's own domains"
    parts = ['<section id="pareto"><h2>Accuracy vs latency (Pareto front)</h2>',
             f'<p class="note">Accuracy: mean top-1 over {esc(dom)}, with its 95 % interval from the test-set size '
             f'(binomial; {esc(_sizes(data.points))}). Latency: p50 per batch. A point is on its device\'s front unless another '
             'is at least as fast and not significantly less accurate: points whose intervals overlap this much are '
             'not told apart. Hover a point for details.</p>', _legend(data.points),
             '<div class="tabs">' + "".join(f'<button data-batch-tab="{b}">batch {b}</button>' for b in batches) + "</div>"]
    devices = sorted({p.device for p in data.points})
    several = len(devices) > 1  # one device: named once, above the chart; several: a chart and front each
    if not several:
        parts.insert(2, f'<p class="note">Measured on {esc(devices[0])}.</p>')
    for b in batches:
        charts = [_front(d, [p for p in data.points if p.batch == b and p.device == d], several) for d in devices]
        parts.append(f'<div data-batch-panel="{b}">' + "".join(charts) + "</div>")
    if data.unmatched:
        parts.append(f'<p class="note">{data.unmatched} record(s) have no matching accuracy (no export.json/summary.json '
                     'for their model among the inputs) and are not on the chart.</p>')
    parts.append("</section>")
    return "".join(parts)


def _pm(mean: float | None, std: float | None) -> str:
    """``mean ± std`` in percent (the std only with more than one seed)."""
    if mean is None:
        return "–"
    return percent(mean) + (f'<span class="sd"> ±\u00a0{percent(std)}</span>' if std is not None else "")


def _source_mark(is_source: bool) -> str:
    return '<span class="sd">*</span>' if is_source else ""


def _target_cell(g: RunGroup) -> str:
    """Target mean ± std (n) and the seed spread [lowest–highest]; one seed: the mean alone."""
    text = _pm(g.target_mean, g.target_std)
    if g.target_spread is not None:
        low, high = g.target_spread
        text += f'<span class="sd"> ({g.n}) [{percent(low)}–{percent(high)}]</span>'
    return text


def _group_rows(groups: list[RunGroup], doms: list[str]) -> str:
    rows = []
    for g in groups:
        src = set(g.source_domains)
        cells = "".join(
            f'<td class="num{" src" if d in src else ""}" data-v="{g.mean[d]}">{_pm(g.mean[d], g.std.get(d))}'
            f'{_source_mark(d in src)}</td>'
            if d in g.mean else f'<td class="num{" src" if d in src else ""}">–{_source_mark(d in src)}</td>' for d in doms)
        seeds = [s for s in g.seeds if s is not None]
        seed_note = f"seeds {', '.join(map(str, seeds))}" if seeds else "seed not recorded"
        per_seed = "; ".join(f"{percent(v)}" for v in g.target_per_seed)
        tm_tip = f' title="{esc(seed_note)}: {per_seed}"' if len(g.target_per_seed) > 1 else ""
        tip = esc("; ".join(r.dir for r in g.runs))
        rows.append(f'<tr><td class="label" title="{tip}">{esc_wrap(g.label)}</td><td class="num" title="{esc(seed_note)}">'
                    f'{g.n}</td><td class="num tm" data-v="{g.target_mean if g.target_mean is not None else -1}"'
                    f'{tm_tip}>'
                    f'{_target_cell(g)}</td>{cells}</tr>')
    return "".join(rows)


def _export_rows(data: ReportData, doms: list[str]) -> str:
    rows = []
    for ex in data.exports:
        e = ex.report
        run = data.run_of(e)
        src = set(run.source_domains) if run else set()
        targets = run.target_domains if run else []
        fp32 = next((m.accuracy for m in e.models if m.precision == "fp32"), None) or {}
        count = (e.data or {}).get("eval_count") or {}
        label = data.export_label(e)
        for m in e.models:
            flavour = m.int8_flavour
            prec = m.precision + (f"/{flavour}" if flavour else "")
            rows.append(_export_row(label, prec, f"{ex.dir}/{m.file}", m.accuracy or {},
                                    fp32 if m.precision != "fp32" else None, doms, src, targets, count))
        rule = int8_file_of(data, ex)  # the int8 file the no-harm rule picked, beside the export's own
        if rule is not None:  # scored by distill qad, next to fp32 on the same images
            rows.append(_export_row(label, rule.file.label, os.path.join(ex.dir, rule.file.path), rule.accuracy,
                                    rule.fp32, doms, src, targets, rule.images))
    return "".join(rows)


def _export_row(label: str, prec: str, path: str, acc: dict[str, float], fp32: dict[str, float] | None,
                doms: list[str], src: set[str], targets: list[str], count: dict[str, int]) -> str:
    """One exported model's row: accuracy per domain, in brackets the points vs ``fp32`` (None: it is fp32)."""
    cells = []
    for d in doms:
        cls = "num src" if d in src else "num"
        if d not in acc:
            cells.append(f'<td class="{cls}">–</td>')
            continue
        vs_fp32 = ""
        if fp32 is not None:
            delta = round(100 * (acc[d] - fp32.get(d, acc[d])), 1) + 0.0  # + 0.0: no "-0.0"
            vs_fp32 = f' <span class="{"bad" if delta < -1.0 else "sd"}">({delta:+.1f})</span>'
        n = f' title="{count[d]} test images"' if d in count else ""
        cells.append(f'<td class="{cls}" data-v="{acc[d]}"{n}>{percent(acc[d])}{vs_fp32}</td>')
    tmean = (sum(acc[d] for d in targets) / len(targets)) if targets and all(d in acc for d in targets) else None
    return (f'<tr><td class="label" title="{esc(path)}">{esc_wrap(label)} '
            f'<span class="pill" style="background:{color(prec)}">{esc(prec)}</span></td>'
            f'<td class="num">–</td><td class="num tm" data-v="{tmean if tmean is not None else -1}">'
            f'{pct(tmean)}</td>{"".join(cells)}</tr>')


def _welch_lists(data: ReportData) -> str:
    """Below the table, per kind of trained row: its best row of several seeds against each other such row, in
    report.md's words (:func:`distill.report.runs.against_best`)."""
    parts = []
    for title, groups in (("Trained on the source domains", [g for g in data.groups if not g.adapted]),
                          ("Adapted without source data (source-free)", [g for g in data.groups if g.adapted])):
        pairs = against_best(groups)
        if pairs:
            items = "".join(f"<li>{esc(f'{best.label} vs {g.label}: {text}')}</li>" for best, g, text in pairs)
            parts.append(f'<h3>{title}: best row of several seeds vs the others</h3><ul class="welch">{items}</ul>')
    notes = [n for g in data.groups for n in repeat_notes(g)]  # a rerun of a seed is not another seed
    if notes:
        parts.append('<p class="note">Repeats of a seed, counted once:</p><ul class="welch">'
                     + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    return "".join(parts)


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
        + "".join(f'<td class="num" data-v="{zs[d]}">{percent(zs[d])}</td>' if d in zs else '<td class="num">–</td>'
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
            'split. <span class="src legend-src">shaded</span>, *: a source (training) domain of that row; '
            '<b>target mean</b>: mean over the row\'s target domains, the number to rank by. Runs that differ only '
            'in their seed are one row: mean ± standard deviation (<b>n</b> distinct seeds; a repeat of a seed counts '
            'once) [lowest–highest seed]. Below the '
            "table, each kind's best row of several seeds against each other such row (target mean; Welch's t-test "
            'over the seeds, <b>real</b> only at p &lt; 0.05).</p>'
            f'<table class="sortable acc"><thead><tr><th>model</th><th title="distinct seeds">n</th><th>target mean</th>'
            f'{head}</tr></thead>{"".join(bodies)}</table>{_welch_lists(data)}</section>')


def _threads(record: BenchRecord) -> str:
    """The threads a record ran with (:meth:`BenchRecord.threads_label`), how that is known on hover."""
    label, basis = esc(record.threads_label()), record.threads_basis
    return f'<span title="{esc(basis)}">{label}</span>' if basis else label


def _point_threads(p: Point) -> str:
    """:func:`_threads` of a point's record; a point without one (an older report's data) by its threads alone."""
    record = p.measured.record if p.measured is not None else None
    return _threads(record) if record is not None else esc(threads_label(p.threads, None))


def section_latency(data: ReportData) -> str:
    if not data.records:
        return ""
    batches = sorted({p.batch for p in data.points})
    devices = sorted({p.device for p in data.points})  # several: a chart each, as the Pareto section's fronts
    parts = ['<section id="latency"><h2>Latency distributions</h2>']
    for b in batches:
        charts = [(f'<h4 class="device">{esc(d)}</h4>' if len(devices) > 1 else "") + latency_svg(pts) for d in devices
                  if (pts := [p for p in data.points if p.batch == b and p.device == d])]
        parts.append(f'<div data-batch-panel="{b}"><h3>batch {b}</h3>{"".join(charts)}</div>')
    recs = [m.record for m in data.records]
    labels = sorted({device_label(r) for r in recs})  # one device: named once, in the heading and Provenance
    threads = len({_threads(r) for r in recs}) > 1  # one thread count: named once, in the heading (a column less)
    ncol = 9 + threads
    # several devices: a group of rows each, headed by the device across the table (no device column: a long Jetson
    # name in a column of its own pushed the table past its card at 800 px)
    # a Jetson's fan mode where recorded: by its device when all its records share one, else on each row
    fans = {d: {fan_label(r) for r in recs if device_label(r) == d} for d in labels}
    head = {d: f"{d} · {next(iter(fans[d]))}" if len(fans[d]) == 1 and "" not in fans[d] else d for d in labels}
    bodies = "".join("<tbody>" + (f'<tr class="grp"><th colspan="{ncol}">{esc(head[d])}</th></tr>' if len(labels) > 1
                                  else "")
                     + "".join(_record_row(m, threads, fan_label(m.record) if len(fans[d]) > 1 else "")
                               for m in data.records if device_label(m.record) == d) + "</tbody>" for d in labels)
    where = ([] if len(labels) > 1 or not recs else [f"on {esc(head[labels[0]])}"]) + (
        [] if threads or not recs else [f"threads: {_threads(recs[0])}"])
    one = f' <span class="muted">{", ".join(where)}</span>' if where else ""  # each part escaped
    parts.append(f'<h3>All records{one}</h3><table class="sortable"><thead><tr><th>model</th>'
                 '<th title="hover a file for its full path">file</th><th>runtime</th>'
                 '<th>batch</th>' + ("<th>threads</th>" if threads else "")
                 + '<th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>img/s</th>'
                 f'<th>peak RSS Δ MiB</th></tr></thead>{bodies}</table></section>')
    return "".join(parts)


def _record_row(m: Measurement, threads: bool, fan: str = "") -> str:
    """A row of the latency section's "All records" table; ``threads``: with a threads cell; ``fan``: the Jetson fan
    mode, under the runtime (where the device's records differ in it)."""
    return (f'<tr><td class="label" title="{esc(m.record.model)}">{esc_wrap(m.name or m.record.model_name)}</td>'
            f'<td class="path" title="{esc(m.record.model)}">{esc_wrap(file_cell(m.file or m.record.model_name, m.note))}'
            + (' <span class="muted">(a repeat: a newer record of this file and settings is the point)</span>'
               if m.repeat else "") + '</td>'
            f'<td>{esc(m.record.runtime)}' + (f'<br><span class="muted">{esc(fan)}</span>' if fan else "")
            + f'</td><td class="num">{m.record.batch}</td>'
            + (f'<td class="num">{_threads(m.record)}</td>' if threads else "")
            + "".join(f'<td class="num" data-v="{getattr(m.record.latency_ms, k)}">{getattr(m.record.latency_ms, k):.3g}'
                      '</td>' for k in ("p50", "p90", "p99"))
            + f'<td class="num">{m.record.throughput_ips:.1f}</td><td class="num">{_mem(m)}</td></tr>')


def _mem(measurement: Measurement) -> str:
    memory = measurement.record.memory
    v = memory.get("peak_rss_delta_mb")
    g = memory.get("gpu_peak_mb")
    s = f"{v:.1f}" if isinstance(v, (int, float)) else "–"
    return s + (f" (GPU {g:.0f})" if isinstance(g, (int, float)) else "")


def section_top_ops(data: ReportData) -> str:
    prof = [(m, ops) for m in data.records if (ops := m.top_ops)]
    if not prof:
        return ('<section id="ops"><h2>Top operators</h2><p class="note">No profiled records: add '
                '<code>--profile</code> to <code>distill bench</code>.</p></section>')
    parts = ['<section id="ops"><h2>Top operators (onnxruntime profiler)</h2>']
    for i, (m, ops) in enumerate(prof):
        rows = "".join(
            f'<tr><td>{esc(o["op"])}</td><td class="num">{o.get("calls", "")}</td><td class="num">{o["total_ms"]:.2f}</td>'
            f'<td class="num">{o.get("pct", 0):.1f}</td><td style="width:40%"><div class="bar"><div style="width:'
            f'{min(100.0, o.get("pct", 0)):.1f}%"></div></div></td></tr>' for o in ops)
        top = ops[0]
        parts.append(f'<details{" open" if i == 0 else ""}><summary><b>{esc(m.label or m.record.model_name)} · '
                     f'{esc(m.record.runtime)} · batch {m.record.batch}</b> <span class="muted">— top: '
                     f'{esc(top["op"])} {top.get("pct", 0):.0f}%</span></summary>'
                     '<table><thead><tr><th>op type</th><th>calls</th><th>total ms</th><th>% of kernel time</th>'
                     f'<th></th></tr></thead><tbody>{rows}</tbody></table></details>')
    parts.append("</section>")
    return "".join(parts)


def render_html(data: ReportData, title: str, generated: str) -> str:
    """The whole page."""
    body = "".join([section_pareto(data), section_accuracy(data), section_latency(data), section_top_ops(data),
                    section_int8(data), section_qad(data), section_provenance(data)])
    sources = "<br>".join(esc(s) for s in data.sources)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f'<body data-report-ready="0"><header><h1>{esc(title)}</h1><p>generated {esc(generated)} · '
            f'{len(data.runs)} run(s), {len(data.exports)} export(s), {len(data.records)} benchmark record(s)'
            + (f', {len(data.qad)} QAD result(s)' if data.qad else "") + '</p>'
            + "".join(f'<p class="note"><b>warning:</b> {esc(w)}</p>' for w in data.warnings)
            + f'<details><summary>inputs</summary>{sources}</details></header><main>{body}</main><script>{JS}</script></body></html>\n')
