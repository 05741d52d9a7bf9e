"""``distill bench``: latency percentiles, throughput and memory as JSON lines."""
from __future__ import annotations

import argparse
import json
import sys

from distill.bench.edge_runner import (
    RUNTIMES,
    add_bench_arguments,
    check_bench_out,
    cli_flag,
    parse_batches,
    write_jsonl,
)
from distill.bench.run import TorchOptions, bench_model
from distill.bench.torch_runner import COMPILE_MODES, MEMORY_FORMATS
from distill.errors import DistillError
from distill.spelling import option_names

# bench_model's option -> the flag that sets it: the stage's messages name them so (distill/spelling.py); from Python
# (distill.api.bench) they name the keywords
FLAGS = {key: cli_flag(key) for key in ("runtime", "batch", "threads", "warmup", "iters", "out", "profile", "topk",
                                        "interleave", "device", "precision", "compile", "memory_format")}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="latency of a checkpoint, ONNX file, TensorRT engine or export folder",
        description="Warm up, time repeated runs, and write one JSON line per (model, runtime, batch): "
        "p50/p90/p99 latency, throughput, peak memory, device and library versions. The same code runs "
        "on devices as distill/bench/edge_runner.py (numpy + onnxruntime or tensorrt only).")
    p.add_argument("model", nargs="+",
                   help=".onnx, .engine/.plan, a checkpoint folder (torch), an export folder or a distill qad folder "
                        "(its int8 files); several with "
                        "--interleave to compare them")
    add_bench_arguments(p, RUNTIMES, default_runtime=None)
    t = p.add_argument_group("runtime torch (a checkpoint folder)")
    t.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    t.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="weights and activations (fp16: CUDA only) (default: fp32)")
    t.add_argument("--compile", choices=COMPILE_MODES, default="none",
                   help="torch.compile mode; reduce-overhead = CUDA graphs. Compile time is reported apart as "
                        "compile_s (default: none, eager)")
    t.add_argument("--memory-format", choices=MEMORY_FORMATS, default="auto",
                   help="auto = channels_last on CUDA, contiguous on CPU (default: auto)")
    p.set_defaults(func=run, _parser=p, interrupt_hint="nothing was saved; rerun the same command (it starts over)")


def run(args: argparse.Namespace) -> int:
    try:
        batches = tuple(parse_batches(args.batch))
        if args.out:
            check_bench_out(args.out)  # before timing anything: an unwritable --out must not cost the results
    except ValueError as e:
        raise DistillError(str(e)) from None
    written: list[dict] = []

    def sink(records: list[dict]) -> None:  # each model's records as soon as measured: an interrupt keeps them
        if args.out:
            write_jsonl(records, args.out)
        else:
            for r in records:
                print(json.dumps(r), flush=True)
        written.extend(records)
        args.interrupt_hint = (f"kept the {len(written)} record(s) of the models that finished"
                               + (f" in {args.out}" if args.out else " (printed above)") + "; rerun for the rest")

    with option_names(FLAGS):
        bench_model(args.model, args.runtime, batches, args.threads, args.warmup, args.iters, args.profile,
                    args.topk, log=lambda s: print(s, file=sys.stderr),
                    torch_options=TorchOptions(args.device, args.precision, args.compile, args.memory_format),
                    interleave=args.interleave, sink=sink)
    if args.out:
        print(f"wrote {len(written)} record(s) to {args.out}", file=sys.stderr)
    return 0
