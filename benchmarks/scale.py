"""Scale: what a teacher cache costs at 10^6 rows and beyond (issue "Scale"), printed as figures.

Section ``cache`` (this file's one section so far):

1. writes a synthetic N-row cache through the real writer (``write_shard`` shards,
   :class:`~distill.teacher.cache.shards.ResumableShards` hashing them and recording the hashes,
   :class:`~distill.records.CacheManifest`), fp16, default 1M rows at D=768, C=1000 (not through the one
   build entry ``run_cache_build``: there is no teacher, one random block of outputs stands in for it);
2. opens it (``TeacherCache.open``) and prints the open time and the anonymous memory (``RssAnon`` of
   ``/proc/self/status``: what is not file-backed, so not shared through the page cache) it added, then
   gathers random batches (``lookup``) and prints the anonymous memory again and the time per batch;
3. prints bytes per row of the compact layouts (full / no stored logits / top-100 without embeddings) at
   ViT-B/32 (D=512) and at ViT-L/14 (D=768), C=1000, from small caches written the same way;
4. prints an extrapolation to ImageNet-1k x 8 views, ViT-L/14, 8 ranks: disk, RAM per rank, open time.

Another section (e.g. ``train``: training memory at 10k vs 100k images) goes into :data:`SECTIONS` as one
function ``(args) -> None`` with its own flags in :func:`add_flags`.

    .venv/bin/python benchmarks/scale.py                       # cache section, 1M rows (~1-2 min on 2 cores)
    .venv/bin/python benchmarks/scale.py --rows 100000 --keep /tmp/c
"""
from __future__ import annotations

import argparse
import datetime as _dt
import multiprocessing as mp
import re
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import distill
from distill.records import TEXT_EMBEDDINGS, CacheBuildPlan, CacheManifest, CacheRowLayout
from distill.teacher.cache import TeacherCache
from distill.teacher.cache.build import REFUSALS
from distill.teacher.cache.compact import compact_outputs, manifest_columns, output_columns
from distill.teacher.cache.format import COMPACT_VERSION, FORMAT, FORMAT_VERSION, write_shard
from distill.teacher.cache.mapped import VERIFIED_FILE
from distill.teacher.cache.shards import ResumableShards
from distill.utils.io import sha256_file

IMAGENET_TRAIN = 1_281_167


def rss(kind: str = "Anon") -> int:
    """Bytes of this process's resident memory of a kind: ``Anon`` (RssAnon: not file-backed) or ``File``."""
    return int(re.search(rf"Rss{kind}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


def measure_open(path: str, batches: int, batch_size: int) -> dict:
    """In a fresh process: open time, anonymous memory added by open and by ``batches`` random lookups."""
    torch.set_num_threads(1)  # as a DataLoader worker or one of 8 ranks would
    base, base_file = rss(), rss("File")
    t = time.perf_counter()
    cache = TeacherCache.open(path)
    open_s = time.perf_counter() - t
    opened = rss() - base
    g = torch.Generator().manual_seed(0)
    si, view = cache.index["sample_index"], cache.index["view"].long()
    t = time.perf_counter()
    for _ in range(batches):
        r = torch.randint(0, len(cache), (batch_size,), generator=g)
        cache.lookup(si[r], view[r])
    return {"open_s": open_s, "open_anon": opened, "batch_s": (time.perf_counter() - t) / batches,
            "gathered_anon": rss() - base, "gathered_file": rss("File") - base_file}


# ---------------------------------------------------------------------- a synthetic cache, real writer
def write_cache(out: Path, rows: int, dim: int, classes: int, views: int = 8, shard_images: int = 1024,
                layout: CacheRowLayout | None = None) -> Path:
    """A cache of ``rows`` rows (``rows // views`` images) with random outputs, written as ``distill cache build``
    writes one (same shard writer, hashing, manifest record); the teacher forward is replaced by one random block."""
    layout = layout or CacheRowLayout()
    images = rows // views
    g = torch.Generator().manual_seed(0)
    n = shard_images * views
    emb = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    text = F.normalize(torch.randn(classes, dim, generator=g), dim=1)
    outs = compact_outputs(layout, emb, 14.3 * emb @ text.T, torch.float16)  # every shard reuses this block
    params = torch.rand(n, 5, generator=g)
    num_shards = -(-images // shard_images)
    compact = {} if layout == CacheRowLayout() else {
        "format_version": COMPACT_VERSION, "layout": {**layout.model_dump(mode="json"), "logit_scale": 14.3}}
    plan = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "teacher": {"arch": "synthetic", "pretrained": None, "logit_scale": 14.3, "precision": "fp32"},
        "templates": ["{}"], "classes": [f"c{i}" for i in range(classes)],
        "preprocess": {"size": [224, 224], "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic",
                       "resize_mode": "shortest", "crop": "center", "exif_transpose": True},
        "dataset": {"fingerprint": "synthetic", "domains": ["d0", "d1", "d2", "d3"], "images": images,
                    "test_fraction": 0.3, "split_seed": 0},
        "views": {"count": views, "seed": 0, "augment": {}}, "dtype": "float16", "embed_dim": dim,
        "num_classes": classes, "batch_size": 64, "shard_size": shard_images, "num_shards": num_shards, **compact}
    shards = ResumableShards(out)
    shards.prepare(CacheBuildPlan.from_dict(plan), REFUSALS)
    for k in range(num_shards):
        m = min(shard_images, images - k * shard_images)
        si = torch.arange(k * shard_images, k * shard_images + m).repeat_interleave(views)
        part = {**{c: t[:m * views] for c, t in outs.items()}, "sample_index": si,
                "view": torch.arange(views, dtype=torch.int16).repeat(m), "domain": (si % 4).to(torch.int16),
                "label": (si % classes).to(torch.int16), "split": (si % 10 < 3).to(torch.uint8),
                "view_params": params[:m * views], "mix_partner": torch.full((m * views,), -1, dtype=torch.int64),
                "mix_view": torch.full((m * views,), -1, dtype=torch.int16)}
        write_shard(shards.path(k), part, [], output_columns(layout))
    files = shards.finished(num_shards, "{path}: missing")
    save_file({"text_embeddings": text}, str(out / TEXT_EMBEDDINGS))
    total = sum(f.rows for f in files)
    shapes, row_dtypes = manifest_columns(layout, total, dim, classes, 5, "float16")
    CacheManifest.from_dict({
        **plan, "rows": total, "shapes": shapes, "row_dtypes": row_dtypes, "skipped": [],
        "shards": [{"file": f.file, "samples": [k * shard_images, min((k + 1) * shard_images, images)],
                    "rows": f.rows, "bytes": f.bytes, "sha256": f.sha256} for k, f in enumerate(files)],
        "text_embeddings_sha256": sha256_file(out / TEXT_EMBEDDINGS),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "distill_version": distill.__version__}, out / CacheManifest.FILE).write(out)
    return out


def bytes_per_row(tmp: Path, dim: int, layout: CacheRowLayout, rows: int = 65536) -> float:
    path = write_cache(tmp / f"bpr-{dim}-{layout.logits}-{layout.topk}-{layout.embeddings}", rows, dim, 1000,
                       layout=layout)
    return TeacherCache.open(path).bytes_per_row()


# ---------------------------------------------------------------------- section: cache
def section_cache(args: argparse.Namespace) -> None:
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="scale_"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        N, D, C = args.rows, args.dim, args.classes
        path = tmp / "cache"
        if not (path / CacheManifest.FILE).is_file():
            t = time.perf_counter()
            write_cache(path, N, D, C, args.views, args.shard_images)
            print(f"wrote {N:,} rows (D={D}, C={C}, fp16, {args.views} views, {args.shard_images} images/shard) "
                  f"in {time.perf_counter() - t:.1f} s through the real writer")
        disk = sum(f.stat().st_size for f in path.iterdir())
        print(f"cache on disk: {disk / 1e9:.2f} GB, {disk / N:.0f} B/row")

        spawn = mp.get_context("spawn")  # a fresh process: its anonymous memory is the reader's, not the writer's
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            m = pool.submit(measure_open, str(path), args.batches, args.batch_size).result()
        open_s, opened = m["open_s"], m["open_anon"]
        print(f"open (sha256 recorded at build, page cache warm): {open_s:.2f} s, anonymous memory "
              f"+{opened / 1e6:.1f} MB ({opened / N:.1f} B/row)   [target <= 1 s, <= 100 MB]")
        print(f"lookup of {args.batches} random batches of {args.batch_size}: {m['batch_s'] * 1e3:.2f} ms/batch; "
              f"anonymous memory +{m['gathered_anon'] / 1e6:.1f} MB after, file-backed (page cache) "
              f"+{m['gathered_file'] / 1e6:.0f} MB")
        (path / VERIFIED_FILE).unlink()
        t = time.perf_counter()
        TeacherCache.open(path)
        first = time.perf_counter() - t
        print(f"first open of a copied/unrecorded cache (hashes every shard once, 4 threads): {first:.1f} s "
              f"({disk / first / 1e9:.2f} GB/s); every later open: {open_s:.2f} s")

        print("\nbytes per row (fp16, crop-only views; shard headers included):")
        bpr = {}
        for d, name in ((512, "ViT-B/32"), (768, "ViT-L/14")):
            for label, layout, target in (
                    ("full", CacheRowLayout(), None),
                    ("no stored logits", CacheRowLayout(logits="none"), 1100 if d == 512 else None),
                    ("top-100, no embeddings", CacheRowLayout(logits="topk", topk=100, embeddings=False),
                     450 if d == 512 else None)):
                bpr[(d, label)] = b = bytes_per_row(tmp, d, layout)
                goal = f"   [target <= {target} B: {'met' if b <= target else 'MISSED'}]" if target else ""
                print(f"  {name:<9} D={d} C=1000  {label:<24} {b:8.0f} B{goal}")

        ranks, rows_in = 8, IMAGENET_TRAIN * 8
        resident = opened / N
        print(f"\nextrapolation: ImageNet-1k train ({IMAGENET_TRAIN:,} images) x 8 views = {rows_in:,} rows, "
              f"ViT-L/14 (D=768, C=1000), {ranks} ranks on one host")
        print(f"  {'rows':<24} {'disk':>9} {'RAM per rank':>13} {'page cache (shared)':>20} {'open':>7} "
              f"{'first open':>11}")
        for label in ("full", "no stored logits", "top-100, no embeddings"):
            size = bpr[(768, label)] * rows_in
            print(f"  {label:<24} {size / 1e9:7.1f} GB {resident * rows_in / 1e6:10.0f} MB "
                  f"{'<= ' + format(size / 1e9, '.1f') + ' GB':>20} {open_s * rows_in / N:6.1f}s "
                  f"{size / (disk / first):10.0f}s")
        print("  (RAM per rank: the index columns only, measured per row above; rows are mapped pages shared by "
              "all ranks and workers; open scales with the shard count; first open: one sha256 pass, recorded)")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


SECTIONS: dict[str, Callable[[argparse.Namespace], None]] = {"cache": section_cache}


def add_flags(p: argparse.ArgumentParser) -> None:
    c = p.add_argument_group("cache")
    c.add_argument("--rows", type=int, default=1_000_000, help="rows of the synthetic cache (1M)")
    c.add_argument("--dim", type=int, default=768, help="embedding width D (768: ViT-L/14)")
    c.add_argument("--classes", type=int, default=1000, help="classes C (1000)")
    c.add_argument("--views", type=int, default=8, help="views per image (8)")
    c.add_argument("--shard-images", type=int, default=1024, help="images per shard, as cache build (1024)")
    c.add_argument("--batches", type=int, default=200, help="random lookups timed (200)")
    c.add_argument("--batch-size", type=int, default=256)
    c.add_argument("--keep", default=None, metavar="DIR", help="write (or reuse) the caches here and keep them")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--section", choices=sorted(SECTIONS), action="append", help="sections to run (all)")
    add_flags(p)
    args = p.parse_args()
    for name in args.section or list(SECTIONS):
        print(f"== {name}")
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
