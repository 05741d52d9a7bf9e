"""Render :class:`~distill.report.data.ReportData` as a short Markdown summary (report.md).

Accuracies arrive as fractions; they become percents here, when printed.
"""
from __future__ import annotations

from distill.records import pct
from distill.records.ship import threads_label
from distill.report.data import Z95, Point, ReportData, extra, fan_label, file_cell
from distill.report.decision import decision_for, int8_file_of
from distill.report.export_sections import (
    NEAR_TIE_NOTE,
    ORT_FLOAT_NOTE,
    cpu_kinds_note,
    kept_labels,
    latency_threads,
    near_tie_cell,
)
from distill.report.qad_sections import qad_markdown
from distill.report.repeats import bench_repeat_notes, repeat_notes
from distill.report.runs import RunGroup, against_best


def _pct(x: float | None) -> str:
    return "–" if x is None else pct(x, 2)


def _ci(se: float | None) -> str:
    return "" if se is None else f" ± {pct(Z95 * se, 2)}"


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "–"
    return pct(mean) + (f" ± {pct(std)}" if std is not None else "")


def target_cell(g: RunGroup) -> str:
    """``mean ± std (n) [lowest–highest]`` over the seeds, in %; one seed: the mean alone, as a single run reads."""
    if g.target_spread is None:
        return _pm(g.target_mean, None)
    low, high = g.target_spread
    return f"{_pm(g.target_mean, g.target_std)} ({g.n}) [{pct(low)}–{pct(high)}]"


def _threads(point: Point, basis: bool = False) -> str:
    """A point's threads cell, as report.html's latency table has it (:meth:`BenchRecord.threads_label`); ``basis``:
    with how that is known (``threads_basis``), which report.html shows on hover."""
    record = point.measured.record if point.measured is not None else None
    label = record.threads_label() if record is not None else threads_label(point.threads, None)
    return f"{label} ({record.threads_basis})" if basis and record is not None and record.threads_basis else label


def _run_table(groups: list[RunGroup], doms: list[str]) -> list[str]:
    lines = ["| model | n | target mean | " + " | ".join(doms) + " |", "|---|---:|---:|" + "---:|" * len(doms)]
    for g in groups:
        src = set(g.source_domains)
        cells = [(_pm(g.mean[d], g.std.get(d)) if d in g.mean else "–") + ("*" if d in src else "") for d in doms]
        lines.append(f"| {g.label} | {g.n} | {target_cell(g)} | " + " | ".join(cells) + " |")
    repeats = [f"- {n}" for g in groups for n in repeat_notes(g)]  # a rerun of a seed is not another seed
    return lines + [""] + _against_best(groups) + (repeats + [""] if repeats else [])


def _against_best(groups: list[RunGroup]) -> list[str]:
    """The best row of several seeds against each other such row (:func:`distill.report.runs.against_best`)."""
    pairs = against_best(groups)
    return [f"- {best.label} vs {g.label}: {text}" for best, g, text in pairs] + [""] if pairs else []


def _fans(points: list[Point]) -> dict[str, set[str]]:
    """Each device's Jetson fan modes over its points' records, repeats included ("" where none is recorded)."""
    fans: dict[str, set[str]] = {}
    for p in points:
        for m in ([p.measured] if p.measured else []) + p.repeats:
            fans.setdefault(p.device, set()).add(fan_label(m.record))
    return fans


def _device(device: str, fans: dict[str, set[str]]) -> str:
    """``device``, with its fan mode where every record of it has the same one (as report.html's "All records")."""
    f = fans.get(device, set())
    return f"{device} · {next(iter(f))}" if len(f) == 1 and "" not in f else device


def _runtime(p: Point, fans: dict[str, set[str]]) -> str:
    """``p``'s runtime, with its record's fan mode where its device's records differ in theirs."""
    fan = fan_label(p.measured.record) if p.measured and len(fans.get(p.device, set())) > 1 else ""
    return f"{p.runtime} ({fan})" if fan else p.runtime


def render_markdown(data: ReportData, title: str, generated: str) -> str:
    lines = [f"# {title}", "", f"Generated {generated} from {len(data.runs)} run(s), {len(data.exports)} export(s), "
             f"{len(data.records)} benchmark record(s)" + (f", {len(data.qad)} QAD result(s)" if data.qad else "") + ".", ""]
    lines += [line for w in data.warnings for line in (f"**Warning:** {w}.", "")]
    if data.points:
        dom = ", ".join(data.common_domains) or "each point's own domains"
        # the threads as report.html's tables have them: a column where they differ, else named once (below the
        # measurements table)
        threads = len({_threads(p) for p in data.points}) > 1
        lines += ["## Pareto front (accuracy vs p50 latency)", "", f"Accuracy: mean top-1 over {dom}.", "",
                  "A point is on the front (one per batch size and device) unless another of its device is at least "
                  "as fast and not significantly less accurate (± : 95 % interval from the test-set size).", "",
                  "| batch | student | precision | runtime | file | device | " + ("threads | " if threads else "")
                  + "p50 ms | p99 ms | accuracy % |", "|---:|---|---|---|---|---|" + ("---:|" if threads else "") + "---:|---:|---:|"]
        fans = _fans(data.points)  # a Jetson's fan mode: beside its device, or on each row where its records differ
        for p in sorted((p for p in data.points if p.pareto), key=lambda p: (p.batch, p.device, p.latency["p50"])):
            lines.append(f"| {p.batch} | {p.student} | {p.precision} | {_runtime(p, fans)} | {file_cell(p.file, p.note)} | "
                         f"{_device(p.device, fans)} | " + (f"{_threads(p)} | " if threads else "")
                         + f"{p.latency['p50']:.3g} | {p.latency['p99']:.3g} | {_pct(p.score)}{_ci(p.score_se)} |")
        devices = sorted({p.device for p in data.points})  # several: a column (else named once, below the table)
        lines += ["", "## All measurements", ""]
        lines += ["| batch | student | precision | runtime | file | " + ("device | " if len(devices) > 1 else "")
                  + ("threads | " if threads else "") + "p50 ms | p90 ms | p99 ms | accuracy % |",
                  "|---:|---|---|---|---|" + ("---|" if len(devices) > 1 else "") + ("---:|" if threads else "")
                  + "---:|---:|---:|---:|"]
        for p in sorted(data.points, key=lambda p: (p.batch, p.device, p.latency["p50"])):
            lines.append(f"| {p.batch} | {p.student} | {p.precision} | {_runtime(p, fans)} | {file_cell(p.file, p.note)} | "
                         + (f"{_device(p.device, fans)} | " if len(devices) > 1 else "") + (f"{_threads(p)} | " if threads else "")
                         + f"{p.latency['p50']:.3g} | {p.latency['p90']:.3g} | {p.latency['p99']:.3g} | "
                         f"{_pct(p.score)}{_ci(p.score_se)} |")
        lines += [""] + ([] if threads else [f"Threads: {_threads(data.points[0], True)}.", ""])
        lines += [f"Measured on {_device(devices[0], fans)}.", ""] if len(devices) == 1 else []
        timed_again = bench_repeat_notes(data.points)  # a file benched again: one point, its repeats said
        if timed_again:
            lines += ["Benched more than once (each point is the newest record):", ""] + [f"- {n}" for n in timed_again] + [""]
    if data.groups or data.teachers:
        doms = data.domains
        lines += ["## Per-run accuracy (%)", "", "Top-1 on each domain's test split; *: a source (training) domain "
                  "of that row; target mean: mean over the row's target domains. Runs that differ only in their seed "
                  "are one row: mean ± standard deviation (n distinct seeds; a repeat of a seed counts once) "
                  "[lowest–highest seed]. Below a table, its best row of several seeds against each other such row "
                  "(target mean; Welch's t-test over the seeds, real only at p < 0.05).", ""]
        for t, zs in data.teachers.items():
            lines.append(f"Teacher {t} (zero-shot): " + ", ".join(f"{d} {pct(v)}" for d, v in zs.items()))
            lines.append("")
        trained = [g for g in data.groups if not g.adapted]
        adapted = [g for g in data.groups if g.adapted]
        if trained:
            lines += ["### Trained on the source domains", ""] + _run_table(trained, doms)
        if adapted:
            lines += ["### Adapted to the target domains without source data (source-free)", ""] + _run_table(adapted, doms)
    if data.exports:
        doms = data.domains
        lines += ["## Per-domain accuracy of exported models (%)", "",
                  "| student | model | " + " | ".join(doms) + " |", "|---|---|" + "---:|" * len(doms)]
        for ex in data.exports:
            e = ex.report
            for m in e.models:
                acc = m.accuracy or {}
                flavour = m.int8_flavour
                prec = m.precision + (f"/{flavour}" if flavour else "")
                lines.append(f"| {data.export_label(e)} | {prec} | " + " | ".join(
                    pct(acc[d]) if d in acc else "–" for d in doms) + " |")
            rule = int8_file_of(data, ex)  # the int8 file the no-harm rule picked, beside the export's own
            if rule is not None:
                lines.append(f"| {data.export_label(e)} | {rule.file.label} | " + " | ".join(
                    pct(rule.accuracy[d]) if d in rule.accuracy else "–" for d in doms) + " |")
        lines.append("")
        int8 = [(ex.report, m) for ex in data.exports for m in ex.report.models if m.precision == "int8"]
        if int8:
            lines += ["## INT8 decisions", "", "| student | flavour | worst drop before | after | layers kept in float | "
                      "int8/fp32 latency (export CPU) | test images near a tie |", "|---|---|---:|---:|---|---|---:|"]
            for e, m in int8:
                fb, lc = extra(m, "fallback") or {}, extra(m, "latency_check") or {}
                before = (fb.get("before") or {}).get("worst_drop_pts")
                after = max((extra(m, "drops_pts") or {}).values(), default=None)
                ratio = lc.get("ratio_vs_fp32")
                note = "" if lc.get("representative", True) else " (not the target runtime)"
                if lc.get("slower_than_fp32") and lc.get("representative", True):
                    note = " **slower than fp32**"
                kinds = f" ({kind})" if (kind := cpu_kinds_note(m)) else ""
                lines.append(f"| {data.export_label(e)} | {m.int8_flavour}{kinds} | {'–' if before is None else f'{before:.2f}'} | "
                             f"{'–' if after is None else f'{after:.2f}'} | {', '.join(kept_labels(fb)) or 'none'} | "
                             f"{'–' if ratio is None else f'{ratio:.2f}x, {latency_threads(lc)}'}{note} | {near_tie_cell(m)} |")
            lines += ["", NEAR_TIE_NOTE, "", ORT_FLOAT_NOTE, ""]
        decisions = [(ex.report, d) for ex in data.exports if (d := decision_for(data, ex)) is not None]
        if decisions:
            lines += ["## Recommended to ship", ""]
            lines += [f"- {data.export_label(e)}: {d.text()}" for e, d in decisions]
            lines.append("")
    lines += qad_markdown(data)
    prof = [(r, ops) for r in data.records if (ops := r.top_ops)]
    if prof:
        lines += ["## Top operators", ""]
        for r, ops in prof:
            top = ", ".join(f"{o['op']} {o.get('pct', 0):.0f}%" for o in ops[:5])
            lines.append(f"- {r.label or r.record.model_name} ({r.record.runtime}, batch {r.record.batch}): {top}")
        lines.append("")
    return "\n".join(lines) + "\n"
