"""The export's ort-cpu float fallback: per-tensor int8 weights vs truly float vs none, side by side on trained students.

    PYTHONPATH=. .venv/bin/python benchmarks/float_fallback.py EDGE_OUT [EDGE_OUT ...] --out /tmp/float_fallback

EDGE_OUT: a ``benchmarks/edge_students.py --out`` folder (``runs/TAG``, ``export/TAG``, ``records/TAG.json``). Each run
whose export kept layers in float is exported again with that export's settings (export.json ``config``), three ways:

- ``per-tensor``: this code. A kept layer between int8 layers has the per-tensor int8 weights onnxruntime's
  ``WeightBiasQuantization`` would give it at load (:mod:`distill.export.ort_weights`, written into the file); the
  greedy fallback measures and picks layers that way.
- ``float``: such a layer reads its own per-axis copy of the DequantizeLinear before it instead (:func:`float_input`,
  here only), which the transformer leaves alone, so onnxruntime runs it in float; the fallback picks layers that way.
- ``all-int8``: no fallback (``max_fallback_layers=0``): every layer per-channel int8, what the fallback starts from.

Runs whose export kept no layer are skipped (the fallback did not run, so the arms are the same file). Each int8
file is scored on the whole test split of every domain against the fp32 ONNX: top-1 disagreement (points, mean over
domains and worst domain) and test accuracy drop (worst domain), with the export's own int8/fp32 latency ratio
(export.json; measured interleaved within each export, so a ratio, not a time). Per run McNemar's exact test on the
images exactly one file flips; over runs paired t-tests of the mean disagreement. Prints Markdown for
benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

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

ARMS = ("per-tensor", "float", "all-int8")


def float_input(model: onnx.ModelProto, reduce_range: bool = False) -> list[str]:
    """The ``float`` arm: each float-weight Conv/Gemm fed by a scalar-scale DequantizeLinear reads its own copy of it
    with the scale (and zero point) repeated per input channel (``axis=1``): the same values, but no longer a scalar,
    so onnxruntime's ``WeightBiasQuantization`` leaves the layer float (``reduce_range``: no weight grid to choose).
    Returns the layers changed."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    added = []
    for node in graph.node:
        weight = inits.get(node.input[1]) if node.op_type in ("Conv", "Gemm") and len(node.input) > 1 else None
        dq = producer.get(node.input[0]) if weight is not None else None
        if weight is None or weight.data_type != onnx.TensorProto.FLOAT or dq is None or \
                dq.op_type != "DequantizeLinear" or not all(n in inits for n in dq.input[1:] if n):
            continue
        scale = numpy_helper.to_array(inits[dq.input[1]])
        if scale.size != 1:
            continue
        w = numpy_helper.to_array(weight)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        channels = w.shape[1] * attrs.get("group", 1) if node.op_type == "Conv" else (
            w.shape[1] if attrs.get("transB", 0) else w.shape[0])
        base = node.name or node.output[0]
        qparams = [numpy_helper.from_array(np.full(channels, scale.item(), scale.dtype), f"{base}/float_input_scale")]
        if len(dq.input) > 2 and dq.input[2]:
            zero = numpy_helper.to_array(inits[dq.input[2]])
            qparams.append(numpy_helper.from_array(np.full(channels, zero.item(), zero.dtype), f"{base}/float_input_zp"))
        graph.initializer.extend(qparams)
        added.append((dq, helper.make_node("DequantizeLinear", [dq.input[0], *[t.name for t in qparams]],
                                           [f"{base}/float_input"], name=f"{base}/float_input_dq", axis=1)))
        node.input[0] = f"{base}/float_input"
    for dq, copy in added:
        graph.node.insert(list(graph.node).index(dq) + 1, copy)
    return [copy.name for _, copy in added]


def int8_model(rep: ExportReport):
    return next(m for m in rep.models if m.precision == "int8")


def export_arm(ckpt: Path, cfg: ExportConfig, arm: str, out: Path) -> ExportReport:
    """``distill export`` of ``ckpt`` with ``cfg`` into ``out`` (reused when finished) as ``arm`` exports."""
    if ExportReport.exists_in(out) and ExportReport.read(out).status == "ok":
        return ExportReport.read(out)
    log(f"export ({arm}) {ckpt} -> {out}")
    real = quantize_module.per_tensor_weights
    if arm == "float":
        quantize_module.per_tensor_weights = float_input  # type: ignore[assignment]
    try:
        return api.export(ckpt, out, cfg.model_copy(update={"max_fallback_layers": 0}) if arm == "all-int8" else cfg)
    finally:
        quantize_module.per_tensor_weights = real


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
            rows.append({"tag": tag, "reps": reps, "scored": scored, "images": len(scored["per-tensor"].flips)})
            log(f"{tag}: " + ", ".join(f"{a} {s.disagree_mean:.2f}" for a, s in scored.items()))
    if not rows:
        raise SystemExit("no run whose export kept a layer in float")
    model, flags = cpu_flags()
    print(f"{model}; SIMD flags: {' '.join(flags)}\n")
    print("| run | test images | " + " | ".join(
        f"{a}: kept layers, test disagreement mean / worst (pts), acc drop worst (pts), int8/fp32 latency"
        for a in ARMS) + " | McNemar: only per-tensor flips / only float flips, p |")
    print("|---|---:|" + "---|" * (len(ARMS) + 1))
    for r in rows:
        cells = []
        for a in ARMS:
            s, ratio = r["scored"][a], latency_ratio(r["reps"][a])
            cells.append(f"{len(kept(r['reps'][a]))}, {s.disagree_mean:.2f} / {s.disagree_worst:.2f}, "
                         f"{s.acc_drop_worst:+.2f}, " + (f"{ratio:.2f}x" if ratio else "–"))
        x, y = r["scored"]["per-tensor"].flips, r["scored"]["float"].flips
        p = mcnemar((~x).tolist(), (~y).tolist()).p
        print(f"| {r['tag']} | {r['images']} | " + " | ".join(cells)
              + f" | {int((x & ~y).sum())} / {int((y & ~x).sum())}, p = {p:.3g} |")
    means = {a: [r["scored"][a].disagree_mean for r in rows] for a in ARMS}
    print(f"\nOver {len(rows)} runs, test disagreement mean: "
          + ", ".join(f"{a} {fmt(means[a])}" for a in ARMS) + " pts")
    for a, b in (("per-tensor", "float"), ("per-tensor", "all-int8"), ("float", "all-int8")):
        t = paired(means[a], means[b])
        lower = sum(x < y for x, y in zip(means[a], means[b]))
        beyond = [r["tag"] for r in rows if mcnemar((~r["scored"][a].flips).tolist(),
                                                    (~r["scored"][b].flips).tolist()).p < 0.05]
        print(f"- {a} minus {b}: {t.diff:+.2f} pts (paired t-test p = {t.p:.3g}); {a} lower on {lower} of "
              f"{len(rows)} runs; McNemar p < 0.05 on {len(beyond)} ({', '.join(beyond) or 'none'})")
    ratios = {a: [latency_ratio(r["reps"][a]) for r in rows] for a in ARMS}
    if all(v is not None for vs in ratios.values() for v in vs):
        slower = sum(f > p for f, p in zip(ratios["float"], ratios["per-tensor"]))  # type: ignore[operator]
        print("- int8/fp32 latency (each export's own interleaved measurement): "
              + ", ".join(f"{a} {fmt(ratios[a])}x" for a in ARMS)
              + f"; float above per-tensor on {slower} of {len(rows)} runs")
    print(json.dumps({r["tag"]: {a: r["scored"][a].disagree_mean for a in ARMS} for r in rows}))


if __name__ == "__main__":
    main()
