"""What the int8 graph rewrites (distill/export/int8_graph.py) change: float islands, latency, disagreement.

    PYTHONPATH=. .venv/bin/python benchmarks/int8_islands.py --checkpoints RUN/checkpoints/best [...] \
        [--random mobilenetv3_large_100:224,...] [--batch 1,32] [--repeats 3]

Per student, one fp32 ONNX (TorchScript exporter) is quantized twice by ``distill export``'s functions (``prepare``,
MinMax ``calibrate``, ``quantize``, ort-cpu flavour, no fallback), on the same calibration images:
**before** (``prepare(int8_rewrites=False)``: the graph onnxruntime's ``quant_pre_process`` leaves) and **after**
(the default: squeeze-excite's spatial ReduceMean written as GlobalAveragePool, its HardSigmoid gate folded into the
conv before it). Reported per student:

- the op types onnxruntime still runs in float in each int8 file (``float_ops_as_run``);
- p50 latency of each int8 file over fp32's at each batch size, interleaved (median of ``--repeats``), 1 thread;
- for a trained checkpoint (``--checkpoints``): each int8 file's top-1 disagreement with fp32 on the test split of
  the run's domains (``--eval-count`` per domain), and McNemar's exact p on the images only one of them flips.
  ``--random ARCH:SIZE`` students (random init, BatchNorm statistics perturbed, calibrated on noise) are for
  latency and islands only: their disagreement means nothing.

Prints one Markdown table; paste it into benchmarks/RESULTS.md with the command and the CPU flags.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from int8_students import cpu_flags, interleaved_ratios  # noqa: E402

from distill.export.config import ExportConfig  # noqa: E402
from distill.export.data import load_export_data  # noqa: E402
from distill.export.evaluate import predict_onnx  # noqa: E402
from distill.export.images import ImageCalibrationReader, ImageSet, random_images  # noqa: E402
from distill.export.log import ExportLog  # noqa: E402
from distill.export.onnx import INPUT_NAME, export_onnx  # noqa: E402
from distill.export.quantize import (  # noqa: E402
    FLAVOURS,
    Int8Flavour,
    calibrate,
    float_ops_as_run,
    prepare,
    quantize,
    with_weight_range,
)
from distill.export.training_run import TrainingRun, provenance, with_run_defaults  # noqa: E402
from distill.report.stats import mcnemar  # noqa: E402
from distill.student.model import Student, default_spec, load_student  # noqa: E402

ARMS = ("before", "after")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def trained(checkpoint: str, calib_count: int, eval_count: int) -> tuple[str, Student, ImageSet, ImageSet]:
    """A run's student, its export calibration images (source + target domains) and test images."""
    say = ExportLog(log)
    student = load_student(checkpoint)
    run = TrainingRun.of_checkpoint(Path(checkpoint), say)
    cfg = with_run_defaults(ExportConfig(precisions=("fp32", "int8"), calib_count=calib_count,
                                         eval_count=eval_count), run, say)
    prov = provenance(Path(checkpoint), student, run)
    data = load_export_data(cfg, student.spec, list(prov.get("source_domains") or []), say)
    assert data.calib_images is not None
    name = f"{student.spec.arch} ({Path(checkpoint).parents[1].name}, {student.spec.input_size[0]} px)"
    return name, student, data.calib_images, data.eval_images


def random_student(arch: str, size: int) -> tuple[str, Student, ImageSet, None]:
    torch.manual_seed(0)
    student = Student(default_spec(arch, [str(i) for i in range(10)], size)).eval()
    for m in student.modules():  # trained-like BatchNorm statistics to fold
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return f"{arch} (random init, {size} px)", student, random_images(student.spec, 64, 0), None


def one(name: str, student: Student, calib: ImageSet, test: ImageSet | None, batches: list[int], repeats: int,
        work: Path, flavour: Int8Flavour) -> str:
    fp32 = work / "fp32.onnx"
    export_onnx(student, fp32, opset=18, exporter="torchscript")
    files = {}
    for arm in ARMS:
        prepared = prepare(fp32, work / f"prepared-{arm}.onnx", int8_rewrites=arm == "after")
        ranges = calibrate(prepared, ImageCalibrationReader(calib, INPUT_NAME), "minmax", work / f"{arm}.ranges")
        files[arm] = quantize(prepared, work / f"int8-{arm}.onnx", flavour, ranges)
    islands = {arm: float_ops_as_run(files[arm], work) for arm in ARMS}
    cells = [name, *(", ".join(f"{k} {v}" for k, v in islands[arm].items()) or "none" for arm in ARMS)]
    for batch in batches:
        log(f"{name}: latency at batch {batch}")
        r = interleaved_ratios({"fp32": fp32, **files}, batch, 1, 200, repeats)
        cells += [f"{r['before'][0]:.2f} → **{r['after'][0]:.2f}** ({r['after'][0] / r['before'][0]:.2f}x)"]
    if test is None:
        cells += ["n/a (random init)"]
    else:
        ref = predict_onnx(fp32, test).argmax(1)
        flips = {arm: predict_onnx(files[arm], test).argmax(1) != ref for arm in ARMS}
        p = mcnemar((~flips["after"]).tolist(), (~flips["before"]).tolist()).p
        only = [int((flips[a] & ~flips[b]).sum()) for a, b in (("before", "after"), ("after", "before"))]
        cells += [f"{100 * flips['before'].mean():.2f} → {100 * flips['after'].mean():.2f} "
                  f"({len(ref)} images; only before / only after flips {only[0]} / {only[1]}, McNemar p = {p:.2f})"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", nargs="*", default=[], help="trained students (RUN/checkpoints/best)")
    ap.add_argument("--random", default="", help="ARCH:SIZE,... random-init students (latency and islands only)")
    ap.add_argument("--batch", default="1", help="batch sizes for latency")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--calib-count", type=int, default=256)
    ap.add_argument("--eval-count", type=int, default=500, help="test images per domain")
    ap.add_argument("--reduce-range", action=argparse.BooleanOptionalAction, default=True,
                    help="ort-cpu: 7-bit weights, as distill export (default); "
                         "--no-reduce-range: 8-bit, as this script's RESULTS figures before 2026-12-05")
    args = ap.parse_args()
    flavour = with_weight_range(FLAVOURS["ort-cpu"], args.reduce_range)
    batches = [int(b) for b in args.batch.split(",")]
    students = [trained(c, args.calib_count, args.eval_count) for c in args.checkpoints]
    students += [random_student(a.split(":")[0], int(a.split(":")[1])) for a in args.random.split(",") if a]
    rows = []
    for name, student, calib, test in students:
        with tempfile.TemporaryDirectory(prefix="int8-islands-") as work:
            rows.append(one(name, student, calib, test, batches, args.repeats, Path(work), flavour))
            log(rows[-1])
    model, flags = cpu_flags()
    print(f"{model}; SIMD flags: {' '.join(flags)}; 1 onnxruntime thread\n")
    print("| student | float ops, before | float ops, after | "
          + " | ".join(f"int8/fp32 p50 batch {b}, before → after (after/before)" for b in batches)
          + " | disagreement with fp32, test images (pts), before → after |")
    print("|---|---|---|" + "---:|" * len(batches) + "---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
