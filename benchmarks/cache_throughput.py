"""Cache-build throughput vs bare teacher-forward throughput on the same images.

The build decodes, preprocesses and writes while the teacher runs (DataLoader workers, pinned
prefetch), so it should reach >= 0.9x the teacher's own speed. Both are measured side by side
in one run, alternating, on a synthetic JPEG tree with a real-size teacher (random weights).
The build runs through the one entry (``run_cache_build(CacheBuildConfig(...), teacher=...)``) with
the very teacher the bare forward times passed in, so both figures are of the same weights; the
build's time includes listing the image tree, as ``distill cache build``'s does.

    .venv/bin/python benchmarks/cache_throughput.py --arch ViT-B-32 --images 256
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from distill.data.folder import DomainFolder
from distill.teacher.cache import CacheBuildConfig, CacheOptions, run_cache_build
from distill.teacher.clip import Teacher


def make_images(root: Path, n: int, size: tuple[int, int], seed: int = 0) -> None:
    """``n`` photo-like JPEGs (smooth gradients + noise) in 2 domains x 2 classes."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        d, c = ("d0", "d1")[i % 2], ("c0", "c1")[(i // 2) % 2]
        (root / d / c).mkdir(parents=True, exist_ok=True)
        a, b, ph = rng.uniform(0.005, 0.05, 3)
        base = np.stack([np.sin(a * xx + ph), np.cos(b * yy), np.sin(a * xx + b * yy)], -1) * 90 + 128
        img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / d / c / f"{i:05d}.jpg", quality=90)


def bare_forward(teacher, x: torch.Tensor, batch_size: int) -> float:
    """Seconds for the teacher alone over preprocessed tensors already in memory. x: [N, 3, H, W]."""
    device = teacher.text_embeddings.device
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            emb, logits = teacher(x[i:i + batch_size].to(device, non_blocking=True))
            emb.cpu(), logits.cpu()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="ViT-B-32")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--image-size", default="256,256", help="W,H of the JPEGs (PACS images are 227x227)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="build decode workers (default: the builder's)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--data", default=None, help="an existing image tree (ROOT/DOMAIN/CLASS/*) instead of making "
                                                "--images JPEGs (benchmarks/photos.py makes one in parallel)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cache_throughput_"))
    try:
        if args.data is None:
            make_images(tmp / "data", args.images, tuple(int(v) for v in args.image_size.split(",")))
        ds = DomainFolder(args.data or tmp / "data")
        args.images = len(ds)
        torch.manual_seed(0)
        teacher = Teacher(args.arch, None, ds.classes, device=args.device)
        x = torch.stack([teacher.preprocess(Image.open(ds.path(s)).convert("RGB")) for s in ds.samples])
        if args.device.startswith("cuda"):
            x = x.pin_memory()
        bare_forward(teacher, x[: args.batch_size], args.batch_size)  # warm-up
        print(f"{args.arch} (random weights) at {teacher.preprocess_info.size}, {args.images} JPEGs "
              f"{args.image_size if args.data is None else 'from ' + args.data}, batch {args.batch_size}, device {args.device}, "
              f"torch threads {torch.get_num_threads()}, {os.cpu_count()} cores, "
              f"load average {os.getloadavg()[0]:.1f}")
        bare, build = [], []
        for r in range(args.repeats):
            bare.append(args.images / bare_forward(teacher, x, args.batch_size))
            out = tmp / f"cache{r}"
            t0 = time.perf_counter()
            run_cache_build(CacheBuildConfig(data=ds.root, out=out, arch=args.arch, pretrained="none",
                                             options=CacheOptions(batch_size=args.batch_size, shard_size=128),
                                             workers=args.workers, progress=False), teacher=teacher)
            build.append(args.images / (time.perf_counter() - t0))
            print(f"  run {r}: bare forward {bare[-1]:7.1f} img/s   cache build {build[-1]:7.1f} img/s   "
                  f"ratio {build[-1] / bare[-1]:.3f}")
        b, c = float(np.median(bare)), float(np.median(build))
        print(f"median: bare forward {b:.1f} img/s, cache build {c:.1f} img/s, ratio {c / b:.3f} (target >= 0.9); "
              f"load average now {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
