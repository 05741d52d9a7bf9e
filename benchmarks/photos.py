"""Photo-like JPEGs for benchmarks: smooth colour gradients + sensor-like noise, quality 90.

Random noise images decode unlike photos (no smooth areas for the JPEG coder); gradients plus
mild noise give ~45 kB per 400x300 image, close to real photos of that size, so decode costs
are realistic. Laid out as ROOT/d{0,1}/c{0..C-1}/NNNNNN.jpg (2 domains x C classes).

    python benchmarks/photos.py ROOT N [--size 400x300] [--classes 10] [--procs 16]
"""
from __future__ import annotations

import argparse
import os
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image


def one(i: int, root: Path, size: tuple[int, int], classes: int) -> None:
    """Image ``i``: domain ``i % 2``, class ``(i // 2) % classes``; a pure function of ``i``."""
    w, h = size
    rng = np.random.default_rng(i)
    k = (i // 2) % classes
    p = root / f"d{i % 2}" / f"c{k}" / f"{i:06d}.jpg"
    p.parent.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b, ph = rng.uniform(0.005, 0.05, 3)
    base = np.stack([np.sin(a * xx + ph + k), np.cos(b * yy + k * 0.3), np.sin(a * xx + b * yy)], -1) * 90 + 128
    if i % 2:
        base = 255 - base  # the second domain: inverted colours
    img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(p, quality=90)


def make_photos(root: str | Path, n: int, size: tuple[int, int] = (400, 300), classes: int = 10,
                procs: int | None = None) -> Path:
    """Write ``n`` photo-like JPEGs of ``size`` (W, H) under ``root`` with ``procs`` processes."""
    root = Path(root)
    procs = procs or os.cpu_count() or 1
    job = partial(one, root=root, size=size, classes=classes)
    if procs == 1 or n < 64:
        for i in range(n):
            job(i)
    else:
        with Pool(procs) as pool:
            pool.map(job, range(n), chunksize=64)
    return root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("n", type=int)
    p.add_argument("--size", default="400x300", help="WxH (400x300)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--procs", type=int, default=None, help="processes (default: all cores)")
    a = p.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    make_photos(a.root, a.n, (w, h), a.classes, a.procs)
    print(f"images {a.n} ({w}x{h} JPEG, 2 domains x {a.classes} classes) in {a.root}")


if __name__ == "__main__":
    main()
