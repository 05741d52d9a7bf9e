"""A one-batch cache build: decode workers vs in-process (the default's rule for tiny sets, distill.utils.loaders).

    PYTHONPATH=. .venv/bin/python benchmarks/cache_workers.py [--data ../shared/data/pacs_mini] [--repeats 15]

Builds a cache of a tiny data set (one batch: pacs_mini's 40 photos at batch 64) with the built-in stand-in teacher
(random weights: its cost is the real one) ``--repeats`` times each way, interleaved in one process, and prints the
whole build's wall time per way (median, min) and the paired median ratio workers / in-process. Absolute times mean
nothing on a shared CPU; the ratio, measured side by side, is the figure.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from distill.data.folder import DomainFolder
from distill.teacher import Teacher
from distill.teacher.cache import CacheOptions, build_cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "pacs_mini"))
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--workers", type=int, default=1, help="the worker count compared with in-process (default 1)")
    args = ap.parse_args()
    torch.manual_seed(0)
    ds = DomainFolder(args.data, test_fraction=0.3)
    teacher = Teacher("distill-demo-vit", None, ds.classes, ["a photo of a {}."])
    times: dict[int, list[float]] = {0: [], args.workers: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for workers in ((0, args.workers) if r % 2 == 0 else (args.workers, 0)):  # alternate who goes first
                t = time.perf_counter()
                build_cache(ds, teacher, Path(tmp) / f"c{r}-{workers}", CacheOptions(views=1, batch_size=64),
                            num_workers=workers, progress=False)
                times[workers].append(time.perf_counter() - t)
    print(f"{len(ds)} images, one batch of 64, {args.repeats} repeats, interleaved; torch threads "
          f"{torch.get_num_threads()}")
    for workers, ts in times.items():
        print(f"workers={workers}: median {statistics.median(ts):.3f} s, min {min(ts):.3f} s")
    ratios = [w / z for w, z in zip(times[args.workers], times[0])]
    print(f"workers={args.workers} / in-process: paired median {statistics.median(ratios):.2f}x "
          f"(min-ratio {min(times[args.workers]) / min(times[0]):.2f}x)")


if __name__ == "__main__":
    main()
