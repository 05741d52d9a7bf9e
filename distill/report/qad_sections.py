"""PTQ vs QAD next to fp32, per domain: one table per ``distill qad`` result (qad.json), in HTML and Markdown.

Per domain: the fp32 student's test accuracy, plain PTQ int8's and QAD int8's (with their change from fp32
in points), and each int8 model's top-1 disagreement with fp32 on the calibration images (QAD trained on
them) and on the held-out test images. Accuracy is a fraction in the record
(:class:`~distill.records.QADRecord`) and a percent here; qad.json files written before accuracies were
recorded show disagreement only. Above each table, the no-harm rule's decision (which int8 file, QAD's or PTQ's,
is the student's int8, why, and the hold-out disagreement per domain it decided on; whether int8 ships at all is the
export's recommendation, named beside it: :mod:`distill.report.decision`); files from before the rule say none was
recorded.
"""
from __future__ import annotations

from dataclasses import dataclass

from distill.records import QADRecord, pct
from distill.report.charts import esc, esc_wrap
from distill.report.data import QADEntry, ReportData
from distill.report.decision import decision_for, export_for, unpaired_reason

NOTE = ("Top-1 accuracy on each domain's held-out test images (% of images; in brackets: the change from fp32 in "
        "points), and top-1 disagreement with the fp32 student (% of images whose predicted class differs) on the "
        "calibration images, which QAD trained on, and on the test images. PTQ: plain PTQ (MinMax calibration, no float "
        "fallback), or, when distill qad ran with --export, that export's int8 file (its calibration and fallback; "
        "the PTQ arm of each table is named above it); QAD: the student fine-tuned with fake quantization against the fp32 "
        "student (and the cached teacher when given), exported as QDQ int8 (distill qad). All three are scored on "
        "the same images. No-harm rule: QAD's file is the student's int8 file only when its mean disagreement with "
        "fp32 over the domains, on hold-out train images (neither calibration nor test images), is below PTQ's; "
        "otherwise PTQ's is. The rule picks the int8 file, not whether int8 ships: that is the export's "
        "recommendation (Recommended to ship), from int8's measured speed and --max-drop.")
HEADERS = ("domain", "test images", "fp32 %", "PTQ int8 %", "QAD int8 %", "PTQ disagreement, calibration",
           "QAD disagreement, calibration", "PTQ disagreement, test", "QAD disagreement, test")


@dataclass
class QADRow:
    """One domain of one QAD result; accuracies are fractions, disagreements points, None where not measured."""

    domain: str
    count: int | None
    fp32: float | None
    ptq: float | None
    qad: float | None
    ptq_calibration: float | None
    qad_calibration: float | None
    ptq_test: float | None
    qad_test: float | None


def qad_rows(record: QADRecord) -> list[QADRow]:
    """One row per domain, in the order the record's test (then calibration) domains appear."""
    acc = record.accuracy
    domains = list(dict.fromkeys([*record.qad.test, *record.qad.calibration, *(acc.fp32 if acc else {})]))
    return [QADRow(domain=d, count=acc.count.get(d) if acc else None, fp32=acc.fp32.get(d) if acc else None,
                   ptq=acc.ptq.get(d) if acc else None, qad=acc.qad.get(d) if acc else None,
                   ptq_calibration=record.ptq.calibration.get(d), qad_calibration=record.qad.calibration.get(d),
                   ptq_test=record.ptq.test.get(d), qad_test=record.qad.test.get(d))
            for d in domains]


def qad_title(data: ReportData, entry: QADEntry) -> str:
    """``student · int8/flavour · seed S · E epochs · teacher T · ranges R``: what sets one QAD result apart."""
    r = entry.record
    s = r.settings
    epochs = "" if s.epochs is None else f" · {s.epochs} epoch{'s' if s.epochs != 1 else ''}"
    return f"{data.qad_label(r)} · int8/{r.flavour} · seed {s.seed}{epochs} · teacher {r.teacher} · ranges {s.ranges}"


def qad_facts(record: QADRecord) -> str:
    """The PTQ arm, the layers QAD kept in float as that arm does, image counts, whether the record met its
    target (worst calibration disagreement after QAD) and, when recorded, how many int8 weight values QAD changed."""
    met = "met" if record.within_target else "not met"
    moved = ("" if record.weights_changed_pct is None else
             f"; QAD changed {record.weights_changed_pct:.2f} % of the int8 weight values (the rest of its effect: "
             "biases and activation ranges)")
    names = [k + (" (its output too)" if k in record.float_outputs else "") for k in record.kept_float]
    kept = (f"QAD kept in float the {len(record.kept_float)} layer(s) that file keeps in float: "
            f"{', '.join(names)}. " if record.kept_float else "")
    return (f"PTQ arm: {record.ptq_origin}. {kept}"
            f"{record.calibration_images} calibration / {record.test_images} test images; worst calibration "
            f"disagreement PTQ {record.ptq.worst_calibration:.2f} → QAD {record.qad.worst_calibration:.2f} points "
            f"(target ≤ {record.target_pts:g}: {met}){moved}")


def qad_decision(record: QADRecord, recommended: str | None = None,
                 unpaired: str = "no export of this checkpoint in this report") -> str:
    """The no-harm rule's decision: the int8 file it picks, why, and the hold-out disagreement per domain; then
    where the precision comes from: the export's recommendation (``recommended``, e.g. ``fp32``, when the export of
    this checkpoint names this result's file; else ``unpaired`` says why it does not:
    :func:`~distill.report.decision.unpaired_reason`)."""
    precision = (f"Precision to ship: {recommended}, the export's recommendation (Recommended to ship)" if recommended
                 else f"Precision to ship (int8 or not): the export's recommendation (Recommended to ship; {unpaired})")
    if record.ship is None:
        return (f"No-harm rule: not recorded (a qad.json from before the rule); int8 file: QAD's, {record.qad_file}. "
                f"{precision}")
    per_domain = "; ".join(f"{d} PTQ {record.ptq.holdout.get(d, float('nan')):.2f} / QAD {v:.2f}"
                           for d, v in record.qad.holdout.items())
    return (f"No-harm rule: int8 file: {record.ship_arm}'s, {record.ship_file} ({record.ship_reason}). {precision}. "
            f"Hold-out disagreement with fp32 per domain, pts: {per_domain}")


def _decision(data: ReportData, entry: QADEntry) -> str:
    """:func:`qad_decision` with the precision recommended for the export this result belongs to."""
    export = export_for(data, entry)
    decision = decision_for(data, export) if export else None
    if decision is None:
        return qad_decision(entry.record, unpaired=unpaired_reason(data, entry))
    return qad_decision(entry.record, decision.what)


def _pts(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _delta(x: float | None, fp32: float | None) -> str:
    """The change from fp32 in points, one decimal (no "-0.0")."""
    if x is None or fp32 is None:
        return ""
    return f"{round(100 * (x - fp32), 1) + 0.0:+.1f}"


def _acc(x: float | None) -> str:
    return "–" if x is None else pct(x)


# --------------------------------------------------------------------------- Markdown
def qad_markdown(data: ReportData) -> list[str]:
    """The report.md section (empty when there is no QAD result)."""
    if not data.qad:
        return []
    lines = ["## PTQ vs QAD per domain (int8 next to fp32)", "", NOTE, ""]
    for entry in data.qad:
        lines += [f"### {qad_title(data, entry)}", "", qad_facts(entry.record) + ".", "",
                  f"**{_decision(data, entry)}.**", "",
                  "| " + " | ".join(HEADERS[:5]) + " | " + " | ".join(f"{h}, pts" for h in HEADERS[5:]) + " |",
                  "|---|" + "---:|" * (len(HEADERS) - 1)]
        for row in qad_rows(entry.record):
            cells = [row.domain, "–" if row.count is None else str(row.count), _acc(row.fp32)]
            cells += [_acc(x) + (f" ({d})" if (d := _delta(x, row.fp32)) else "") for x in (row.ptq, row.qad)]
            cells += [_pts(x) for x in (row.ptq_calibration, row.qad_calibration, row.ptq_test, row.qad_test)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


# --------------------------------------------------------------------------- HTML
def _acc_cell(x: float | None, fp32: float | None) -> str:
    if x is None:
        return '<td class="num">–</td>'
    d = _delta(x, fp32)
    bad = d and float(d) < -1.0
    return (f'<td class="num" data-v="{x}">{pct(x)}'
            + (f' <span class="{"bad" if bad else "sd"}">({d})</span>' if d else "") + "</td>")


def _pts_cell(x: float | None, limit: float | None = None) -> str:
    if x is None:
        return '<td class="num">–</td>'
    over = limit is not None and x > limit
    return f'<td class="num{" bad" if over else ""}" data-v="{x}">{x:.2f}</td>'


def section_qad(data: ReportData) -> str:
    """The report.html section (empty when there is no QAD result)."""
    if not data.qad:
        return ""
    parts = ['<section id="qad"><h2>PTQ vs QAD per domain (int8 next to fp32)</h2>',
             f'<p class="note">{esc(NOTE)} Disagreement in points; red: over the QAD target.</p>']
    head = ('<tr><th rowspan="2">domain</th><th rowspan="2">test images</th><th colspan="3">test accuracy, %</th>'
            '<th colspan="2">disagreement with fp32, calibration, pts</th>'
            '<th colspan="2">disagreement with fp32, test, pts</th></tr>'
            "<tr><th>fp32</th><th>PTQ int8</th><th>QAD int8</th><th>PTQ</th><th>QAD</th><th>PTQ</th><th>QAD</th></tr>")
    for entry in data.qad:
        r = entry.record
        rows = "".join(
            f'<tr><td class="label">{esc_wrap(row.domain)}</td>'
            f'<td class="num">{"–" if row.count is None else row.count}</td>'
            + _acc_cell(row.fp32, None) + _acc_cell(row.ptq, row.fp32) + _acc_cell(row.qad, row.fp32)
            + _pts_cell(row.ptq_calibration) + _pts_cell(row.qad_calibration, r.target_pts)
            + _pts_cell(row.ptq_test) + _pts_cell(row.qad_test) + "</tr>"
            for row in qad_rows(r))
        parts.append(f'<h3 title="{esc(entry.dir)}">{esc(qad_title(data, entry))}</h3>'
                     f'<p class="facts">{esc(qad_facts(r))}</p>'
                     f'<p class="facts"><b>{esc(_decision(data, entry))}</b></p>'
                     f'<table class="qad"><thead>{head}</thead><tbody>{rows}</tbody></table>')
    parts.append("</section>")
    return "".join(parts)
