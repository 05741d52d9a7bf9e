"""Anonymous memory of an export's test images, and how it grows with their number (`distill export --eval-count 0`).

`distill export` and `distill qad` decode the test images they report accuracy on once, into one uint8 array
[N, H, W, 3] (150 KB an image at 224 px). With `--eval-count 0` (every test image) N is the test split's size, so
an array past ``distill.export.images.SPILL_BYTES`` lives in an unlinked file in the export's folder, memory-mapped
(``pixel_array``). This script measures, per test-image count and arm, in a fresh process each:

- ``in RAM``: the spill threshold set past any size (the behaviour before the spill: one anonymous array);
- ``mapped``: the library's threshold.

It prints ``RssAnon`` (heap: not the page cache, not mapped files) added by ``load_export_data`` and after
running a tiny student over every image in PyTorch and in ONNX Runtime and comparing the two (``predict_torch``,
``predict_onnx``, ``parity``, ``near_ties``: what the fp32 check does; their logits, [N, classes] float32, follow
the pixels' rule), the heap's peak while comparing (tracemalloc: numpy's temporaries), and the growth per 1,000
images between the smallest and the largest count. ``--classes 1000`` makes the logits as large as ImageNet's.

    PYTHONPATH=. .venv/bin/python benchmarks/export_memory.py [--counts 1000,4000] [--size 224] [--classes 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fresh_process import in_fresh_process, run_child  # noqa: E402
from scale import rss  # noqa: E402  (benchmarks/scale.py: RssAnon of this process)

ARMS = {"in RAM": 1 << 62, "mapped": None}  # SPILL_BYTES per arm (None: the library's)


def make_tree(root: Path, per_domain: int, classes: int = 2) -> Path:
    """ROOT/DOMAIN/CLASS/i.jpg: 2 domains x ``classes`` classes, small noisy JPEGs (the crop resizes them up)."""
    rng = np.random.default_rng(0)
    for d in ("a", "b"):
        for c in range(classes):
            folder = root / d / f"c{c:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(max(2, per_domain // classes)):
                Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(folder / f"{i:05d}.jpg")
    return root


def child(root: str, count: int, size: int, spill_bytes: int | None, work: str, classes: int = 2) -> dict:
    """In this (fresh) process: load ``count`` test images per domain at ``size`` px, predict over them in PyTorch
    and ONNX Runtime, compare the two."""
    import tracemalloc

    import torch

    from distill.export import images as images_mod
    from distill.export.config import ExportConfig
    from distill.export.data import load_export_data
    from distill.export.evaluate import parity, predict_onnx, predict_torch
    from distill.export.log import ExportLog
    from distill.export.margins import near_ties
    from distill.export.onnx import export_onnx
    from distill.student.model import Student, default_spec

    torch.set_num_threads(1)
    if spill_bytes is not None:
        images_mod.SPILL_BYTES = spill_bytes
    spec = default_spec("test_resnet", [f"c{c:04d}" for c in range(classes)], input_size=size)
    student = Student(spec).eval()
    model = Path(work) / "student.onnx"
    export_onnx(student, model, opset=18, exporter="torchscript")
    cfg = ExportConfig(data_root=root, test_fraction=0.5, split_seed=0, eval_count=count)
    base = rss()
    t = time.perf_counter()
    data = load_export_data(cfg, spec, [], ExportLog(lambda s: None), spill_dir=work)
    load_s, loaded = time.perf_counter() - t, rss() - base
    torch_logits = predict_torch(student, data.eval_images)
    logits = predict_onnx(str(model), data.eval_images)
    tracemalloc.start()
    parity(torch_logits, logits), near_ties(torch_logits, logits)
    compare_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"images": len(data.eval_images), "mapped": isinstance(data.eval_images.images, np.memmap),
            "logits_mapped": isinstance(logits, np.memmap), "logit_mb": 2 * logits.nbytes / 2**20,
            "pixel_mb": data.eval_images.images.nbytes / 2**20, "load_mb": loaded / 2**20,
            "after_predict_mb": (rss() - base) / 2**20, "compare_peak_mb": compare_peak / 2**20, "load_s": load_s}


def main() -> None:
    if run_child(child):
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="1000,4000", help="test images per domain (2 domains), comma-separated")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=2, help="classes per domain (the logits' width)")
    ap.add_argument("--spill-mb", type=float, default=None,
                    help="the mapped arm's SPILL_BYTES in MB (default: the library's 256): smaller shows the spill "
                         "at fewer images")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="export-memory-") as tmp:
        root = make_tree(Path(tmp) / "data", 2 * max(counts) + 8, args.classes)  # test_fraction 0.5: enough test images
        for count in counts:
            for arm, spill in ARMS.items():
                if spill is None and args.spill_mb is not None:
                    spill = int(args.spill_mb * 2**20)
                work = Path(tmp) / "work"
                work.mkdir(exist_ok=True)
                rows.append({"count": count, "arm": arm, **in_fresh_process(__file__, {
                    "root": str(root), "count": count, "size": args.size, "spill_bytes": spill, "work": str(work),
                    "classes": args.classes})})
    print(f"test images at {args.size} px, 2 domains, {args.classes} classes; RssAnon added (MB), fresh process per row\n")
    print("| test images | arm | pixels (MB) | logits, 2 models (MB) | memory-mapped | anon after load | "
          "anon after predict | heap peak comparing | load s |")
    print("|---:|---|---:|---:|---|---:|---:|---:|---:|")
    for r in rows:
        mapped = {(True, True): "both", (True, False): "pixels", (False, True): "logits"}.get(
            (r["mapped"], r["logits_mapped"]), "no")
        print(f"| {r['images']:,} | {r['arm']} | {r['pixel_mb']:.0f} | {r['logit_mb']:.0f} | {mapped} | "
              f"{r['load_mb']:.1f} | {r['after_predict_mb']:.1f} | {r['compare_peak_mb']:.1f} | {r['load_s']:.1f} |")
    print()
    for arm in ARMS:
        lo, hi = (next(r for r in rows if r["arm"] == arm and r["count"] == c) for c in (min(counts), max(counts)))
        per_k = (hi["after_predict_mb"] - lo["after_predict_mb"]) / ((hi["images"] - lo["images"]) / 1000)
        print(f"{arm}: anonymous memory grows {per_k:.2f} MB per 1,000 test images "
              f"(pixels: {hi['pixel_mb'] / hi['images'] * 1000:.0f} MB per 1,000, logits of 2 models "
              f"{hi['logit_mb'] / hi['images'] * 1000:.1f})")


if __name__ == "__main__":
    main()
