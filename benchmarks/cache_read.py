"""Time to fetch one training batch's cached teacher rows vs one student training step.

A cache lookup sits on the training loop's critical path; it should cost < 5% of a step of
even a small student. Builds a synthetic cache at a realistic size (fp16 rows, D=512), opens
it with ``TeacherCache.open`` and times ``lookup`` of B random (sample, view) pairs against a
timm student's forward + backward + SGD step at 224 px, side by side in one run.

    .venv/bin/python benchmarks/cache_read.py --student mobilenetv3_small_050 --batch-size 64

``--verify``: only time ``TeacherCache.open`` with and without the sha256 check of every shard
(``verify=True``, the default since issue 13, vs ``verify=False``), median of ``--repeats`` opens each,
interleaved, with the page cache warm.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from distill.teacher.cache import TeacherCache
from distill.teacher.cache.format import FORMAT, FORMAT_VERSION, MANIFEST, TEXT_EMBEDDINGS, shard_name, write_shard
from distill.utils.io import atomic_write_json, sha256_file


def synthetic_cache(out: Path, images: int, views: int, dim: int, classes: int, shard_size: int) -> Path:
    """Write a cache directory with random rows in the real format (no teacher run)."""
    g = torch.Generator().manual_seed(0)
    out.mkdir(parents=True)
    shards = []
    for k, start in enumerate(range(0, images, shard_size)):
        n = min(shard_size, images - start)
        si = torch.arange(start, start + n).repeat_interleave(views)
        rows = {
            "image_emb": F.normalize(torch.randn(n * views, dim, generator=g), dim=1).half(),
            "logits": torch.randn(n * views, classes, generator=g).half(),
            "sample_index": si, "view": torch.arange(views, dtype=torch.int16).repeat(n),
            "domain": (si % 4).to(torch.int16), "label": (si % classes).to(torch.int16),
            "split": (si % 10 < 3).to(torch.uint8), "view_params": torch.rand(n * views, 5, generator=g),
        }
        write_shard(out / shard_name(k), rows, [])
        shards.append({"file": shard_name(k), "samples": [start, start + n], "rows": n * views,
                       "sha256": sha256_file(out / shard_name(k))})
    save_file({"text_embeddings": torch.randn(classes, dim, generator=g)}, str(out / TEXT_EMBEDDINGS))
    atomic_write_json(out / MANIFEST, {
        "format": FORMAT, "format_version": FORMAT_VERSION, "teacher": {"arch": "synthetic", "pretrained": None},
        "templates": ["{}"], "classes": [f"c{i}" for i in range(classes)],
        "dataset": {"fingerprint": "synthetic", "domains": ["d0", "d1", "d2", "d3"], "images": images},
        "views": {"count": views, "seed": 0, "augment": {}}, "dtype": "float16", "skipped": [], "shards": shards,
    })
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--student", default="mobilenetv3_small_050")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=345)
    p.add_argument("--lookups", type=int, default=2000)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--verify", action="store_true", help="only time open() with vs without the shard sha256 check")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    if args.verify:
        return verify_cost(args)

    tmp = Path(tempfile.mkdtemp(prefix="cache_read_"))
    try:
        path = synthetic_cache(tmp / "cache", args.images, args.views, args.dim, args.classes, 1024)
        t0 = time.perf_counter()
        cache = TeacherCache.open(path)
        t_open = time.perf_counter() - t0
        B = args.batch_size
        g = torch.Generator().manual_seed(1)
        batches = [(torch.randint(0, args.images, (B,), generator=g), torch.randint(0, args.views, (B,), generator=g))
                   for _ in range(args.lookups)]
        cache.lookup(*batches[0])  # warm-up
        t0 = time.perf_counter()
        for si, v in batches:
            cache.lookup(si, v)
        t_lookup = (time.perf_counter() - t0) / args.lookups

        model = timm.create_model(args.student, pretrained=False, num_classes=args.classes)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.randn(B, 3, 224, 224)
        rows = cache.lookup(*batches[0])

        def step() -> None:
            out = model(x)
            loss = F.kl_div(F.log_softmax(out / 4, 1), F.softmax(rows["logits"] / 4, 1), reduction="batchmean")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step()  # warm-up
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        t_step = float(np.median(times))
        print(f"cache: {len(cache)} rows ({args.images} images x {args.views} views), D={args.dim}, "
              f"C={args.classes}, fp16; open {t_open:.2f} s")
        print(f"lookup of {B} rows:        {t_lookup * 1e3:8.3f} ms  (mean of {args.lookups})")
        print(f"{args.student} train step, batch {B} at 224, torch threads {torch.get_num_threads()}: "
              f"{t_step * 1e3:8.1f} ms  (median of {args.steps})")
        print(f"ratio lookup / step: {100 * t_lookup / t_step:.3f}% (target < 5%); {os.cpu_count()} cores, "
              f"load average {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def verify_cost(args) -> None:
    """Median time of TeacherCache.open(verify=True) vs (verify=False) on one synthetic cache."""
    tmp = Path(tempfile.mkdtemp(prefix="cache_verify_"))
    try:
        path = synthetic_cache(tmp / "cache", args.images, args.views, args.dim, args.classes, 1024)
        size = sum(f.stat().st_size for f in path.glob("shard-*.safetensors"))
        TeacherCache.open(path)  # warm the page cache
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeats):
            for verify in (False, True):
                t0 = time.perf_counter()
                TeacherCache.open(path, verify=verify)
                times[verify].append(time.perf_counter() - t0)
        off, on = (float(np.median(times[v])) for v in (False, True))
        print(f"cache: {args.images * args.views} rows ({args.images} images x {args.views} views), D={args.dim}, "
              f"C={args.classes}, fp16, {size / 1e6:.0f} MB of shards in {len(list(path.glob('shard-*')))} files")
        print(f"open, verify=False: {off:.3f} s   open, verify=True: {on:.3f} s   (median of {args.repeats}); "
              f"sha256 adds {on - off:.3f} s = {size / 1e6 / max(on - off, 1e-9):.0f} MB/s; "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
