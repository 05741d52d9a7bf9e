"""Cost of a function-matching epoch from the cache: fm vs kd vs erm, the same cache, student and batch.

Issue 12's cost target: a function-matching epoch from the cache <= 1.2x a kd epoch. Each strategy
is built from its ``configs/<name>.yaml`` recipe, pointed at one policy cache (built with
``distill cache build --policy fm --store-pixels 32``, e.g. the demo's ``demo_out/cache``), and
only :meth:`Trainer.train_one_epoch` is timed (no evaluation): one warm-up epoch, then ``--reps``
epochs per strategy, interleaved (erm, kd, fm, erm, kd, fm, ...) so machine noise hits them alike,
reported as the median. With the pixel store a mixed view is one read, so fm = kd + the mix-label
lookup and the ratio should be ~1.0; ``--no-pixels`` times the decode path instead (fm renders each
mixed view from two decoded images). ``fm_unlabeled`` (ratio 1: twice the images per step) is
reported apart, not against the target.

Usage:
    .venv/bin/python benchmarks/epoch_cost.py [--cache demo_out/cache] [--data demo_out/data/digits-full-seed0]
        [--reps 3] [--threads 1] [--batch-size B] [--no-pixels] [--only erm,kd,fm,fm_unlabeled]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from distill.recipes import load_recipe
from distill.records import CACHE_PIXELS_PREFIX
from distill.train import Trainer, build
from distill.train.logger import RunLog

TARGET = 1.2  # fm epoch / kd epoch
APART = ("fm_unlabeled",)  # more images per step: reported, not held to the target


def without_pixels(cache: Path, into: Path) -> Path:
    """A view of ``cache`` without its pixel stores (links to everything else): training decodes."""
    into.mkdir(parents=True, exist_ok=True)
    for entry in cache.iterdir():
        if not entry.name.startswith(CACHE_PIXELS_PREFIX):
            (into / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    return into


def timed_epoch(trainer: Trainer, epoch: int) -> float:
    """Seconds of one :meth:`Trainer.train_one_epoch` (loader + steps; no evaluation, no checkpoint)."""
    log = RunLog(trainer.run_dir, trainer.setup.device, False, False, trainer.global_step)  # no writer, no bar
    trainer.epoch, trainer.step_in_epoch = epoch, 0
    if trainer.setup.device.type == "cuda":
        torch.cuda.synchronize(trainer.setup.device)
    t0 = time.perf_counter()
    trainer.train_one_epoch(epoch, log)
    if trainer.setup.device.type == "cuda":
        torch.cuda.synchronize(trainer.setup.device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path("demo_out/cache"), help="a policy cache with a pixel store")
    ap.add_argument("--data", type=Path, default=Path("demo_out/data/digits-full-seed0"), help="its dataset root")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-epoch-cost"))
    ap.add_argument("--only", default="erm,kd,fm,fm_unlabeled", help="recipes to time (kd is the reference)")
    ap.add_argument("--reps", type=int, default=3, help="timed epochs per strategy after one warm-up epoch")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--batch-size", type=int, default=None, help="override the recipes' batch (the same for all)")
    ap.add_argument("--no-pixels", action="store_true", help="time the decode path: hide the cache's pixel stores")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = args.only.split(",")
    if "kd" not in names:
        raise SystemExit("--only must include kd (the reference)")

    with tempfile.TemporaryDirectory() as tmp:
        cache = without_pixels(args.cache, Path(tmp) / "cache") if args.no_pixels else args.cache
        trainers = {name: Trainer(build(load_recipe(name, {
            "data.root": args.data, "cache": cache, "run.out": args.out / name, "run.progress": False,
            "run.workers": 0 if not args.no_pixels else 2, "optim.epochs": args.reps + 1,
            **({"optim.batch_size": args.batch_size} if args.batch_size else {})}))) for name in names}
        for name, trainer in trainers.items():
            print(f"{name}: {trainer.pixel_store()[1]}", flush=True)
        times: dict[str, list[float]] = {n: [] for n in names}
        for epoch in range(args.reps + 1):
            for name, trainer in trainers.items():
                seconds = timed_epoch(trainer, epoch)
                if epoch > 0:  # epoch 0 warms up (allocators, page cache, workers)
                    times[name].append(seconds)
        steps = trainers["kd"].steps_per_epoch

    med = {n: statistics.median(v) for n, v in times.items()}
    path = "decode path (--no-pixels)" if args.no_pixels else "pixel store"
    print(f"\n### Epoch cost ({path}; seconds per Trainer.train_one_epoch, {steps} kd steps; median of "
          f"{args.reps} interleaved epochs after a warm-up; {args.threads} thread(s))\n")
    print("| strategy | s / epoch | x kd | epochs (s) |\n|---|---|---|---|")
    for n in names:
        note = " (more images per step; not held to the target)" if n in APART else ""
        print(f"| {n}{note} | {med[n]:.2f} | {med[n] / med['kd']:.2f} | "
              + ", ".join(f"{t:.2f}" for t in times[n]) + " |")
    if "fm" in med:
        ratio = med["fm"] / med["kd"]
        print(f"\nfm / kd epoch time = {ratio:.2f} -> target (<= {TARGET}) {'met' if ratio <= TARGET else 'MISSED'}")


if __name__ == "__main__":
    main()
