"""Does QAD's int8 file run like the export's PTQ file? Per student: what onnxruntime runs of each, and latency.

    PYTHONPATH=. .venv/bin/python benchmarks/qad_placement.py
    PYTHONPATH=. .venv/bin/python benchmarks/qad_placement.py --students efficientnet_lite0,mobilenetv2_100 --size 32

QAD's file is torch.ao's fake-quant graph exported to QDQ (:func:`distill.export.fakequant.export_qdq`); the
export's PTQ file is onnxruntime's quantizer placing Q/DQ per op (:func:`distill.export.quantize.quantize`). When
the two place Q/DQ differently, onnxruntime fuses them differently (an op left in float between a Q/DQ pair, a
Conv not fused with its activation) and the QAD file is slower than PTQ's for the same weights: what the ReLU6
fusion (distill/export/relu6.py) fixed for efficientnet_lite0. No training is needed to see placement: each
student is random-initialised (BatchNorm statistics perturbed), both files are made from the same fp32 ONNX
and the same calibration batch (MinMax, no fallback, ort-cpu flavour), then:

- the op types onnxruntime runs after its graph optimizations (``optimized_model_filepath``, ORT_ENABLE_ALL),
  as "int8 kernels / float ops / Q+DQ nodes" and the float op types left in each file;
- p50 latency QAD/PTQ and PTQ/fp32, interleaved (:func:`distill.bench.compare.compare_latency`, median of
  ``--repeats``), at 1 thread.

Prints one Markdown table (paste it into benchmarks/RESULTS.md with the command and the CPU flags).
"""
from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from int8_students import cpu_flags, interleaved_ratios  # noqa: E402

from distill.export.fakequant import export_qdq, fake_quant_model  # noqa: E402
from distill.export.fq_state import calibrate_ranges  # noqa: E402
from distill.export.images import ImageSet  # noqa: E402
from distill.export.onnx import export_onnx  # noqa: E402
from distill.export.qad import plain_ptq  # noqa: E402
from distill.export.quantize import FLAVOURS, Int8Flavour, with_weight_range  # noqa: E402
from distill.student.model import Student, default_spec  # noqa: E402

DEFAULT = "mobilenetv3_small_050,mobilenetv3_large_100,mobilenetv4_conv_small,resnet18,efficientnet_lite0,mobilenetv2_100"
INT8_KERNELS = ("QLinear", "QGemm", "MatMulInteger", "ConvInteger", "DynamicQuantize")
QDQ = ("QuantizeLinear", "DequantizeLinear")
LAYOUT = ("Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "ReorderInput", "ReorderOutput")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def student_of(arch: str, size: int, seed: int) -> Student:
    torch.manual_seed(seed)
    student = Student(default_spec(arch, [str(i) for i in range(10)], size)).eval()
    for m in student.modules():  # trained-like BatchNorm statistics to fold
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)
    return student


def calibration_set(size: int, count: int, seed: int) -> ImageSet:
    """``count`` random uint8 images (placement and speed do not depend on what the pixels show)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    return ImageSet(images=images, labels=np.zeros(count, np.int64), domains=np.array(["random"] * count),
                    mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), skipped=[])


def qad_file(student: Student, images: ImageSet, path: Path, flavour: Int8Flavour) -> Path:
    """The fake-quant student, ranges calibrated on ``images`` (no training), exported as ``distill qad`` does."""
    model = calibrate_ranges(fake_quant_model(student, flavour), [torch.from_numpy(images.normalize(images.images))])
    return export_qdq(model.eval(), path, student.spec.input_size, flavour)


def runs(path: Path, work: Path) -> collections.Counter:
    """The op types onnxruntime runs for ``path`` after its graph optimizations, 1 thread."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3  # its warning about saving an optimized model
    so.optimized_model_filepath = str(work / f"{path.stem}.optimized.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)


def describe(ops: collections.Counter) -> tuple[str, str]:
    """("int8 kernels / float ops / Q+DQ", the float op types), layout ops (transposes, reorders) left out."""
    int8 = sum(c for op, c in ops.items() if op.startswith(INT8_KERNELS))
    qdq = sum(ops[op] for op in QDQ)
    floats = {op: c for op, c in ops.items() if not op.startswith(INT8_KERNELS) and op not in QDQ and op not in LAYOUT}
    return f"{int8} / {sum(floats.values())} / {qdq}", ", ".join(f"{op} {c}" for op, c in sorted(floats.items())) or "–"


def one(arch: str, args: argparse.Namespace, work: Path, flavour: Int8Flavour) -> str:
    student = student_of(arch, args.size, args.seed)
    images = calibration_set(args.size, args.calib_count, args.seed)
    fp32 = work / "fp32.onnx"
    export_onnx(student, fp32, exporter="torchscript")
    files = {"fp32": fp32, "ptq": plain_ptq(fp32, work, images, flavour),
             "qad": qad_file(student, images, work / "qad.onnx", flavour)}
    ptq_ops, ptq_float = describe(runs(files["ptq"], work))
    qad_ops, qad_float = describe(runs(files["qad"], work))
    vs_fp32 = interleaved_ratios(files, batch=1, threads=1, iters=args.iters, repeats=args.repeats)
    vs_ptq = interleaved_ratios({"ptq": files["ptq"], "qad": files["qad"]}, batch=1, threads=1, iters=args.iters,
                                repeats=args.repeats)
    ratio = vs_ptq["qad"]
    log(f"{arch}: QAD/PTQ {ratio[0]:.2f}x")
    return (f"| {arch} | {ptq_ops} | {qad_ops} | {ptq_float} | {qad_float} | {vs_fp32['ptq'][0]:.2f}x | "
            f"{vs_fp32['qad'][0]:.2f}x | **{ratio[0]:.2f}x** [{ratio[3]:.2f}–{ratio[4]:.2f}] |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--students", default=DEFAULT, help="comma-separated timm names")
    p.add_argument("--size", type=int, default=64, help="input size in px")
    p.add_argument("--calib-count", type=int, default=32, help="random calibration images")
    p.add_argument("--iters", type=int, default=40, help="interleaved timed runs per comparison")
    p.add_argument("--repeats", type=int, default=5, help="interleaved comparisons (median reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reduce-range", action=argparse.BooleanOptionalAction, default=True,
                   help="ort-cpu: 7-bit weights, as distill export (default); "
                        "--no-reduce-range: 8-bit, as this script's RESULTS figures before 2026-12-05")
    args = p.parse_args()
    flavour = with_weight_range(FLAVOURS["ort-cpu"], args.reduce_range)
    model, flags = cpu_flags()
    print(f"CPU: {model}; flags: {' '.join(flags)}; onnxruntime {ort.__version__}, torch {torch.__version__}; "
          f"{args.size} px, batch 1, 1 thread\n")
    print("| student | PTQ: int8 kernels / float ops / Q+DQ | QAD: same | float ops, PTQ | float ops, QAD | "
          "PTQ/fp32 | QAD/fp32 | QAD/PTQ latency |")
    print("|---|---|---|---|---|---:|---:|---:|")
    for arch in args.students.split(","):
        with tempfile.TemporaryDirectory(prefix="qad-placement-") as tmp:
            print(one(arch, args, Path(tmp), flavour), flush=True)


if __name__ == "__main__":
    main()
