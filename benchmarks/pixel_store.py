"""Pixel stores at the student's size: raw uint8 vs JPEG vs WebP, bytes per row and rows/s per worker.

Issue 20's target: a compressed pixel store >= 5x smaller than raw at 224 px, with its per-worker
throughput next to raw's. One run, one process, one torch thread (what one DataLoader worker does):

- builds one teacher cache (the tiny ``distill-demo-vit`` teacher, random weights: only its view
  params matter here) over photo-like 400x300 JPEGs (``benchmarks/photos.py``), then one pixel store
  per codec at ``--size`` through the one entry (``run_cache_build`` with ``PixelOptions``), timed
  (the time includes the entry's check of the complete cache: listing, the tiny teacher, the plan);
- prints each store's bytes per row on disk and its ratio to raw, and the mean absolute error of its
  decoded rows against the raw store's (raw is exact: the decode path's bytes);
- times a worker's read of every row (``TrainImages`` with the store, uint8 hand-off, batches
  collated as the trainer's loader does), interleaved over the codecs for ``--repeats`` rounds,
  the median reported, with the decode path (no store: decode the 400x300 JPEG, crop, resize)
  alongside.

    PYTHONPATH=. python benchmarks/pixel_store.py                 # 300 images x 2 views, ~1 min on 2 cores
    PYTHONPATH=. python benchmarks/pixel_store.py --codecs raw,jpeg:90,jpeg:75,webp:90 --images 300
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from photos import make_photos  # benchmarks/photos.py: this script's folder is on sys.path when it runs
from torch.utils.data import DataLoader

from distill.data.folder import DomainFolder
from distill.data.split import SplitKeys
from distill.teacher.cache import (
    CacheBuildConfig,
    CacheOptions,
    PixelOptions,
    TeacherCache,
    find_pixel_store,
    run_cache_build,
)
from distill.train import TrainImages, epoch_items

FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def cpu_line() -> str:
    """CPU model and the SIMD flags that matter for decoders and bf16 (from lscpu)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    info = dict(ln.split(":", 1) for ln in out.splitlines() if ":" in ln)
    flags = set(info.get("Flags", "").split())
    have = [f for f in FLAGS if f in flags]
    return (f"{info.get('Model name', '?').strip()}, {os.cpu_count()} cores; flags: {' '.join(have) or 'none'} "
            f"of {', '.join(FLAGS)}")


def rate(ds, batch: int) -> float:
    """rows/s of iterating all of ``ds`` in this process (workers=0: one worker's work)."""
    t0 = time.perf_counter()
    seen = sum(len(b[0]) for b in DataLoader(ds, batch_size=batch, num_workers=0))
    return seen / (time.perf_counter() - t0)


def parse_codecs(text: str) -> list[tuple[str, int | None]]:
    out = []
    for part in text.split(","):
        codec, _, q = part.strip().partition(":")
        out.append((codec, int(q) if q else (None if codec == "raw" else 90)))
    if out[0] != ("raw", None):
        raise SystemExit("--codecs must start with raw (the reference)")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=300, help="photo-like JPEGs to make (2 domains x 10 classes)")
    p.add_argument("--image-size", default="400x300", help="WxH of the JPEGs (400x300)")
    p.add_argument("--views", type=int, default=2, help="cached views per image (2)")
    p.add_argument("--size", type=int, default=224, help="student input size (224)")
    p.add_argument("--codecs", default="raw,jpeg:90,webp:90", help="codec[:quality],... (raw first)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-decode-path", action="store_true", help="skip timing the no-store decode path")
    p.add_argument("--data", default=None, help="use this image tree instead of making one")
    args = p.parse_args()
    torch.set_num_threads(1)
    codecs = parse_codecs(args.codecs)
    size = (args.size, args.size)

    tmp = Path(tempfile.mkdtemp(prefix="pixel_store_"))
    try:
        w, h = (int(v) for v in args.image_size.split("x"))
        data = Path(args.data) if args.data else make_photos(tmp / "data", args.images, (w, h), procs=1)
        ds = DomainFolder(data, test_fraction=0.05)
        base = tmp / "cache"
        build = CacheBuildConfig(data=data, out=base, arch="distill-demo-vit", pretrained="none",
                                 split=SplitKeys(test_fraction=0.05), workers=0, progress=False,
                                 options=CacheOptions(views=args.views, seed=0, batch_size=64))
        run_cache_build(build)
        stores, build_rate = {}, {}
        for codec, q in codecs:
            name = codec if q is None else f"{codec} q{q}"
            c = tmp / f"cache-{codec}-{q}"
            shutil.copytree(base, c)
            t0 = time.perf_counter()  # the entry finds the cache complete and adds the store (no teacher pass)
            run_cache_build(dataclasses.replace(build, out=c, pixels=PixelOptions(sizes=(size,), codec=codec,
                                                                                  quality=q)))
            dt = time.perf_counter() - t0
            store, _ = find_pixel_store(TeacherCache.open(c), size, "bicubic")
            stores[name], build_rate[name] = store, len(store) / dt
        cache = TeacherCache.open(base)
        rows = len(cache)
        nbytes = {n: sum(f.stat().st_size for f in s.path.glob("shard-*.safetensors")) / rows
                  for n, s in stores.items()}
        raw = stores["raw"]
        keys = list(zip(cache.rows["sample_index"].tolist(), cache.rows["view"].tolist()))
        mae = {n: statistics.fmean((raw.get(*k).float() - s.get(*k).float()).abs().mean().item() for k in keys)
               for n, s in stores.items()}

        items = epoch_items(ds.select(None, "train"), {d: i for i, d in enumerate(ds.domains)}, cache.views, 0, 0,
                            cache)
        vc = cache.view_config
        readers = {n: TrainImages(ds, items, size, "bicubic", vc, 0, pixels=s, uint8=True) for n, s in stores.items()}
        if not args.no_decode_path:
            readers["decode path (no store)"] = TrainImages(ds, items, size, "bicubic", vc, 0, uint8=True)
        for r in readers.values():  # warm the page cache and the decoders
            rate(torch.utils.data.Subset(r, range(min(args.batch, len(r)))), args.batch)
        rates: dict[str, list[float]] = {n: [] for n in readers}
        for _ in range(args.repeats):  # interleaved: load changes hit every reader alike
            for n, r in readers.items():
                rates[n].append(rate(r, args.batch))
        med = {n: statistics.median(v) for n, v in rates.items()}

        def spread(n: str) -> str:
            return f"{min(rates[n]):,.0f}-{max(rates[n]):,.0f}"

        print(f"date {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {cpu_line()}; load average "
              f"{os.getloadavg()[0]:.1f}")
        print(f"torch {torch.__version__}, torchvision {torchvision.__version__}; {len(items)} rows timed = "
              f"the train split's views ({args.views} per image) of {len(ds.samples)} {w}x{h} photo-like images; "
              f"stored at {size[0]}x{size[1]} bicubic; 1 process, 1 torch thread, batch {args.batch}, "
              f"{args.repeats} repeats")
        print(f"{'store':<24} {'bytes/row':>10} {'vs raw':>7} {'MAE':>8} {'read rows/s':>12} {'(min-max)':>13} "
              f"{'vs raw':>7} {'build rows/s':>13}")
        for n in readers:
            if n in stores:
                print(f"{n:<24} {nbytes[n]:>10,.0f} {nbytes['raw'] / nbytes[n]:>6.1f}x {mae[n]:>8.2f} "
                      f"{med[n]:>12,.0f} {spread(n):>13} {med[n] / med['raw']:>6.2f}x {build_rate[n]:>13,.1f}")
            else:
                print(f"{n:<24} {'':>10} {'':>7} {'':>8} {med[n]:>12,.0f} {spread(n):>13} {med[n] / med['raw']:>6.2f}x")
        for n in stores:
            if n != "raw":
                print(f"PIXEL_STORE {n}: {nbytes['raw'] / nbytes[n]:.1f}x smaller than raw (target >= 5x), "
                      f"{med[n]:,.0f} vs {med['raw']:,.0f} rows/s per worker ({med[n] / med['raw']:.2f}x raw's); "
                      f"1M images x 8 views: {8e6 * nbytes[n] / 1e12:.2f} TB vs {8e6 * nbytes['raw'] / 1e12:.2f} TB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
