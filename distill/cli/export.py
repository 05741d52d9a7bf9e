"""``distill export``: a student checkpoint -> ONNX fp32/fp16/int8 (+ TensorRT build script)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distill.api import require_onnxruntime
from distill.cli._split import add_split_arguments
from distill.data.split import SPLIT_KEYS
from distill.records import EXPORT_REPORT, RUN_CONFIG, STUDENT_SPEC, STUDENT_WEIGHTS, pct
from distill.spelling import option_names

# ExportConfig key -> the flag that sets it (errors name the flag)
FLAGS = {
    "precisions": "--precision", "data_root": "--data", "eval_domains": "--eval-domains",
    "calib_domains": "--calib-domains", "target_domains": "--target-domains", "calib_method": "--calib-method",
    "calib_count": "--calib-count", "eval_count": "--eval-count", "int8_flavour": "--int8-flavour",
    "max_drop": "--max-drop", "reduce_range": "--reduce-range", "max_fallback_layers": "--max-fallback-layers",
    "opset": "--opset", "exporter": "--exporter", "with_embedding": "--embedding", "latency_batch": "--latency-batch",
    "latency_iters": "--latency-iters", "threads": "--threads", "trt_batches": "--trt-batches",
    "trt_workspace_mib": "--trt-workspace-mib",
    "build_engines": "--no-build-engine", "fallback_outputs": "--fallback-outputs",
    "test_fraction": "--test-fraction", "split_seed": "--split-seed",
    "val_fraction": "--val-fraction", "pretrain_fraction": "--pretrain-fraction", "class_map": "--class-map",
    "classes": "--classes", "teacher_arch": "--teacher-arch", "teacher_pretrained": "--teacher-pretrained",
}


#: an export does not resume: a rerun starts it over, replacing what the interrupted one wrote
INTERRUPT_HINT = "the export did not finish; rerun the same command to export again from the start"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a checkpoint to ONNX fp32/fp16/int8 (+ TensorRT), with parity and accuracy checks",
        description="Export RUN_DIR/checkpoints/best to ONNX, check ORT against PyTorch on real test images, "
        "quantize to int8 for the target runtime with per-domain accuracy checks and fp32 fallback of sensitive "
        f"layers, and write DIR/{EXPORT_REPORT} plus DIR/build_engine.sh for TensorRT.")
    p.add_argument("checkpoint", help=f"checkpoint folder ({STUDENT_WEIGHTS} + {STUDENT_SPEC})")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", default="onnx", choices=["onnx", "timm"],
                   help="onnx (default): the ONNX pipeline below; timm: OUT/model.safetensors + config.json with "
                   "timm's own key names, for timm.create_model(arch, pretrained=True, pretrained_cfg_overlay="
                   "dict(file=..., num_classes=N), num_classes=N) or timm.create_model('local-dir:OUT', "
                   "pretrained=True) (the other options do not apply)")
    p.add_argument("--precision", default="fp32",
                   help="comma-separated: fp32,fp16,int8 (default: fp32; fp32 is always written, as the parent)")
    p.add_argument("--data", default=None, metavar="ROOT",
                   help=f"ROOT/DOMAIN/CLASS/image data (default: the run's {RUN_CONFIG}; needed for int8)")
    p.add_argument("--eval-domains", nargs="+", default=None, help="domains to evaluate (default: all)")
    p.add_argument("--calib-domains", nargs="+", default=None,
                   help="labeled domains to calibrate on, train split (default: the run's source domains, else all)")
    p.add_argument("--target-domains", nargs="*", default=None,
                   help="domains the model will run on: their train images join calibration, unlabeled (default: the "
                        "run's unlabeled pool domains; the flag alone: none)")
    p.add_argument("--calib-method", default="minmax", help="minmax | entropy | percentile (default: minmax)")
    p.add_argument("--calib-count", type=int, default=256, help="calibration images (default: 256)")
    p.add_argument("--eval-count", type=int, default=500, help="max test images per domain; 0 = all (default: 500)")
    p.add_argument("--int8-flavour", default="ort-cpu",
                   help="ort-cpu (u8 activations, fast on onnxruntime CPU) | tensorrt (symmetric s8) | both")
    p.add_argument("--max-drop", type=float, default=1.0,
                   help="max int8 top-1 disagreement with fp32 per domain, in points, on the calibration images "
                        "(label-free; it bounds the accuracy drop); beyond it sensitive layers stay float (default: 1.0)")
    p.add_argument("--reduce-range", action=argparse.BooleanOptionalAction, default=True,
                   help="ort-cpu flavour: 7-bit weights, which every x86 CPU computes alike (default); --no-reduce-range: "
                        "8-bit weights, ~1 point closer to fp32 on CPUs with VNNI and on ARM, but saturating on x86 "
                        "CPUs without VNNI (AVX2)")
    p.add_argument("--max-fallback-layers", type=int, default=10,
                   help="cap on layers kept in float; at most 3x as many are tried (default: 10)")
    p.add_argument("--fallback-outputs", action="store_true",
                   help="the fallback also tries a layer with its output and the activation after it (hardswish, "
                   "SiLU) in float: that output's Q/DQ goes too (mobilenetv3's conv_head; see docs/qad.md)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, >= 17 (default: 18)")
    p.add_argument("--exporter", default="dynamo", choices=["dynamo", "torchscript"],
                   help="torch.onnx exporter (default: dynamo; falls back to torchscript if it fails)")
    p.add_argument("--embedding", action="store_true", help="also output the projector 'embedding'")
    p.add_argument("--latency-batch", type=int, default=1, help="batch of the int8-vs-fp32 latency check")
    p.add_argument("--latency-iters", type=int, default=100,
                   help="timed runs of that check (default: 100); int8 is called faster only when the 95 %% interval "
                        "of its latency ratio to fp32 lies at or below 0.9")
    p.add_argument("--threads", type=int, default=1,
                   help="onnxruntime threads for the latency check (default: 1, reproducible on a busy machine; the "
                        "recommendation holds for this count)")
    p.add_argument("--trt-batches", default="1,8,32", help="TensorRT profile MIN,OPT,MAX batch (default: 1,8,32)")
    p.add_argument("--trt-workspace-mib", default=1024, metavar="MIB",
                   help="TensorRT builder workspace of build_engine.sh, MiB, a positive integer (default: 1024)")
    p.add_argument("--no-build-engine", action="store_true", help="never build TensorRT engines here")
    add_split_arguments(p, unset=SPLIT_KEYS, unset_from=f"the run's {RUN_CONFIG}")  # must match training's
    p.add_argument("--classes", default=None, metavar="FILE",
                   help="re-target a text-head (open-vocabulary) student to the class names in FILE (one per line, "
                        "or a YAML list) with the teacher's text tower, no retraining; the re-targeted checkpoint "
                        "is saved under OUT/checkpoint")
    p.add_argument("--teacher-arch", default=None,
                   help="--classes: the teacher's open_clip arch (default: the student's provenance)")
    p.add_argument("--teacher-pretrained", default=None,
                   help="--classes: the teacher's weights, tag or file (default: the student's provenance)")
    # an export restarts from the checkpoint: nothing of an interrupted one is reused
    p.set_defaults(func=run, _parser=p, interrupt_hint=INTERRUPT_HINT)


def config_options(args: argparse.Namespace) -> dict:
    """The flags as ExportConfig keys, values as given (ExportConfig splits ``a,b`` lists and checks them)."""
    options = {key: getattr(args, flag[2:].replace("-", "_")) for key, flag in FLAGS.items()}
    options["eval_count"] = args.eval_count or None  # 0 = all
    options["build_engines"] = not args.no_build_engine
    return options


def run(args: argparse.Namespace) -> int:
    if args.format == "timm":
        from distill.export.timm_format import export_timm  # lazy: torch/timm, not at CLI start-up

        print(export_timm(args.checkpoint, args.out), file=sys.stdout)
        return 0
    require_onnxruntime()  # one line naming the extra to install, not a ModuleNotFoundError from deep inside
    from distill.export import ExportConfig, export_checkpoint  # lazy: torch/onnx/onnxruntime, not at CLI start-up

    with option_names(FLAGS):  # the stage's messages name its options as these flags (distill/spelling.py)
        cfg = ExportConfig.from_options(config_options(args), names=FLAGS)
        report = export_checkpoint(args.checkpoint, args.out, cfg)
    out = Path(args.out)  # `--out exp/` names exp/model.fp32.onnx, not exp//...
    for m in report.models:
        acc = f", mean accuracy {pct(m.mean_accuracy, 2)}%" if m.mean_accuracy is not None else ""
        flavour = m.int8_flavour
        print(f"{out / m.file}: {m.precision}{'/' + flavour if flavour else ''}{acc}", file=sys.stdout)
    if report.recommendation is not None:
        print(report.recommendation.line(), file=sys.stdout)  # the last line: what to ship, and why
    return 0
