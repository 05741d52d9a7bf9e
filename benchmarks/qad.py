"""PTQ vs QAD: int8 top-1 disagreement with fp32 per domain (distill qad), over seeds.

    .venv/bin/python benchmarks/qad.py                              # demo student if demo_out/ exists, else trains one
    .venv/bin/python benchmarks/qad.py --arch mobilenetv3_large_100 --seeds 0,1,2 --train-steps 300
    .venv/bin/python benchmarks/qad.py --checkpoint demo_out/runs/fm_unlabeled/checkpoints/best

Without ``--checkpoint`` and without ``demo_out/runs/fm_unlabeled/checkpoints/best``, each seed
trains ``--arch`` from scratch at 32 px on the built-in digits' mnist + mnist_m (plain cross-entropy,
benchmarks/export_latency.py's recipe, the students of its int8 table), then runs ``distill qad``
(calibration = 256 train-split images of the source domains + the target domains, unlabeled; held-out =
the test split). Prints per-domain PTQ and QAD disagreement (points, mean ± std over seeds) for the
calibration images (which QAD trained on) and the held-out test images; ``--results`` appends the
table to benchmarks/RESULTS.md. Keep it under ~3 minutes on a shared 2-core machine: the sizes are flags.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from distill.data.builtin import materialize  # noqa: E402
from distill.export.qad import qad  # noqa: E402
from distill.export.qad_config import QADConfig, QADRecord  # noqa: E402

DEMO_CHECKPOINT = ROOT / "demo_out" / "runs" / "fm_unlabeled" / "checkpoints" / "best"
SOURCES, TARGETS = ("mnist", "mnist_m"), ("optdigits", "mnist_c")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cpu_flags() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = info.get("Flags", "").split()
    wanted = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{info.get('Model name', '?').strip()}, {info.get('CPU(s)', '?').strip()} CPUs, flags: {' '.join(wanted)}"


def one_seed(args: argparse.Namespace, seed: int, work: Path, data_root: Path | None) -> QADRecord:
    if args.checkpoint:
        ckpt, root, calib, targets = Path(args.checkpoint), None, None, ()
    else:
        from export_latency import train  # the int8 table's students (benchmarks/export_latency.py)

        t0 = time.time()
        ckpt = train(args.arch, data_root, work / f"{args.arch}-s{seed}", list(SOURCES), args.train_steps, seed)
        log(f"{args.arch} seed {seed}: trained {args.train_steps} steps in {time.time() - t0:.0f}s")
        root, calib, targets = str(data_root), SOURCES, TARGETS
    cfg = QADConfig(checkpoint=str(ckpt), out_dir=str(work / f"qad-s{seed}"), flavour=args.flavour, data_root=root,
                    calib_domains=calib, target_domains=targets, calib_count=args.calib_count,
                    eval_count=args.eval_count, epochs=args.epochs, optimizer=args.optimizer, lr=args.lr,
                    temperature=args.temperature,
                    batch_size=args.batch_size, seed=seed)
    return qad(cfg, log=lambda s: log("  " + s))


def cell(values: list[float]) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def table(records: list[QADRecord]) -> list[str]:
    lines = ["| domain | PTQ calib | QAD calib | PTQ test | QAD test |", "|---|---|---|---|---|"]
    first = records[0]
    for d in dict.fromkeys([*first.ptq.calibration, *first.ptq.test]):
        def get(part: str, which: str, d: str = d) -> list[float]:
            return [getattr(getattr(r, which), part)[d] for r in records if d in getattr(getattr(r, which), part)]
        ptq_c, qad_c, ptq_t, qad_t = get("calibration", "ptq"), get("calibration", "qad"), get("test", "ptq"), get(
            "test", "qad")
        lines.append(f"| {d} | {cell(ptq_c) if ptq_c else '-'} | "
                     f"{cell(qad_c) if qad_c else '-'} | {cell(ptq_t) if ptq_t else '-'} | {cell(qad_t) if qad_t else '-'} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help=f"a trained student (default: {DEMO_CHECKPOINT} if present)")
    ap.add_argument("--arch", default="mobilenetv3_small_050", help="trained from scratch when no checkpoint")
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--flavour", default="ort-cpu")
    ap.add_argument("--calib-count", type=int, default=256)
    ap.add_argument("--eval-count", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=None, help="default: the optimizer's (distill qad's)")
    ap.add_argument("--optimizer", default="sgd", help="sgd | adamw (distill qad's default: sgd)")
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--json", default=None, help="also write the records here")
    args = ap.parse_args()
    if args.checkpoint is None and DEMO_CHECKPOINT.exists():
        args.checkpoint = str(DEMO_CHECKPOINT)
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="qad-bench-") as tmp:
        work = Path(tmp)
        data_root = None if args.checkpoint else materialize(work / "digits", quick=False)
        records = [one_seed(args, s, work, data_root) for s in seeds]
    what = args.checkpoint or f"{args.arch} trained {args.train_steps} steps from scratch (32 px, mnist + mnist_m)"
    print(f"PTQ vs QAD ({args.flavour}), top-1 disagreement with fp32 in points, {what}; "
          f"seeds {args.seeds}; {args.epochs} QAD epochs, {args.optimizer} lr {args.lr or 'default'}, T {args.temperature}; "
          f"{time.time() - t0:.0f}s on {cpu_flags()}")
    print("\n".join(table(records)))
    worst = [r.qad.worst_calibration for r in records]
    print(f"worst-domain QAD calibration disagreement per seed: {', '.join(f'{w:.2f}' for w in worst)} "
          f"(target <= 1 point: {'reached' if max(worst) <= 1.0 else 'NOT reached'})")
    if args.json:
        Path(args.json).write_text(json.dumps([r.to_dict() for r in records], indent=1))


if __name__ == "__main__":
    main()
