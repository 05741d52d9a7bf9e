"""Does the QAD fake-quant student compute what onnxruntime runs? Top-1 agreement, torch vs the exported file.

    PYTHONPATH=. .venv/bin/python benchmarks/qad_fidelity.py --checkpoint demo_out/runs/fm_unlabeled/checkpoints/best

For a trained checkpoint and its run's calibration images (as ``distill qad`` picks them), three fake-quant
models are calibrated (MinMax, no training) and exported with :func:`distill.export.fakequant.export_qdq`:

- ``now``: :func:`~distill.export.fakequant.fake_quant_model` as shipped (int32 biases simulated, SE means in float);
- ``float bias``: the same placement without :class:`~distill.export.fakequant.Int32Bias` (torch trains the float
  bias the file rounds to int32);
- ``before``: torch.ao's default placement (the mean re-quantized on its input's grid) and no Int32Bias, the
  fake-quant model before 2026-12-04.

Each is run by torch and by onnxruntime (graph optimizations off: float Q/DQ; on: fused int8 kernels), and the
top-1 agreement and mean |Δlogit| of each pair are printed, with fp32 vs the int8 file for scale.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch.ao.quantization import QConfigMapping
from torch.ao.quantization.quantize_fx import fuse_fx, prepare_qat_fx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.export import fakequant as F  # noqa: E402
from distill.export.config import ExportConfig  # noqa: E402
from distill.export.data import load_export_data  # noqa: E402
from distill.export.evaluate import predict_onnx, predict_torch  # noqa: E402
from distill.export.log import ExportLog  # noqa: E402
from distill.export.quantize import FLAVOURS, with_weight_range  # noqa: E402
from distill.export.training_run import TrainingRun, provenance, with_run_defaults  # noqa: E402
from distill.student.model import load_student  # noqa: E402


def build(student, flavour, variant: str) -> torch.fx.GraphModule:
    if variant == "now":
        return F.fake_quant_model(student, flavour)
    import copy
    model = F._plain_batchnorms(F._Logits(copy.deepcopy(student).cpu().float().eval())).eval()
    mapping = (F.qconfig_mapping_for(flavour) if variant == "float bias"
               else QConfigMapping().set_global(F.qconfig_for(flavour)))
    h, w = student.spec.input_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare_qat_fx(fuse_fx(model).train(), mapping, (torch.randn(2, 3, h, w),),
                              backend_config=F.backend_config_for(flavour))


def agree(a: np.ndarray, b: np.ndarray) -> str:
    return f"{100 * float((a.argmax(1) == b.argmax(1)).mean()):6.2f} % ({float(np.abs(a - b).mean()):.4f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", default=None, help="data root (default: the run's)")
    ap.add_argument("--target-domains", nargs="*", default=(), help="their train images join the calibration set")
    ap.add_argument("--calib-count", type=int, default=256)
    ap.add_argument("--out", default="/tmp/qad_fidelity")
    ap.add_argument("--reduce-range", action=argparse.BooleanOptionalAction, default=True,
                    help="ort-cpu: 7-bit weights, as distill export (default); "
                         "--no-reduce-range: 8-bit, as this script's RESULTS figures before 2026-12-05")
    args = ap.parse_args()
    say = ExportLog(lambda m: None)
    ckpt = Path(args.checkpoint)
    student, run = load_student(ckpt), TrainingRun.of_checkpoint(ckpt, say)
    ecfg = with_run_defaults(ExportConfig(precisions=("fp32", "int8"), data_root=args.data,
                                          target_domains=tuple(args.target_domains), calib_count=args.calib_count,
                                          eval_count=1), run, say)
    data = load_export_data(ecfg, student.spec, list(provenance(ckpt, student, run).get("source_domains") or []), say)
    calib, flavour = data.calib_images, with_weight_range(FLAVOURS["ort-cpu"], args.reduce_range)
    fp32 = predict_torch(student, calib)
    print(f"{student.spec.arch}, {len(calib)} calibration images; top-1 agreement % (mean |dlogit|)")
    print(f"{'fake-quant model':12s} | torch vs ORT fused | torch vs ORT float Q/DQ | ORT float vs fused | fp32 vs ORT fused")
    for variant in ("before", "float bias", "now"):
        model = build(student, flavour, variant)
        model.apply(torch.ao.quantization.disable_fake_quant)
        F.set_observers(model, True)
        with torch.no_grad():
            for x in calib.batches(32):
                model(torch.from_numpy(x))
        model.apply(torch.ao.quantization.enable_fake_quant)
        F.set_observers(model, False)
        path = F.export_qdq(model.eval(), Path(args.out) / f"{variant.replace(' ', '_')}.onnx", student.spec.input_size,
                            flavour)
        torch_logits = predict_torch(model, calib)
        runs = {}
        for level in ("ORT_ENABLE_ALL", "ORT_DISABLE_ALL"):
            so = ort.SessionOptions()
            so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
            so.log_severity_level = 3
            runs[level] = predict_onnx(ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]), calib)
        fused, plain = runs["ORT_ENABLE_ALL"], runs["ORT_DISABLE_ALL"]
        print(f"{variant:16s} | {agree(torch_logits, fused)} | {agree(torch_logits, plain)} | "
              f"{agree(plain, fused)} | {agree(fp32, fused)}")


if __name__ == "__main__":
    main()
