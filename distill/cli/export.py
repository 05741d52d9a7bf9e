"""``distill export``: a student checkpoint -> ONNX fp32/fp16/int8 (+ TensorRT build script)."""
from __future__ import annotations

import argparse
import sys


def _csv(values: list[str] | None) -> tuple[str, ...] | None:
    """``--x a b`` and ``--x a,b`` both give ('a', 'b')."""
    if values is None:
        return None
    return tuple(v.strip() for item in values for v in item.split(",") if v.strip())


def _batches(text: str) -> tuple[int, int, int]:
    from distill.errors import DistillError

    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise DistillError(f"--trt-batches must be MIN,OPT,MAX integers, got '{text}'") from None
    if len(vals) != 3:
        raise DistillError(f"--trt-batches must be MIN,OPT,MAX integers, got '{text}'")
    return vals  # type: ignore[return-value]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a checkpoint to ONNX fp32/fp16/int8 (+ TensorRT), with parity and accuracy checks",
        description="Export RUN_DIR/checkpoints/best to ONNX, check ORT against PyTorch on real test images, "
        "quantize to int8 for the target runtime with per-domain accuracy checks and fp32 fallback of sensitive "
        "layers, and write DIR/export.json plus DIR/build_engine.sh for TensorRT.")
    p.add_argument("checkpoint", help="checkpoint folder (model.safetensors + student.json)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--precision", default="fp32",
                   help="comma-separated: fp32,fp16,int8 (default: fp32; fp32 is always written, as the parent)")
    p.add_argument("--data", default=None, metavar="ROOT",
                   help="ROOT/DOMAIN/CLASS/image data (default: the run's config.yaml; needed for int8)")
    p.add_argument("--eval-domains", nargs="+", default=None, help="domains to evaluate (default: all)")
    p.add_argument("--calib-domains", nargs="+", default=None,
                   help="labeled domains to calibrate on, train split (default: the run's source domains, else all)")
    p.add_argument("--target-domains", nargs="+", default=None,
                   help="domains the model will run on: their train images join calibration, unlabeled")
    p.add_argument("--calib-method", default="minmax", help="minmax | entropy | percentile (default: minmax)")
    p.add_argument("--calib-count", type=int, default=256, help="calibration images (default: 256)")
    p.add_argument("--eval-count", type=int, default=500, help="max test images per domain; 0 = all (default: 500)")
    p.add_argument("--int8-flavour", default="ort-cpu",
                   help="ort-cpu (u8 activations, fast on onnxruntime CPU) | tensorrt (symmetric s8) | both")
    p.add_argument("--max-drop", type=float, default=1.0,
                   help="max int8 top-1 disagreement with fp32 per domain, in points, on the calibration images "
                        "(label-free; it bounds the accuracy drop); beyond it sensitive layers stay float (default: 1.0)")
    p.add_argument("--reduce-range", action="store_true",
                   help="ort-cpu flavour: 7-bit weights, avoids int16 saturation on x86 CPUs without VNNI")
    p.add_argument("--max-fallback-layers", type=int, default=10,
                   help="cap on layers kept in float; at most 3x as many are tried (default: 10)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, >= 17 (default: 18)")
    p.add_argument("--exporter", default="dynamo", choices=["dynamo", "torchscript"],
                   help="torch.onnx exporter (default: dynamo; falls back to torchscript if it fails)")
    p.add_argument("--embedding", action="store_true", help="also output the projector 'embedding'")
    p.add_argument("--latency-batch", type=int, default=1, help="batch of the int8-vs-fp32 latency check")
    p.add_argument("--latency-iters", type=int, default=20, help="timed runs of that check (default: 20)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads for the latency check")
    p.add_argument("--trt-batches", default="1,8,32", help="TensorRT profile MIN,OPT,MAX batch (default: 1,8,32)")
    p.add_argument("--no-build-engine", action="store_true", help="never build TensorRT engines here")
    p.add_argument("--test-fraction", type=float, default=None,
                   help="dataset split used in training (default: the run's config.yaml, else 0.3)")
    p.add_argument("--split-seed", type=int, default=None,
                   help="dataset split seed used in training (default: the run's config.yaml, else 0)")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="share of train held out as val in training (default: the run's config.yaml, else 0.1)")
    p.add_argument("--class-map", default=None, help="folder -> class name map (default: the run's, else "
                   "ROOT/classnames.yaml)")
    p.set_defaults(func=run, _parser=p)


def run(args: argparse.Namespace) -> int:
    from distill.export import ExportConfig, export_checkpoint

    cfg = ExportConfig(
        precisions=_csv([args.precision]) or (), data_root=args.data, eval_domains=_csv(args.eval_domains),
        calib_domains=_csv(args.calib_domains), target_domains=_csv(args.target_domains) or (),
        calib_method=args.calib_method, calib_count=args.calib_count, eval_count=args.eval_count or None,
        int8_flavour=args.int8_flavour, max_drop=args.max_drop, max_fallback_layers=args.max_fallback_layers,
        opset=args.opset, exporter=args.exporter, with_embedding=args.embedding, latency_batch=args.latency_batch,
        latency_iters=args.latency_iters, threads=args.threads, trt_batches=_batches(args.trt_batches),
        build_engines=not args.no_build_engine, reduce_range=args.reduce_range, test_fraction=args.test_fraction, split_seed=args.split_seed,
        val_fraction=args.val_fraction,
        class_map=args.class_map)
    report = export_checkpoint(args.checkpoint, args.out, cfg)
    for m in report["models"]:
        acc = f", mean accuracy {100 * m['mean_accuracy']:.2f}%" if m.get("mean_accuracy") is not None else ""
        print(f"{args.out}/{m['file']}: {m['precision']}{'/' + m['flavour'] if m.get('flavour') else ''}{acc}",
              file=sys.stdout)
    return 0
