"""The demo's last stage, ship: export, QAD and its no-harm rule, the one decision of what ships, latency, report.

Exports ``fm_unlabeled`` (:data:`SHIP`) to ONNX fp32 + int8 (calibrated on its source and target domains) and
the open-vocabulary student re-targeted to every class name at fp32; runs ``distill qad`` on :data:`SHIP` against
its export's int8 file (docs/qad.md); prints the one decision of what ships (:mod:`distill.report.decision`, in the
report's words); benchmarks the fp32 files and the rule's int8 file on ONNX Runtime CPU and writes the HTML report
and its Markdown summary.
:func:`distill.demo.run_demo` calls :func:`ship_stage` once the students are trained.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from distill.bench.edge_runner import bench_files, write_jsonl
from distill.errors import DistillError
from distill.export import ExportConfig, export_checkpoint
from distill.records import (
    BENCH_RECORDS,
    CHECKPOINTS_DIR,
    EXPORT_REPORT,
    REPORT_HTML,
    BenchRecord,
    ExportReport,
    QADRecord,
    RunSummary,
    pct,
)
from distill.report import write_report
from distill.report.decision import ShipDecision, decide

SHIP = "fm_unlabeled"  # exported fp32 + int8; the open-vocabulary student is exported re-targeted, fp32
OPENVOCAB = "openvocab"
RETARGETED = "retargeted"  # RUN/checkpoints/retargeted: the open-vocab student named for every class


@dataclass(frozen=True)
class BenchSettings:
    """How the demo times every exported file on ONNX Runtime CPU (``distill bench``'s options)."""

    batches: tuple[int, ...]
    warmup: int
    iters: int
    threads: int


@dataclass(frozen=True)
class QADSizes:
    """The demo's ``distill qad`` sizes (:class:`~distill.export.qad_config.QADConfig`'s fields of these names)."""

    epochs: int
    calib_count: int
    holdout_count: int


BENCH = BenchSettings(batches=(1,), warmup=10, iters=50, threads=1)  # ORT-CPU latency of every exported file
BENCH_QUICK = BenchSettings(batches=(1,), warmup=3, iters=20, threads=1)
# QAD of the shipped student (distill qad, ort-cpu, fp32 student as its teacher), on calibration images of every
# domain it trained on (the source's and the unlabeled targets'), then the no-harm rule picks its int8 file.
# Sized to <= 20 % of the student's own training: 9-10 s on 2 cores (load ~3) against fm_unlabeled's 95 s.
QAD_SETTINGS = QADSizes(epochs=3, calib_count=256, holdout_count=256)
QAD_QUICK = QADSizes(epochs=1, calib_count=64, holdout_count=64)
QAD_DIR = "qad"  # OUT/export/<SHIP>/qad: the QAD file, PTQ's when the rule picks it, qad.json


def export_settings(quick: bool, targets: Sequence[str] = ()) -> ExportConfig:
    """The demo's export. ``targets``: the domains the student is meant for; their unlabeled train images join
    the int8 calibration (and the float fallback's checks), as in :func:`qad_stage`: fm_unlabeled trained on them,
    and ranges from the source domain alone cost a mobilenetv3_large_100 run 4.4 points of accuracy on a domain
    (benchmarks/RESULTS.md, "Calibrating on the target domains too")."""
    return ExportConfig(precisions=("fp32", "int8"), int8_flavour="ort-cpu", exporter="torchscript",
                        calib_count=64 if quick else 256, eval_count=50 if quick else 300,
                        latency_iters=5 if quick else 20, threads=1, build_engines=False, target_domains=tuple(targets))


def qad_stage(out: Path, run: RunSummary, targets: list[str], quick: bool) -> QADRecord:
    """``distill qad`` of :data:`SHIP` into OUT/export/SHIP/qad (skipped when a record with a decision is there)."""
    from distill.export.qad import qad  # lazy: torch.ao.quantization
    from distill.export.qad_config import QADConfig

    qad_dir = out / "export" / SHIP / QAD_DIR
    if QADRecord.exists_in(qad_dir) and QADRecord.read(qad_dir).ship is not None:
        print(f"  {qad_dir}: already distilled (QAD)")
        return QADRecord.read(qad_dir)
    export, sizes = export_settings(quick), QAD_QUICK if quick else QAD_SETTINGS
    print(f"  -- qad {run.checkpoint}")
    t0 = time.time()
    # target domains: the unlabeled train images fm_unlabeled trained on join the calibration (and the hold-out)
    # the PTQ arm is the int8 file the export just wrote (its calibration and float fallback): the rule ships the
    # better of the two files the demo has, and no second PTQ is made
    record = qad(QADConfig(checkpoint=run.checkpoint, out_dir=str(qad_dir), flavour="ort-cpu",
                           export_dir=str(out / "export" / SHIP),
                           target_domains=tuple(targets), eval_count=export.eval_count, epochs=sizes.epochs,
                           calib_count=sizes.calib_count, holdout_count=sizes.holdout_count),
                 log=lambda m: print(f"  {m}"))
    took, trained = time.time() - t0, run.train_seconds_this_session
    print(f"  QAD took {took:.0f}s" + (f" ({100 * took / trained:.0f} % of {SHIP}'s {trained:.0f}s of training)"
                                       if trained > 0 else ""))
    return record


def ship_decision(out: Path, export: ExportReport, qad: QADRecord) -> ShipDecision:
    """What ships of :data:`SHIP`: the precision its export recommends, the int8 file QAD's no-harm rule picked
    (the report's "Recommended to ship" item, in the same words)."""
    export_dir = out / "export" / SHIP
    if export.recommendation is None:
        raise DistillError(f"{export_dir / EXPORT_REPORT}: no recommendation (an export from before it); delete "
                           f"{export_dir} and rerun the demo")
    return decide(export.recommendation, qad, export_dir / QAD_DIR, export_dir)


def ship_stage(out: Path, runs: dict[str, RunSummary], targets: list[str], quick: bool) -> dict[str, str]:
    """Export (fm_unlabeled fp32 + int8; openvocab re-targeted, fp32), QAD + the no-harm rule (fm_unlabeled's int8
    file), the one decision of what ships, benchmark the fp32 files and the rule's int8 file (ORT-CPU), report."""
    cfg = export_settings(quick)
    checkpoints = {SHIP: (Path(runs[SHIP].checkpoint), export_settings(quick, targets)),
                   OPENVOCAB: (out / "runs" / OPENVOCAB / CHECKPOINTS_DIR / RETARGETED, cfg.with_updates(precisions=("fp32",)))}
    bench = BENCH_QUICK if quick else BENCH
    bench_file = out / BENCH_RECORDS
    # records name their file absolute (older ones as typed here): compared as absolute paths
    done = {(os.path.abspath(r.model), r.batch) for r in BenchRecord.read_lines(bench_file)} if bench_file.is_file() \
        else set()
    exported: dict[str, ExportReport] = {}
    for name in (SHIP, OPENVOCAB):
        export_dir = out / "export" / name
        if ExportReport.exists_in(export_dir) and ExportReport.read(export_dir).status == "ok":
            print(f"  {export_dir}: already exported")
        else:
            checkpoint, settings = checkpoints[name]
            print(f"  -- export {checkpoint} ({', '.join(settings.precisions)})")
            export_checkpoint(checkpoint, export_dir, settings, log=lambda m: print(f"  {m}"))
        exported[name] = ExportReport.read(export_dir)
    qad = qad_stage(out, runs[SHIP], targets, quick)
    int8_file = out / "export" / SHIP / QAD_DIR / qad.ship_file
    decision = ship_decision(out, exported[SHIP], qad)
    shipped = decision.shipped_file(exported[SHIP])
    print(f"  {SHIP}: {decision.text()}")
    acc = qad.ship_accuracy
    # what is benchmarked and printed: every fp32 file, and the int8 file the rule picked (the int8 candidate; not
    # the export's own int8)
    rows = [(name, m.precision, out / "export" / name / m.file, m.mean_accuracy)
            for name, report in exported.items() for m in report.models if m.precision == "fp32"]
    rows.append((SHIP, f"int8 {qad.ship_arm}", int8_file, sum(acc.values()) / len(acc) if acc else None))
    # timed round-robin, so that the report's latency ratios are fair on a shared machine (one file timed after
    # another could come out faster by chance: int8 0.89x fp32 in one demo, 1.17x in the export's interleaved check)
    todo = [path for _, _, path, _ in rows if any((os.path.abspath(path), b) not in done for b in bench.batches)]
    if todo:
        write_jsonl(bench_files(todo, "ort-cpu", bench.batches, bench.threads, bench.warmup, bench.iters,
                                profile=True, topk=8), bench_file)  # + ONNX Runtime's top ops (a separate pass)
    records = list(BenchRecord.read_lines(bench_file))
    print(f"\nONNX Runtime CPU, {bench.threads} thread(s): latency p50 in ms and mean test accuracy over every domain")
    print(f"  {'model':>12s} {'precision':>9s} {'batch':>5s} {'p50 ms':>8s} {'img/s':>8s} {'accuracy':>8s}")
    for name, precision, path, a in rows:
        for r in (r for r in records if os.path.abspath(r.model) == os.path.abspath(path)):
            print(f"  {name:>12s} {precision:>9s} {r.batch:5d} {r.latency_ms.p50:8.3f} "
                  f"{r.throughput_ips:8.0f} {'-' if a is None else f'{pct(a):>7s}%':>8s}")
    res = write_report([out / "runs", out / "export", bench_file], out / REPORT_HTML, "distill demo")
    print(f"\nreport: {res.html}  (summary: {res.markdown})")
    return {"exports": str(out / "export"), "shipped": str(out / "export" / SHIP / shipped) if shipped else "-",
            "int8": str(int8_file), "bench": str(bench_file), "report": str(res.html)}
