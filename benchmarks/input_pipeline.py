"""Training input pipeline, img/s per worker at the student's size: decoding vs the cache's pixel store.

One process does what one DataLoader worker does (``TrainImages`` items collated into batches,
one torch thread), on photo-like 400x300 JPEGs, side by side in one run:

- before: decode the JPEG, crop + resize the cached view to 224 px (PIL bicubic), to float;
- after:  read the view's 224 px uint8 pixels from the cache's pixel store, handed over as uint8
  (what the trainer's loader does: ``Trainer._batch`` makes the floats on the device).

Both give the same tensors bit for bit (tests/teacher/cache/test_pixels.py); the figure is
their rate ratio (target >= 3x). Also printed: the one-time cost of writing the pixel store and
the cache build's decode + preprocess rate per worker (the teacher pass's input side), with
the workers handing over normalized floats (before) or 8-bit pixels (after).
The cache uses the tiny ``distill-demo-vit`` teacher (random weights): its view params are
what matters here, not its outputs.

    python benchmarks/input_pipeline.py --images 400 --items 360
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
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
from distill.teacher.cache.build import view_policy_of
from distill.teacher.cache.inputs import ImageViews, ViewDraws
from distill.teacher.clip import Teacher
from distill.train import TrainImages, epoch_items


def rate(ds, n: int, batch: int) -> float:
    """img/s of iterating ``n`` items of ``ds`` in this process (workers=0: one worker's work)."""
    sub = torch.utils.data.Subset(ds, range(min(n, len(ds))))
    t0 = time.perf_counter()
    seen = sum(len(b[0]) for b in DataLoader(sub, batch_size=batch, num_workers=0))
    return seen / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=400, help="JPEGs to make (2 domains x 10 classes)")
    p.add_argument("--image-size", default="400x300", help="WxH of the JPEGs")
    p.add_argument("--size", type=int, default=224, help="student input size")
    p.add_argument("--views", type=int, default=2, help="cached views per image")
    p.add_argument("--items", type=int, default=360, help="training items timed per repeat")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--procs", type=int, default=None, help="processes making the JPEGs (default: cores)")
    p.add_argument("--data", default=None, help="use this JPEG tree instead of making one")
    args = p.parse_args()
    torch.set_num_threads(1)

    tmp = Path(tempfile.mkdtemp(prefix="input_pipeline_"))
    try:
        w, h = (int(v) for v in args.image_size.split("x"))
        data = Path(args.data) if args.data else make_photos(tmp / "data", args.images, (w, h), procs=args.procs)
        ds = DomainFolder(data, test_fraction=0.05)
        cache_dir = tmp / "cache"
        size = (args.size, args.size)
        build = CacheBuildConfig(data=data, out=cache_dir, arch="distill-demo-vit", pretrained="none",
                                 split=SplitKeys(test_fraction=0.05), workers=0, progress=False,
                                 options=CacheOptions(views=args.views, seed=0, batch_size=64))
        t0 = time.perf_counter()
        run_cache_build(build)
        t_cache = time.perf_counter() - t0
        t0 = time.perf_counter()  # the same entry adds the store to the complete cache (no teacher pass)
        run_cache_build(dataclasses.replace(build, pixels=PixelOptions(sizes=(size,))))
        t_store = time.perf_counter() - t0
        cache = TeacherCache.open(cache_dir)
        store, line = find_pixel_store(cache, size, "bicubic")
        samples = ds.select(None, "train")
        items = epoch_items(samples, {d: i for i, d in enumerate(ds.domains)}, cache.views, 0, 0, cache)
        vc = cache.view_config
        before = TrainImages(ds, items, size, "bicubic", vc, 0)
        after = TrainImages(ds, items, size, "bicubic", vc, 0, pixels=store, uint8=True)
        # the teacher pass's input side at ViT-B-32's 224 px: decode + open_clip preprocess + views
        vit = Teacher("ViT-B-32", None, ds.classes, ["a photo of a {}."]) if args.size == 224 else None
        rate(before, args.batch, args.batch), rate(after, args.batch, args.batch)  # warm the page cache
        b, a, cf, cu = [], [], [], []
        for _ in range(args.repeats):
            b.append(rate(before, args.items, args.batch))
            a.append(rate(after, args.items, args.batch))
            if vit is not None:  # before: workers hand over normalized floats; after: uint8
                for uint8, out in ((False, cf), (True, cu)):
                    views = ImageViews(ds.files(ds.samples), ViewDraws(args.views, 0, view_policy_of(cache.manifest.views)),
                                       vit.preprocess, vit.preprocess_info, uint8=uint8)
                    n = min(args.items // args.views, len(views))
                    t0 = time.perf_counter()
                    for i in range(n):
                        views[i]
                    out.append(n * args.views / (time.perf_counter() - t0))
        mb, ma = statistics.median(b), statistics.median(a)
        print(f"{len(items)} training items ({cache.views} views/image) from {args.images} {w}x{h} JPEGs "
              f"(~{sum(f.stat().st_size for f in data.rglob('*.jpg')) / max(1, args.images) / 1e3:.0f} kB), "
              f"student {args.size} px bicubic, batch {args.batch}, 1 torch thread, {os.cpu_count()} cores, "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"  {line}")
        for r in range(args.repeats):
            print(f"  repeat {r}: before (decode + view + resize) {b[r]:7.1f} img/s   after (pixel store) "
                  f"{a[r]:7.1f} img/s   x{a[r] / b[r]:.1f}")
        print(f"INPUT_PIPELINE per worker: before {mb:.1f} img/s, after {ma:.1f} img/s, "
              f"speed-up x{ma / mb:.1f} (target >= 3)")
        rows = len(cache)
        print(f"one-time costs (1 process): cache build with the 32 px demo teacher {rows / t_cache:.1f} rows/s; "
              f"pixel store {size[0]}x{size[1]} {rows / t_store:.1f} rows/s "
              f"({sum(f.stat().st_size for f in store.path.glob('*.safetensors')) / rows / 1e3:.0f} kB/row)")
        if cf:
            f, u = statistics.median(cf), statistics.median(cu)
            print(f"CACHE_BUILD_INPUT per worker (decode + ViT-B-32's open_clip 224 px preprocess + views): "
                  f"floats {f:.1f} rows/s, uint8 hand-off {u:.1f} rows/s, x{u / f:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
