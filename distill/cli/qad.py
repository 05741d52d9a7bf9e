"""``distill qad``: quantization-aware distillation of a checkpoint into an int8 QDQ ONNX, with PTQ vs QAD figures."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distill.api import require_onnxruntime
from distill.records import RUN_CONFIG, STUDENT_SPEC, STUDENT_WEIGHTS, ExportReport
from distill.spelling import option_names

# QADConfig key -> the flag that sets it (errors name the flag)
FLAGS = {
    "checkpoint": "CHECKPOINT", "out_dir": "--out", "cache": "--cache", "cache_weight": "--cache-weight",
    "flavour": "--flavour", "reduce_range": "--reduce-range", "data_root": "--data", "calib_domains": "--calib-domains",
    "target_domains": "--target-domains", "calib_count": "--calib-count", "eval_count": "--eval-count",
    "holdout_count": "--holdout-count",
    "epochs": "--epochs", "observer_epochs": "--observer-epochs", "ranges": "--ranges", "range_lr": "--range-lr",
    "optimizer": "--optimizer", "lr": "--lr",
    "batch_size": "--batch-size",
    "temperature": "--temperature", "device": "--device", "opset": "--opset", "seed": "--seed",
    "export_dir": "--export", "quantize_all": "--quantize-all", "trt_batches": "--trt-batches",
    "trt_workspace_mib": "--trt-workspace-mib",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "qad", help="quantization-aware distillation: fine-tune the fake-quantized student against the fp32 "
        "student (and a teacher cache), export an int8 QDQ ONNX with the learned scales",
        description="Start from a trained checkpoint, calibrate fake-quant ranges like the int8 flavour runs them, "
        "train a few epochs with KL to the frozen fp32 student (plus the cached teacher with --cache), and write "
        "OUT/model.int8-FLAVOUR.onnx, OUT/checkpoint (the tuned fp32 student) and OUT/qad.json: top-1 "
        "disagreement with fp32 per domain for plain PTQ and for QAD. No harm: QAD's file ships only when it "
        "disagrees with fp32 less than PTQ's on hold-out images; otherwise PTQ's int8 is written as "
        "OUT/model.int8-FLAVOUR.ptq.onnx and ships. See docs/qad.md.")
    p.add_argument("checkpoint", help=f"checkpoint folder ({STUDENT_WEIGHTS} + {STUDENT_SPEC})")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--cache", default=None, help="teacher cache of the same data (default: none, fp32 student only)")
    p.add_argument("--cache-weight", type=float, default=0.5, help="share of the cached teacher's KL (default: 0.5)")
    p.add_argument("--flavour", default=None,
                   help="ort-cpu (u8 activations) | tensorrt (symmetric s8) (default: --export's int8 flavour; with "
                        "both, the one its recommendation ships as int8; else ort-cpu)")
    p.add_argument("--reduce-range", action=argparse.BooleanOptionalAction, default=None,
                   help="ort-cpu: 7-bit weights, as distill export --reduce-range (default: as --export's file, else "
                        "distill export's default)")
    p.add_argument("--data", default=None, metavar="ROOT", help=f"data root (default: the run's {RUN_CONFIG})")
    p.add_argument("--calib-domains", nargs="+", default=None,
                   help="train-split domains (default: --export's, else the run's sources)")
    p.add_argument("--target-domains", nargs="*", default=None,
                   help="domains whose train images join, unlabeled (default: --export's, else the run's unlabeled "
                        "pool domains; the flag alone: none)")
    p.add_argument("--calib-count", type=int, default=None,
                   help="calibration = training images (default: --export's, else 256, or fewer where the train split "
                        "cannot also hold --holdout-count hold-out images: then they share it)")
    p.add_argument("--eval-count", type=int, default=200,
                   help="held-out test images per domain; 0 = all (default: 200)")
    p.add_argument("--holdout-count", type=int, default=256,
                   help="train images, not calibration images, on which the no-harm rule picks QAD's or PTQ's int8 "
                   "(default: 256)")
    p.add_argument("--epochs", type=int, default=3, help="QAD epochs (default: 3)")
    p.add_argument("--observer-epochs", type=int, default=None,
                   help="with --ranges observed: epochs whose activation ranges follow the data, then frozen "
                   "(default: epochs - 1)")
    p.add_argument("--ranges", default="learned",
                   help="learned (LSQ: calibrated, then trained; the default) | observed (MinMax, --observer-epochs)")
    p.add_argument("--range-lr", type=float, default=1e-2, help="learned ranges' learning rate (default: 1e-2)")
    p.add_argument("--optimizer", default="sgd", help="sgd (momentum 0.9) | adamw (default: sgd)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: 1e-4)")
    p.add_argument("--batch-size", type=int, default=32, help="images per step (default: 32)")
    p.add_argument("--temperature", type=float, default=2.0, help="KL temperature (default: 2.0)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset of the QDQ file, >= 13 (default: 18)")
    p.add_argument("--seed", type=int, default=None, help="image picks and shuffling (default: --export's, else 0)")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="a `distill export` folder of the same checkpoint: its int8 file (with the export's float "
                   "fallback) is the arm QAD must beat and ships when QAD does not (default: plain PTQ made here); "
                   "QAD keeps the layers that file keeps in float in float too")
    p.add_argument("--quantize-all", action="store_true",
                   help="with --export: quantize every layer, also those the export's fallback keeps in float "
                        "(QAD instead of the fallback: a file with no float layer)")
    p.add_argument("--trt-batches", default=None, metavar="MIN,OPT,MAX",
                   help="--flavour tensorrt: TensorRT profile batches of build_engine.sh (default: --export's, "
                        "else 1,8,32)")
    p.add_argument("--trt-workspace-mib", default=None, metavar="MIB",
                   help="--flavour tensorrt: TensorRT builder workspace of build_engine.sh, MiB, a positive integer "
                        "(default: --export's, else 1024)")
    p.set_defaults(func=run, _parser=p, interrupt_hint="rerun the same command (QAD starts over)")


def config_options(args: argparse.Namespace) -> dict:
    """The flags as QADConfig keys (``--eval-count 0``: every test image, as ``distill export``)."""
    options = {key: getattr(args, flag.lstrip("-").replace("-", "_").lower()) for key, flag in FLAGS.items()}
    options["eval_count"] = args.eval_count or None
    return options


def run(args: argparse.Namespace) -> int:
    require_onnxruntime()
    from distill.export.qad import qad  # lazy: torch/onnx/onnxruntime, not at CLI start-up
    from distill.export.qad_config import QADConfig

    with option_names(FLAGS):  # the stage's messages name its options as these flags (distill/spelling.py)
        record = qad(QADConfig.from_options(config_options(args), names=FLAGS))  # an interrupted run: no empty --out
    out = Path(args.out)  # `--out qad/` names qad/model.int8-ort-cpu.onnx, not qad//...
    print(f"{out / record.qad_file}: int8/{record.flavour} (QAD); worst calibration disagreement "
          f"PTQ {record.ptq.worst_calibration:.2f} -> QAD {record.qad.worst_calibration:.2f} pts", file=sys.stdout)
    print(f"int8 file: {out / record.ship_file} ({(record.ship or 'qad').upper()} int8): {record.ship_reason}",
          file=sys.stdout)
    if args.export:  # the export's recommendation decides the precision: the report's one decision, in its words
        from distill.report.decision import decide  # lazy: the report package, needed only with --export

        rec = ExportReport.read(args.export).recommendation
        if rec is not None:
            print(f"{args.export}: {decide(rec, record, args.out, args.export).text()}", file=sys.stdout)
    return 0
