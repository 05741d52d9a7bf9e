"""Trained edge students: fp32 / PTQ / QAD accuracy per domain and int8/fp32 latency (issue 21, item 3).

    make demo                                                   # once: data, teacher, cache (demo_out/)
    PYTHONPATH=. .venv/bin/python benchmarks/edge_students.py --demo-out demo_out --out /tmp/edge
    PYTHONPATH=. .venv/bin/python benchmarks/edge_students.py --demo-out demo_out --out /tmp/edge \\
        --students mobilenetv4_conv_small,efficientnet_lite0 --seeds 0,1,2 --epochs 30

Per student and seed, everything goes through distill's own entry points, pointed at a finished
``make demo`` output (read only; every file goes under ``--out``):

1. train: the demo's shipped recipe, ``fm_unlabeled`` (configs/fm_unlabeled.yaml) as
   ``distill.demo.demo_recipe`` points it at the demo's data and cache (``optim.epochs`` = ``--epochs``,
   30 by default: RESULTS' runs), with ``student.arch`` and ``run.seed`` set;
2. ``distill export`` with the demo's settings (``distill.demo_ship.export_settings``: fp32 + int8 ort-cpu,
   MinMax on 256 calibration images of the source and target domains, float fallback, latency check, 300 test
   images per domain; ``--plain``: source domains only, as before session 18);
3. ``distill qad`` as the demo runs it (``distill.demo_ship.qad_stage``: ``--export`` the export above, so its int8
   file is the PTQ arm and QAD keeps its float layers; the run's target domains join the calibration images;
   300 test images per domain); ``--plain``: ``distill qad``'s defaults before session 18 instead (its own PTQ,
   every layer int8, source-domain calibration, observed ranges, 200 test images per domain: how the tables before
   session 18 were made); ``--qad-cache``: the demo's cache joins the teacher;
4. scoring: the export's fp32 and int8 files and the QAD file on qad.json's held-out test images, for McNemar's
   exact test per domain;
5. latency: fp32, the export's int8 (PTQ) and the QAD int8 file interleaved in one process
   (``int8_students.interleaved_ratios``), at each ``--batches``, ``--repeats`` times.

A run's figures go to ``OUT/records/STUDENT-eEPOCHS-sSEED.json``; a rerun skips finished steps
(training resumes, a finished export / QAD / record is reused). Prints Markdown tables (paste them into
benchmarks/RESULTS.md with the command and the CPU flags).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from distill.records import pct  # noqa: E402
from distill.report.stats import mean_std, paired  # noqa: E402

DATA = "data/digits-full-seed0"  # what `make demo` writes under its output folder
PIXEL_STORE = "pixels-32x32-bicubic"
RECIPE = "fm_unlabeled"  # the demo's shipped student
EPOCHS = 30  # the demo's epochs when RESULTS' "Trained edge students" ran (then at batch 64; the demo: 20 at 16 now)
TARGET_RATIO, TARGET_PTS = 0.6, 0.5  # issue 21's edge target: int8 <= 0.6x fp32 latency, QAD within 0.5 pts
MODELS = ("fp32", "ptq", "qad", "export_int8")  # accuracy rows: qad.json's three + the export's shipped int8


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class RunResult:
    """One student x seed: fractions per domain (on qad.json's test images unless named otherwise)."""

    student: str
    seed: int
    epochs: int
    source: list[str]
    targets: list[str]
    acc: dict[str, dict[str, float]]  # MODELS -> domain -> fraction (same images: qad.json's test images)
    test_count: dict[str, int]
    export_acc: dict[str, dict[str, float]]  # export.json's own: fp32, int8 (its 300 test images per domain)
    disagreement: dict[str, dict[str, float]]  # pts: export int8 (calib, after fallback), ptq/qad test + calib
    kept_float: int  # layers the export's fallback kept in float
    recommendation: str  # export.json's precision (+ flavour)
    recommendation_reason: str
    export_ratio: float | None  # export's own int8/fp32 latency check (batch 1, one comparison)
    latency: dict[str, dict[str, list[float]]]  # str(batch) -> ptq|qad -> [median, fp32 ms, int8 ms, min, max]
    mcnemar: dict[str, dict[str, float]]  # "qad_vs_fp32" | "qad_vs_export_int8" -> domain -> p
    torch_vs_onnx: float | None = None  # qad.json: fake-quant torch vs its ONNX file, top-1 agreement
    qad: str = "plain"  # "demo": distill qad as the demo runs it; "plain": its defaults (every record before session 18)
    seconds: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------ pure parts (tested)
def target_mean(acc: dict[str, float], targets: list[str]) -> float:
    vals = [acc[d] for d in targets if d in acc]
    return sum(vals) / len(vals) if vals else math.nan


def _pm(xs: list[float], digits: int = 1) -> str:
    """Fractions as ``62.0 ± 2.0`` in percent (just the mean with one value)."""
    m, s = mean_std(xs)
    return pct(m, digits) if len(xs) < 2 else f"{pct(m, digits)} ± {pct(s, digits)}"


def _pts(xs: list[float], digits: int = 2) -> str:
    m, s = mean_std(xs)
    return f"{m:.{digits}f}" if len(xs) < 2 else f"{m:.{digits}f} ± {s:.{digits}f}"


def summarize(rows: list[RunResult]) -> dict[str, dict[str, Any]]:
    """Per student (in first-seen order): seeds, the per-domain QAD - fp32 gaps, paired tests, latency, target."""
    out: dict[str, dict[str, Any]] = {}
    for student in dict.fromkeys(r.student for r in rows):
        rs = sorted((r for r in rows if r.student == student), key=lambda r: r.seed)
        domains = [*rs[0].source, *rs[0].targets]
        tm = {m: [target_mean(r.acc[m], r.targets) for r in rs] for m in MODELS if all(m in r.acc for r in rs)}
        # QAD - fp32 in points per domain and seed (same images within a seed)
        # (rounded: accuracies are k/n, so 0.705 - 0.70 must count as the 0.5 points it is, not 0.5000000000000004)
        gap = {d: [round(100.0 * (r.acc["qad"][d] - r.acc["fp32"][d]), 6) for r in rs] for d in domains}
        mean_gap = {d: mean_std(v)[0] for d, v in gap.items()}
        worst_dom = max(domains, key=lambda d: abs(mean_gap[d]))
        worst_any = max(abs(x) for v in gap.values() for x in v)
        lat = {}
        for b in rs[0].latency:
            lat[b] = {k: sorted(r.latency[b][k][0] for r in rs) for k in rs[0].latency[b]}
        recs: dict[str, int] = {}
        for r in rs:
            recs[r.recommendation] = recs.get(r.recommendation, 0) + 1
        qad_ratio_max = max((max(v["qad"]) for v in lat.values() if "qad" in v), default=math.nan)
        out[student] = {
            "seeds": [r.seed for r in rs], "epochs": sorted({r.epochs for r in rs}), "domains": domains,
            "source": rs[0].source, "target_mean": tm, "gap": gap, "mean_gap": mean_gap,
            "worst_domain": worst_dom, "worst_mean_gap": abs(mean_gap[worst_dom]), "worst_any_gap": worst_any,
            "qad_vs_fp32": paired(tm["qad"], tm["fp32"]), "qad_vs_ptq": paired(tm["qad"], tm["ptq"]),
            "latency": lat, "recommendations": recs,
            "accuracy_met": worst_any <= TARGET_PTS, "latency_met": qad_ratio_max <= TARGET_RATIO,
        }
    return out


def render(rows: list[RunResult]) -> str:
    """The Markdown tables: summary per student, accuracy per domain, QAD - fp32 gaps and McNemar p per seed."""
    summ = summarize(rows)
    lines = ["| student | seeds | fp32 target mean % | PTQ (qad.json) | QAD | export int8 (PTQ + fallback) "
             "| worst domain QAD − fp32, pts (mean ± std) | largest abs(QAD − fp32) over domains and seeds, pts "
             "| QAD int8/fp32 latency b" + ", b".join(next(iter(summ.values()))["latency"]) + " (median of seeds "
             "[range]) | PTQ int8/fp32 latency | export recommends |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for student, s in summ.items():
        tm, lat = s["target_mean"], s["latency"]
        g = s["gap"][s["worst_domain"]]

        def ratios(kind: str) -> str:
            return ", ".join(f"{v[kind][len(v[kind]) // 2]:.2f} [{v[kind][0]:.2f}–{v[kind][-1]:.2f}]"
                             for v in lat.values())
        lines.append(
            f"| {student} | {len(s['seeds'])} | {_pm(tm['fp32'])} | {_pm(tm['ptq'])} | {_pm(tm['qad'])} "
            f"| {_pm(tm['export_int8']) if 'export_int8' in tm else '–'} | {s['worst_domain']} {_pts(g)} "
            f"| {s['worst_any_gap']:.2f} | {ratios('qad')} | {ratios('ptq')} "
            f"| {', '.join(f'{k} ×{v}' for k, v in s['recommendations'].items())} |")
    out = ["\n".join(lines), ""]
    for student, s in summ.items():
        doms = s["domains"]
        head = "| " + student + " | " + " | ".join(f"{d}{'*' if d in s['source'] else ''}" for d in doms) \
            + " | target mean |"
        tl = [head, "|---|" + "---:|" * (len(doms) + 1)]
        rs = sorted((r for r in rows if r.student == student), key=lambda r: r.seed)
        names = {"fp32": "fp32", "ptq": "PTQ (qad.json)", "qad": "QAD", "export_int8": "export int8"}
        for m in MODELS:
            if not all(m in r.acc for r in rs):
                continue
            cells = [_pm([r.acc[m][d] for r in rs]) for d in doms]
            tl.append(f"| {names[m]} | " + " | ".join(cells) + f" | {_pm(s['target_mean'][m])} |")
        dis = {"ptq_test": "PTQ vs fp32 top-1 disagreement, test, pts", "qad_test": "QAD vs fp32 disagreement, test",
               "ptq_calib": "PTQ vs fp32 disagreement, calibration", "qad_calib": "QAD vs fp32, calibration",
               "export_int8_calib": "export int8 vs fp32, calibration"}
        for key, name in dis.items():
            if all(key in r.disagreement for r in rs):
                tl.append(f"| {name} | " + " | ".join(
                    _pts([r.disagreement[key][d] for r in rs]) if all(d in r.disagreement[key] for r in rs) else "–"
                    for d in doms) + " | |")
        tl.append("| QAD − fp32, pts | " + " | ".join(_pts(s["gap"][d]) for d in doms) + " | "
                  + _pts([100 * (q - f) for q, f in zip(s["target_mean"]["qad"], s["target_mean"]["fp32"])]) + " |")
        for test, vs, paired_key in (("qad_vs_fp32", "fp32", "qad_vs_fp32"),
                                     ("qad_vs_export_int8", "export int8", "qad_vs_ptq")):
            t = s[paired_key]
            tl.append(f"| McNemar p, QAD vs {vs}, per seed | "
                      + " | ".join(" / ".join(f"{r.mcnemar[test][d]:.2f}" for r in rs) for d in doms)
                      + f" | paired t over seeds, QAD vs {'fp32' if paired_key == 'qad_vs_fp32' else 'PTQ'}: "
                      f"Δ {100 * t.diff:+.2f} pts, p = {t.p:.2f} |")
        out += [f"{student}: test accuracy in % (mean ± std over seeds {s['seeds']}; * = source domain; "
                f"{rs[0].test_count[doms[0]]} test images per domain)", "\n".join(tl), ""]
    return "\n".join(out).rstrip() + "\n"


def verdict(rows: list[RunResult]) -> list[str]:
    """One line per student: the issue's edge target, met or by how much not."""
    lines = []
    for student, s in summarize(rows).items():
        lat = {b: v["qad"][len(v["qad"]) // 2] for b, v in s["latency"].items()}
        worst_b = max(s["latency"], key=lambda b: max(s["latency"][b]["qad"]))
        worst_lat = max(s["latency"][worst_b]["qad"])
        acc = ("met" if s["accuracy_met"] else
               f"NOT met: worst |QAD − fp32| {s['worst_any_gap']:.2f} pts (> {TARGET_PTS}; worst domain by mean "
               f"{s['worst_domain']} {s['worst_mean_gap']:.2f})")
        speed = ("met (every seed's median, every batch)" if s["latency_met"] else
                 f"NOT met: a seed's median {worst_lat:.2f}x at batch {worst_b} (> {TARGET_RATIO}x)")
        lines.append(f"{student} ({len(s['seeds'])} seeds): QAD int8/fp32 latency "
                     + ", ".join(f"batch {b} {v:.2f}x" for b, v in lat.items())
                     + f" -> latency target {speed}; QAD within {TARGET_PTS} pts of fp32 on every domain and "
                     f"seed -> {acc}")
    return lines


# ------------------------------------------------------------------ the runs
def demo_inputs(demo_out: Path) -> tuple[Path, Path]:
    """(data root, cache) of a finished ``make demo``; one line when it is not there."""
    data, cache = demo_out / DATA, demo_out / "cache"
    missing = [p for p in (data, cache / "manifest.json", cache / PIXEL_STORE) if not p.exists()]
    if missing:
        raise SystemExit(f"--demo-out {demo_out}: no finished demo output ({missing[0]} missing): run `make demo` "
                         "first (or pass its output folder)")
    return data, cache


def score_on_qad_images(checkpoint: Path, files: dict[str, Path], seed: int,
                        eval_count: int | None = None) -> tuple[dict[str, Any], Any]:
    """Per-image correctness of each ONNX file on the test images ``distill qad`` (seed ``seed``, ``eval_count``
    per domain, default its default) held out, picked again the same way (the run's data, split and domains)."""
    from distill.export.config import ExportConfig
    from distill.export.data import load_export_data
    from distill.export.evaluate import predict_onnx
    from distill.export.log import ExportLog
    from distill.export.qad_config import QADConfig
    from distill.export.training_run import TrainingRun, provenance, with_run_defaults
    from distill.student.model import load_student

    say = ExportLog(lambda m: None)
    student = load_student(checkpoint)
    run = TrainingRun.of_checkpoint(checkpoint, say)
    defaults = QADConfig(checkpoint=str(checkpoint), out_dir=".")
    count = eval_count if eval_count is not None else defaults.eval_count
    ecfg = with_run_defaults(ExportConfig(precisions=("fp32",), eval_count=count, seed=seed), run, say)
    prov = provenance(checkpoint, student, run)
    images = load_export_data(ecfg, student.spec, list(prov.get("source_domains") or []), say).eval_images
    return {k: predict_onnx(p, images).argmax(1) == images.labels for k, p in files.items()}, images


def run_one(student: str, seed: int, args: argparse.Namespace, data: Path, cache: Path) -> RunResult:
    from int8_students import interleaved_ratios

    from distill import api
    from distill.demo import demo_recipe
    from distill.demo_ship import QAD_SETTINGS, export_settings
    from distill.recipes import train_or_resume
    from distill.records import ExportReport, QADRecord
    from distill.report.stats import mcnemar

    tag = f"{student}-e{args.epochs}-s{seed}"
    out = Path(args.out)
    rec_file = out / "records" / f"{tag}.json"
    mode = "plain" if args.plain else "demo"
    if rec_file.is_file() and not args.rescore:
        old = RunResult(**json.loads(rec_file.read_text()))
        if old.qad == mode:
            log(f"{tag}: record {rec_file} exists (reused)")
            return old
        log(f"{tag}: record {rec_file} is of {old.qad} QAD, this run wants {mode}: rescoring")
    # a rescore reuses the run, export and QAD: keep the seconds they took when they were made
    secs: dict[str, float] = json.loads(rec_file.read_text()).get("seconds", {}) if rec_file.is_file() else {}
    cfg = demo_recipe(RECIPE, data, cache, out / "runs" / tag, quick=False, progress=False,
                      overrides={"optim.epochs": args.epochs, "student.arch": student, "run.seed": seed})
    summary = train_or_resume(cfg)
    secs["train"] = summary.train_seconds_this_session  # the run's own clock (the run may predate this script)
    ckpt = Path(summary.checkpoint)
    log(f"{tag}: trained ({secs['train']:.0f} s), test accuracy "
        + ", ".join(f"{d} {pct(v)}" for d, v in summary.test_acc.items()))

    t = time.time()
    exp_dir = out / "export" / tag
    settings = export_settings(quick=False, targets=() if args.plain else summary.target_domains)
    if ExportReport.exists_in(exp_dir) and ExportReport.read(exp_dir).status == "ok":
        rep = ExportReport.read(exp_dir)
        had, want = list(rep.config.get("target_domains") or []), list(settings.target_domains or ())
        if had != want:
            raise SystemExit(f"{exp_dir}: exported with target domains {had}, this run wants "
                             f"{want} ({'--plain' if args.plain else 'the demo'}): move it "
                             "away, or pass another --out")
    else:
        rep = api.export(ckpt, exp_dir, settings)
    secs.setdefault("export", round(time.time() - t, 1))

    t = time.time()
    qad_dir = out / (("qad" if args.plain else "qad-demo") + ("-cache" if args.qad_cache else "")) / tag
    if QADRecord.exists_in(qad_dir):
        q = QADRecord.read(qad_dir)
    else:
        opt: dict[str, Any] = {"optimizer": args.qad_optimizer} if args.qad_optimizer else {}
        if args.plain:  # distill qad's defaults before session 18
            opt.update(ranges="observed")
        else:  # as distill.demo_ship.qad_stage runs it
            opt.update(export_dir=exp_dir, target_domains=tuple(summary.target_domains), flavour="ort-cpu",
                       eval_count=export_settings(quick=False).eval_count, **asdict(QAD_SETTINGS))
        q = api.qad(checkpoint=ckpt, out_dir=qad_dir, cache=cache if args.qad_cache else None, **opt)
    secs.setdefault("qad", round(time.time() - t, 1))
    if q.accuracy is None:
        raise SystemExit(f"{qad_dir}/qad.json has no accuracy block (an older distill qad): delete it and rerun")

    int8 = next(m for m in rep.models if m.precision == "int8")
    fp32 = next(m for m in rep.models if m.precision == "fp32")
    x = int8.model_extra or {}
    files = {"fp32": exp_dir / fp32.file, "ptq": exp_dir / int8.file, "qad": qad_dir / q.qad_file}
    t = time.time()
    ok, images = score_on_qad_images(ckpt, {"fp32": files["fp32"], "export_int8": files["ptq"],
                                            "qad": files["qad"]}, q.settings.seed, q.config.get("eval_count"))
    doms = list(images.domain_names)
    by = {k: {d: v[images.domains == d] for d in doms} for k, v in ok.items()}
    mine = {d: float(by["qad"][d].mean()) for d in doms}
    if any(abs(mine[d] - q.accuracy.qad[d]) > 1e-9 for d in doms):  # not the same images: say so, use qad.json's
        log(f"warning: {tag}: QAD accuracy rescored here {mine} != qad.json's {q.accuracy.qad}")
    # qad.json's plain PTQ file lives in its temp folder: the per-image test is against the export's int8 file
    mc = {"qad_vs_fp32": {d: mcnemar(by["qad"][d], by["fp32"][d]).p for d in doms},
          "qad_vs_export_int8": {d: mcnemar(by["qad"][d], by["export_int8"][d]).p for d in doms}}
    secs["score"] = round(time.time() - t, 1)

    t = time.time()
    lat: dict[str, dict[str, list[float]]] = {}
    for b in args.batches:
        r = interleaved_ratios(files, b, args.threads, args.iters, args.repeats)
        lat[str(b)] = {k: [round(x_, 4) for x_ in v] for k, v in r.items()}
    secs["latency"] = round(time.time() - t, 1)
    rec = q.accuracy
    fb = x.get("fallback") or {}
    result = RunResult(
        student=student, seed=seed, epochs=args.epochs, source=list(summary.source_domains),
        targets=list(summary.target_domains),
        acc={"fp32": dict(rec.fp32), "ptq": dict(rec.ptq), "qad": dict(rec.qad),
             "export_int8": {d: float(by["export_int8"][d].mean()) for d in doms}},
        test_count=dict(rec.count),
        export_acc={"fp32": dict(fp32.accuracy or {}), "int8": dict(int8.accuracy or {})},
        disagreement={"export_int8_calib": dict(x.get("disagreement_pts") or {}),
                      "export_int8_calib_before_fallback": dict((fb.get("before") or {}).get("disagreement_pts") or {}),
                      "ptq_calib": dict(q.ptq.calibration), "qad_calib": dict(q.qad.calibration),
                      "ptq_test": dict(q.ptq.test), "qad_test": dict(q.qad.test)},
        kept_float=len(fb.get("kept_float") or []),
        recommendation=(f"{rep.recommendation.precision}"
                        + (f" ({rep.recommendation.flavour})" if rep.recommendation.flavour else "")
                        if rep.recommendation else "–"),
        recommendation_reason=rep.recommendation.reason if rep.recommendation else "",
        export_ratio=(x.get("latency_check") or {}).get("ratio_vs_fp32"),
        latency=lat, mcnemar=mc, torch_vs_onnx=q.torch_vs_onnx.get("top1_agreement"), seconds=secs, qad=mode)
    rec_file.parent.mkdir(parents=True, exist_ok=True)
    rec_file.write_text(json.dumps(asdict(result), indent=1))
    log(f"{tag}: {secs}; target mean fp32 {pct(target_mean(result.acc['fp32'], result.targets))} "
        f"PTQ {pct(target_mean(result.acc['ptq'], result.targets))} "
        f"QAD {pct(target_mean(result.acc['qad'], result.targets))}; latency {lat}")
    return result


def cpu_flags() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    keep = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8")
    flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines() if ln.startswith("Flags:")), [])
    return " ".join(sorted(f for f in set(flags) if f in keep)) or "none of " + ", ".join(keep)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--demo-out", default="demo_out", help="a finished `make demo` output folder (read only)")
    p.add_argument("--out", default="edge_students_out", help="work folder: runs, exports, qad, records")
    p.add_argument("--students", default="mobilenetv4_conv_small", help="comma-separated timm names")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated run.seed values")
    p.add_argument("--epochs", type=int, default=None, help=f"optim.epochs (default {EPOCHS}: RESULTS' runs)")
    p.add_argument("--plain", action="store_true", help="export on the source domains and distill qad with its "
                   "defaults, not as the demo does (target domains, qad --export): how the tables before session 18 "
                   "were made")
    p.add_argument("--qad-cache", action="store_true", help="distill qad --cache DEMO_OUT/cache (default: no cache, "
                                                            "self-distillation from the fp32 student)")
    p.add_argument("--qad-optimizer", default=None, choices=["sgd", "adamw"],
                   help="distill qad --optimizer (default: distill qad's, sgd); compare two in two --out folders "
                        "that link the same runs/ and export/")
    p.add_argument("--batches", default="1,32", help="latency batch sizes")
    p.add_argument("--iters", type=int, default=20, help="interleaved timed runs at batch 1 (a third at larger)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved comparisons per batch size (median reported)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (the demo's: 1)")
    p.add_argument("--rescore", action="store_true", help="recompute the records (reuses trained runs, exports, QAD)")
    p.add_argument("--records-only", action="store_true", help="print the tables of the records in OUT/records")
    args = p.parse_args(argv)
    if args.epochs is None:
        args.epochs = EPOCHS
    args.batches = [int(b) for b in str(args.batches).split(",")]
    args.seeds = [int(s) for s in str(args.seeds).split(",")]
    args.students = [s for s in str(args.students).split(",") if s]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows: list[RunResult] = []
    if args.records_only:
        for f in sorted((Path(args.out) / "records").glob("*.json")):
            r = RunResult(**json.loads(f.read_text()))
            if r.student in args.students and r.seed in args.seeds and r.epochs == args.epochs:
                rows.append(r)
    else:
        data, cache = demo_inputs(Path(args.demo_out))
        for student in args.students:
            for seed in args.seeds:
                rows.append(run_one(student, seed, args, data, cache))
    if not rows:
        raise SystemExit(f"no records for {args.students} seeds {args.seeds} at {args.epochs} epochs in {args.out}")
    print(f"CPU flags: {cpu_flags()}; onnxruntime threads {args.threads}; {args.epochs} epochs; QAD "
          f"{'with the demo cache' if args.qad_cache else 'defaults, no cache'}, "
          f"optimizer {args.qad_optimizer or 'default (sgd)'}\n")
    print(render(rows))
    for line in verdict(rows):
        print("- " + line)
    for r in rows:
        print(f"- {r.student} seed {r.seed}: export recommends {r.recommendation} — {r.recommendation_reason}; "
              f"export int8 kept {r.kept_float} layer(s) float; seconds {r.seconds}")


if __name__ == "__main__":
    main()
