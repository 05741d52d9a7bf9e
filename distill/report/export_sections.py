"""The export-side sections of the HTML report: INT8 decisions and provenance (folders, data, devices)."""
from __future__ import annotations

import json
import os
from typing import Any

from distill.records.ship import threads_label
from distill.report.charts import esc, esc_wrap
from distill.report.data import Measurement, ReportData, device_label, extra, fan_label, jetson_text
from distill.report.decision import decision_for
from distill.report.runs import teacher_label

NEAR_TIE_NOTE = ("Test images near a tie: the share of test images whose fp32 top-1 margin is smaller than the int8 "
                 "model's logit move (its p95); int8 can change only those, so this bounds what any calibration, "
                 "fallback or QAD can reach (export.json near_ties).")
ORT_FLOAT_NOTE = ("On ONNX Runtime CPU (ort-cpu) a layer \"kept in float\" between int8 layers has per-tensor int8 "
                  "weights in the file: what onnxruntime would make of a float layer there when it loads the file "
                  "(the others, and every kept layer of a TensorRT file, are float). \"+ float output\": the layer's "
                  "output and the activation after it (hardswish) are float too.")


def latency_threads(latency_check: dict[str, Any]) -> str:
    """``threads 2 (default)``: the threads an export's latency check ran with, as the latency table names a bench
    record's (:func:`~distill.records.ship.threads_label`; ``default`` in an export.json from before it counted
    them)."""
    return f"threads {threads_label(latency_check.get('threads'), latency_check.get('threads_used'))}"


def kept_labels(fallback: dict[str, Any]) -> list[str]:
    """export.json's fallback layers kept in float, ``+ float output`` on those whose output stayed float too."""
    outputs = set(fallback.get("float_outputs") or [])
    return [k + (" + float output" if k in outputs else "") for k in fallback.get("kept_float") or []]


def _cpu_flags(cpu: dict) -> str:
    """The SIMD flags the benchmark's process saw, and those hidden from it (scripts/as_avx2.sh: ``hidden_flags``)."""
    hidden = cpu.get("hidden_flags") or []
    return " ".join(cpu.get("flags", [])) + (f" (hidden from CPUID: {' '.join(hidden)})" if hidden else "")


def cpu_kinds_note(model: Any) -> str:
    """Which x86 CPUs run an ort-cpu file as exported (export.json ``x86_without_vnni``; "" for other flavours and older
    exports): 7-bit weights run alike everywhere; 8-bit ones saturate u8 x s8 pairs on x86 CPUs without VNNI."""
    check = extra(model, "x86_without_vnni")
    if not check:
        return ""
    if check.get("exact"):
        return "7-bit weights: any x86 CPU"
    return f"8-bit weights: {check.get('layers_at_risk', '?')} layers saturate on x86 without VNNI"


def near_tie_cell(model: Any) -> str:
    """``36 %`` (export.json ``near_ties.near_tie_pct`` of an int8 entry), or ``–`` in exports without it."""
    ties = extra(model, "near_ties") or {}
    return "–" if ties.get("near_tie_pct") is None else f"{ties['near_tie_pct']:.0f} %"


def section_int8(data: ReportData) -> str:
    rows = []
    # the TensorRT QDQ placement check exists for tensorrt-flavour files only: no column of dashes without one
    any_qdq = any(extra(m, "tensorrt_qdq_check") is not None for ex in data.exports for m in ex.report.models
                  if m.precision == "int8")
    for ex in data.exports:
        e = ex.report
        for m in e.models:
            if m.precision != "int8":
                continue
            fb = extra(m, "fallback") or {}
            lc = extra(m, "latency_check") or {}
            # the fallback decides on label-free top-1 disagreement with fp32 over calibration images;
            # the test-accuracy drop is reported beside it (older exports decided on the drop itself)
            fb_before = fb.get("before") or {}
            dis_before = fb_before.get("worst_disagreement_pts")
            decided_on_drop = dis_before is None and "disagreement_pts" not in (m.model_extra or {})
            before = fb_before.get("worst_drop_pts") if decided_on_drop else dis_before
            after = max((extra(m, "drops_pts" if decided_on_drop else "disagreement_pts") or {}).values(), default=None)
            drops: dict[str, float] = extra(m, "drops_pts") or {}
            drop = max(drops.values(), default=None)
            # McNemar's p of that domain's drop (paired: fp32 and int8 scored the same test images)
            drop_p = (extra(m, "drops_p") or {}).get(max(drops, key=drops.__getitem__)) if drops else None
            kept = kept_labels(fb)
            ratio = lc.get("ratio_vs_fp32")
            slow = lc.get("slower_than_fp32")
            rep = lc.get("representative", True)
            ratio_s = "–" if ratio is None else f"{ratio:.2f}×"
            if slow and rep:
                ratio_s = f'<span class="bad">{ratio_s} slower than fp32</span>'
            elif not rep:
                ratio_s += ' <span class="muted">(CPU, not the target)</span>'
            cost = lc.get("fallback_cost_ratio")
            qdq = extra(m, "tensorrt_qdq_check")
            qdq_s = "–" if qdq is None else ('<span class="good">ok</span>' if qdq.get("ok") else
                                             f'<span class="bad">{len(qdq.get("problems", []))} problem(s)</span>')
            decision = ("not needed" if not fb.get("triggered") else
                        ("within budget" if fb.get("satisfied") else '<span class="bad">budget not met</span>'))
            steps = fb.get("steps") or []
            if steps:
                decision += (f'<br><span class="muted">{len(steps)} layer(s) tried, '
                             f'{sum(bool(s.get("accepted")) for s in steps)} kept</span>')
            note = cpu_kinds_note(m)  # which x86 CPUs run the file as exported (ort-cpu)
            kinds = "" if not note else (f'<br><span class="{"muted" if note.startswith("7-bit") else "bad"}">'
                                         f'{esc(note)}</span>')
            rows.append(
                f'<tr><td class="label">{esc_wrap(data.export_label(e))}</td>'
                f'<td title="target runtime: {esc(extra(m, "target_runtime"))}">{esc(m.int8_flavour)}{kinds}</td>'
                f'<td class="num" data-v="{after if after is not None else -1}">{"–" if before is None else f"{before:.2f}"} → '
                f'{"–" if after is None else f"{after:.2f}"} <span class="sd">(max {fb.get("max_drop_pts", "–")})</span>'
                + ("" if near_tie_cell(m) == "–" else f'<br><span class="muted">near a tie: {near_tie_cell(m)}</span>')
                + '</td>'
                f'<td class="num">{"–" if drop is None else f"{drop:+.2f}"}'
                + ("" if drop_p is None else f' <span class="sd">(p {drop_p:.2g})</span>') + '</td>'
                f'<td>{decision}</td><td class="path">{"<br>".join(esc(k) for k in kept) or "none"}</td>'
                f'<td>{ratio_s}'
                + ("" if ratio is None else f'<br><span class="muted" title="{esc(lc.get("threads_basis") or "")}">'
                                            f'{esc(latency_threads(lc))}</span>')
                + ("" if cost is None else f'<br><span class="muted">fallback cost {cost:.2f}×</span>')
                + '</td>' + (f'<td>{qdq_s}</td>' if any_qdq else '') + '</tr>')
    recommended = section_recommendations(data)
    if not rows:
        return f'<section id="int8"><h2>What to ship</h2>{recommended}</section>' if recommended else ""
    return ('<section id="int8"><h2>INT8 decisions</h2><p class="note">The fallback decides on label-free evidence: '
            'the worst per-domain top-1 disagreement with the fp32 model over the calibration images (% of images), '
            'before and after keeping sensitive layers in float, against the budget (--max-drop); under it, the '
            'share of test images whose fp32 margin is within int8\'s logit move (near a tie: int8 can change '
            'only those). The worst '
            'test-accuracy drop vs fp32 (points) is reported, never decided on, with McNemar\'s exact p over the '
            'same test images (a drop is real only at p &lt; 0.05). Latency ratio measured at export '
            'time, interleaved, on the exporting machine\'s CPU. ' + ORT_FLOAT_NOTE
            + '</p><table class="sortable"><thead><tr><th>model</th>'
            '<th>flavour</th><th>worst disagreement, %: before → after</th><th>worst test drop, pts</th>'
            '<th>fallback</th><th>layers kept in float</th>'
            '<th>int8 / fp32 latency</th>'
            + ('<th>TensorRT QDQ</th>' if any_qdq else '')
            + f'</tr></thead><tbody>{"".join(rows)}</tbody></table>{recommended}</section>')


def section_recommendations(data: ReportData) -> str:
    """Each export's one decision (:mod:`distill.report.decision`): the precision its measurements recommend
    (export.json ``recommendation``) and, with a ``distill qad`` result of its model, the no-harm rule's int8 file."""
    items = []
    for ex in data.exports:
        decision = decision_for(data, ex)
        if decision is not None:
            items.append(f'<li><b>{esc(data.export_label(ex.report))}</b>: {decision.html()}</li>')
    if not items:
        return ""
    return ('<h3>Recommended to ship</h3><p class="note">From the export\'s own measurements: int8 only where it '
            'was measured faster on its target runtime and within --max-drop. With a distill qad result, the int8 '
            'file is the one its no-harm rule picked (QAD\'s or plain PTQ\'s).</p>'
            f'<ul class="recommend">{"".join(items)}</ul>')


def _gpu_cell(measurement: Measurement) -> str:
    dev = measurement.record.device
    if isinstance(dev.get("jetson"), dict) and dev["jetson"]:
        return " · ".join(filter(None, [jetson_text(dev["jetson"]), fan_label(measurement.record)]))
    gpus = dev.get("gpus") or []
    return "; ".join(f"{g.get('name')} (driver {g.get('driver')}, {g.get('memory')})" for g in gpus) or "–"


def _dev(measurement: Measurement) -> str:
    """The device and the runtime libraries a record was measured with."""
    v = extra(measurement.record, "versions") or {}
    libs = ", ".join(f"{k} {v[k]}" for k in ("onnxruntime", "onnxruntime-gpu", "tensorrt", "torch") if k in v)
    return f"{device_label(measurement.record)}; {libs}"


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
    run_of = {id(ex): data.run_of(ex) for ex in data.exports}  # each export's run, when among the inputs
    run_dirs = {id(ex): run.dir if run else str(ex.report.provenance.get("run") or "") for ex, run in
                ((ex, run_of[id(ex)]) for ex in data.exports)}
    lone_runs = [r for r in data.runs if not any(run is r for run in run_of.values())]
    paths = ([ex.dir for ex in data.exports] + list(run_dirs.values())
             + [ex.report.checkpoint for ex in data.exports] + [r.dir for r in lone_runs])
    root = _common_root([p for p in paths if p])
    teachers = list(dict.fromkeys(
        [t for t in (teacher_label(ex.report.provenance.get("teacher")) for ex in data.exports) if t]
        + [r.teacher for r in data.runs if r.teacher]))
    rows = []
    for ex in data.exports:
        e = ex.report
        prov = e.provenance
        d = e.data or {}
        calib = ", ".join(d.get("calib_domains", []) or []) or "–"
        if d.get("target_domains"):
            calib += f' <span class="muted">(targets unlabeled: {esc(", ".join(d["target_domains"]))})</span>'
        teacher = teacher_label(prov.get("teacher"))
        rows.append(
            f'<tr><td class="label">{esc_wrap(data.export_label(e))}</td>'
            + (f'<td>{esc(teacher or "–")}</td>' if len(teachers) > 1 else "")
            + f'<td class="path">run {esc(_rel(run_dirs[id(ex)], root))}<br>export {esc(_rel(ex.dir, root))}</td>'
            f'<td class="path">{esc(_rel(e.checkpoint, root))}<br>'
            f'<code>{esc(str(prov.get("checkpoint_sha256", ""))[:12])}</code></td>'
            f'<td class="path">{esc(d.get("root", "–"))}<br><code>{esc(str(d.get("fingerprint", ""))[:12])}</code></td>'
            f'<td>{calib}</td></tr>')
    run_rows = [
        f'<tr><td class="label">{esc_wrap(r.label)}</td>' + (f'<td>{esc(r.teacher or "–")}</td>' if len(teachers) > 1 else "")
        + f'<td class="num">{"–" if r.seed is None else r.seed}</td><td class="path">{esc(_rel(r.dir, root))}</td>'
        f'<td>{esc(", ".join(r.source_domains) or "–")} → {esc(", ".join(r.target_domains) or "–")}</td></tr>'
        for r in sorted(lone_runs, key=lambda r: (r.label, r.seed or 0))]
    versions = list(dict.fromkeys(
        ", ".join(f"{k} {v}" for k, v in ex.report.versions.items()) for ex in data.exports))
    devices: dict[str, Measurement] = {}
    for m in data.records:
        devices.setdefault(json.dumps(m.record.device, sort_keys=True), m)
    dev_rows = "".join(
        f'<tr><td>{esc(_dev(m))}</td><td class="path">{esc(m.record.device.get("platform", ""))}</td>'
        f'<td class="flags">{esc(_cpu_flags(m.record.device.get("cpu") or {}))}</td>'
        f'<td>{esc(_gpu_cell(m))}</td></tr>'
        for m in devices.values())
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
