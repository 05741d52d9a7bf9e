"""The export's ort-cpu float fallback, float vs per-tensor: re-export trained students both ways, side by side.

    PYTHONPATH=. .venv/bin/python benchmarks/float_fallback.py EDGE_OUT [EDGE_OUT ...] --out /tmp/float_fallback

EDGE_OUT: a ``benchmarks/edge_students.py --out`` folder (``runs/TAG``, ``export/TAG``, ``records/TAG.json``). Each run
whose export kept layers in float is exported again with that export's settings (export.json ``config``), twice:

- ``float``: this code. A kept layer that reads int8 gets its own per-axis DequantizeLinear, so onnxruntime runs it
  in float (:mod:`distill.export.float_layers`); the greedy fallback measures and picks layers that way.
- ``per-tensor``: the rewrite switched off, as exports were before it: onnxruntime's ``WeightBiasQuantization``
  quantizes such a layer's float weight per tensor when it loads the file, and the fallback picks layers that way.
- ``all-int8``: no fallback (``max_fallback_layers=0``): every layer per-channel int8, what the fallback starts from.

Runs whose export kept no layer are skipped (the fallback did not run, so both arms are the same file). Each int8
file is scored on the whole test split of every domain against the fp32 ONNX: top-1 disagreement (points, mean over
domains and worst domain) and test accuracy drop (worst domain), with the export's own int8/fp32 latency ratio
(export.json; measured interleaved within each export, so a ratio, not a time). Per run McNemar's exact test on the
images exactly one file flips; over runs a paired t-test of the mean disagreement. Prints Markdown for
benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from int8_students import cpu_flags  # noqa: E402
from qad_arms import fmt, log, runs_of, score  # noqa: E402

import distill.export.quantize as quantize_module  # noqa: E402
from distill import api  # noqa: E402
from distill.export.config import ExportConfig  # noqa: E402
from distill.export.data import load_export_data  # noqa: E402
from distill.export.images import ImageSet  # noqa: E402
from distill.export.log import ExportLog  # noqa: E402
from distill.records import ExportReport  # noqa: E402
from distill.report.stats import mcnemar, paired  # noqa: E402
from distill.student.model import load_student  # noqa: E402

ARMS = ("float", "per-tensor", "all-int8")


def int8_model(rep: ExportReport):
    return next(m for m in rep.models if m.precision == "int8")


def export_arm(ckpt: Path, cfg: ExportConfig, arm: str, out: Path) -> ExportReport:
    """``distill export`` of ``ckpt`` with ``cfg`` into ``out`` (reused when finished), the rewrite on or off."""
    if ExportReport.exists_in(out) and ExportReport.read(out).status == "ok":
        return ExportReport.read(out)
    log(f"export ({arm}) {ckpt} -> {out}")
    real = quantize_module.float_inputs_per_axis
    if arm == "per-tensor":
        quantize_module.float_inputs_per_axis = lambda model: []  # type: ignore[assignment]
    try:
        return api.export(ckpt, out, cfg.model_copy(update={"max_fallback_layers": 0}) if arm == "all-int8" else cfg)
    finally:
        quantize_module.float_inputs_per_axis = real


def test_split(cfg: ExportConfig, ckpt: Path) -> ImageSet:
    """Every test image of every domain under the export's data root (labelled)."""
    tcfg = cfg.model_copy(update={"eval_count": None, "eval_domains": None, "calib_domains": None})
    return load_export_data(tcfg, load_student(ckpt).spec, [], ExportLog(lambda m: None)).eval_images


def kept(rep: ExportReport) -> list[str]:
    return list(((int8_model(rep).model_extra or {}).get("fallback") or {}).get("kept_float") or [])


def latency_ratio(rep: ExportReport) -> float | None:
    """int8 / fp32 p50 latency as the export measured it (interleaved, batch 1, on this CPU)."""
    return ((int8_model(rep).model_extra or {}).get("latency_check") or {}).get("ratio_vs_fp32")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("edge_outs", nargs="+", type=Path, help="benchmarks/edge_students.py --out folders")
    ap.add_argument("--out", type=Path, required=True, help="exports go to OUT/ARM/TAG")
    args = ap.parse_args()
    rows = []
    for edge_out in args.edge_outs:
        for tag, ckpt, exp, _ in runs_of(edge_out):
            original = ExportReport.read(exp)
            if not kept(original):
                log(f"{tag}: its export kept no layer in float (skipped)")
                continue
            cfg = ExportConfig.model_validate(original.config)
            reps = {arm: export_arm(ckpt, cfg, arm, args.out / arm / tag) for arm in ARMS}
            files = {arm: args.out / arm / tag / int8_model(r).file for arm, r in reps.items()}
            scored = score(files, ckpt, test_split(cfg, ckpt))
            rows.append({"tag": tag, "reps": reps, "scored": scored, "images": len(scored["float"].flips)})
            log(f"{tag}: " + ", ".join(f"{a} {s.disagree_mean:.2f}" for a, s in scored.items()))
    if not rows:
        raise SystemExit("no run whose export kept a layer in float")
    model, flags = cpu_flags()
    print(f"{model}; SIMD flags: {' '.join(flags)}\n")
    print("| run | test images | " + " | ".join(
        f"{a}: kept layers, test disagreement mean / worst (pts), acc drop worst (pts), int8/fp32 latency"
        for a in ARMS) + " | McNemar: only float flips / only per-tensor flips, p |")
    print("|---|---:|" + "---|" * (len(ARMS) + 1))
    for r in rows:
        cells = []
        for a in ARMS:
            s, ratio = r["scored"][a], latency_ratio(r["reps"][a])
            cells.append(f"{len(kept(r['reps'][a]))}, {s.disagree_mean:.2f} / {s.disagree_worst:.2f}, "
                         f"{s.acc_drop_worst:+.2f}, " + (f"{ratio:.2f}x" if ratio else "–"))
        x, y = r["scored"]["float"].flips, r["scored"]["per-tensor"].flips
        p = mcnemar((~x).tolist(), (~y).tolist()).p
        print(f"| {r['tag']} | {r['images']} | " + " | ".join(cells)
              + f" | {int((x & ~y).sum())} / {int((y & ~x).sum())}, p = {p:.3g} |")
    means = {a: [r["scored"][a].disagree_mean for r in rows] for a in ARMS}
    print(f"\nOver {len(rows)} runs, test disagreement mean: "
          + ", ".join(f"{a} {fmt(means[a])}" for a in ARMS) + " pts")
    for a, b in (("float", "per-tensor"), ("float", "all-int8"), ("per-tensor", "all-int8")):
        t = paired(means[a], means[b])
        lower = sum(x < y for x, y in zip(means[a], means[b]))
        beyond = [r["tag"] for r in rows if mcnemar((~r["scored"][a].flips).tolist(),
                                                    (~r["scored"][b].flips).tolist()).p < 0.05]
        print(f"- {a} minus {b}: {t.diff:+.2f} pts (paired t-test p = {t.p:.3g}); {a} lower on {lower} of "
              f"{len(rows)} runs; McNemar p < 0.05 on {len(beyond)} ({', '.join(beyond) or 'none'})")
    ratios = {a: [latency_ratio(r["reps"][a]) for r in rows] for a in ARMS}
    if all(v is not None for vs in ratios.values() for v in vs):
        slower = sum(f > p for f, p in zip(ratios["float"], ratios["per-tensor"]))
        print("- int8/fp32 latency (each export's own interleaved measurement): "
              + ", ".join(f"{a} {fmt(ratios[a])}x" for a in ARMS)
              + f"; float above per-tensor on {slower} of {len(rows)} runs")
    print(json.dumps({r["tag"]: {a: r["scored"][a].disagree_mean for a in ARMS} for r in rows}))


if __name__ == "__main__":
    main()
