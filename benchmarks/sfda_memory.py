"""Anonymous memory of the source-free strategies' pseudo-label refresh, by the number of target images.

``sfda`` and ``shot`` rebuild per-sample pseudo-labels each epoch from one clean pass over the target training
images (``distill.strategies._pseudo.collect``): every image's features [N, F] and class probabilities [N, C] (and
the teachers' [N, K, C]) for the fusion, the kNN smoothing and SHOT's centroids (spooled to disk and worked on in
chunks since session 23), then per-sample targets (sfda: two [S, C] float32) that go into every checkpoint: module
buffers until session 24, now files (``distill.utils.rowfile.RowFile``) that a checkpoint hard-links.

This runs the real ``refresh`` of each strategy on a stub student whose ``forward_all`` returns random features
and logits of a realistic width (default F = 1280, mobilenetv3_large_100's; C = 1000 classes), over N target
images, twice (epochs 0 and 1: the second refresh has the first one's targets to replace), in a fresh process per
row, and prints the peak ``RssAnon`` added (sampled every millisecond), the bytes per image and the seconds per
refresh (RssAnon in MiB; after the refreshes also after glibc's ``malloc_trim``, which returns freed memory: what
is left is live data); then saves the strategy's state twice as a step checkpoint does (``distill.utils.state.save_state`` into
a folder beside ``state_dir``, the run's checkpoint folder) and prints the bytes of the state files and the seconds
per save. Nothing here is trained: the figures do not depend on the values.

    PYTHONPATH=. .venv/bin/python benchmarks/sfda_memory.py [--counts 5000,20000] [--features 1280] [--classes 1000]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fresh_process import in_fresh_process, run_child  # noqa: E402
from scale_train import rss_anon  # noqa: E402  (benchmarks/scale_train.py)

STRATEGIES = ("sfda", "shot")


def child(strategy: str, count: int, features: int, classes: int, folder: str, batch: int = 256) -> dict:
    """Peak anonymous memory of one ``refresh`` over ``count`` stub images, in this (fresh) process, and the cost
    of checkpointing the strategy's state into ``folder``."""
    import os
    import shutil

    import torch
    from torch import nn

    from distill.strategies import get_strategy
    from distill.strategies.base import Batch, StrategyContext
    from distill.utils.state import save_state

    torch.set_num_threads(1)

    class Stub(nn.Module):  # forward_all as a Student's: pooled features and logits
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(features, classes)

        def forward_all(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
            g = torch.Generator().manual_seed(int(images[0, 0]))
            return {"features": torch.randn(len(images), features, generator=g),
                    "logits": torch.randn(len(images), classes, generator=g)}

    def batches():
        for s in range(0, count, batch):
            n = min(batch, count - s)
            x = torch.full((n, 1), float(s))
            yield Batch(pixels=x, images=x, teacher_logits=torch.randn(n, classes), sample_index=torch.arange(s, s + n))

    cls = get_strategy(strategy)
    ctx = StrategyContext(num_classes=classes, class_names=[str(i) for i in range(classes)], iterate_train=batches,
                          num_train=count, num_samples=count)
    ctx.state_dir = str(Path(folder) / "checkpoints")  # as the trainer sets it (a plain attribute before session 24)
    strat = cls(Stub(), cls.Config(), ctx)
    pid, peak, stop = os.getpid(), [0], threading.Event()
    base = rss_anon(pid) or 0

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_anon(pid) or 0)
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t = time.perf_counter()
    strat.refresh(0)
    strat.refresh(1)  # a later epoch's refresh: the last targets exist while the new ones are built
    seconds = (time.perf_counter() - t) / 2
    stop.set()
    thread.join()
    kept = sum(b.numel() * b.element_size() for b in strat.buffers())
    after = rss_anon(pid) or 0
    try:  # what of "after" is live data: glibc keeps freed memory (the kNN tiles') until trimmed
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        trimmed = rss_anon(pid) or 0
    except (OSError, AttributeError):  # not glibc
        trimmed = after
    t, saves = time.perf_counter(), []
    for step in (1, 2):  # a step folder each, the older one removed after: as distill.train.checkpoints does
        step_dir = Path(folder) / "checkpoints" / f"step-{step}"
        step_dir.mkdir(parents=True)
        save_state(step_dir / "state", {"strategy": strat.state_dict()})
        saves.append(step_dir)
        if step > 1:
            shutil.rmtree(saves[-2])
    save_s = (time.perf_counter() - t) / 2
    files = [f for f in saves[-1].iterdir() if f.is_file()]
    written = sum(f.stat().st_size for f in files if f.suffix != ".bin")  # .bin: hard links to the targets' files
    linked = sum(f.stat().st_size for f in files if f.suffix == ".bin")
    return {"peak_mb": (peak[0] - base) / 2**20, "after_mb": (after - base) / 2**20, "buffers_mb": kept / 2**20,
            "trimmed_mb": (trimmed - base) / 2**20,
            "seconds": seconds, "save_s": save_s, "state_mb": written / 2**20, "linked_mb": linked / 2**20}


def main() -> None:
    if run_child(child):
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="5000,20000", help="target images, comma-separated")
    ap.add_argument("--features", type=int, default=1280)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--folder", default=None, help="where the run's checkpoint folder is made (default: TMPDIR; "
                    "a disk, not tmpfs, to measure the page cache's share honestly)")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    rows = []
    for strategy in args.strategies.split(","):
        for count in counts:
            with tempfile.TemporaryDirectory(prefix="sfda-memory-", dir=args.folder) as folder:
                rows.append({"strategy": strategy, "count": count, **in_fresh_process(__file__, {
                    "strategy": strategy, "count": count, "features": args.features, "classes": args.classes,
                    "folder": folder})})
    print(f"refresh over N target images, F = {args.features} features, C = {args.classes} classes, 1 teacher; "
          "RssAnon added (MB), fresh process per row\n")
    print("| strategy | N | peak during refresh | kept after (buffers) | after malloc_trim | per image, peak | "
          "per image, kept | s | checkpoint: state files MiB (+ linked) | s per save |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['strategy']} | {r['count']:,} | {r['peak_mb']:.0f} | {r['after_mb']:.0f} ({r['buffers_mb']:.0f}) | "
              f"{r['trimmed_mb']:.0f} | "
              f"{r['peak_mb'] * 2**20 / r['count'] / 1e3:.1f} kB | {r['after_mb'] * 2**20 / r['count'] / 1e3:.1f} kB | "
              f"{r['seconds']:.1f} | {r['state_mb']:.1f} (+ {r['linked_mb']:.0f}) | {r['save_s']:.2f} |")
    print()
    for strategy in args.strategies.split(","):
        lo, hi = (next(r for r in rows if r["strategy"] == strategy and r["count"] == c) for c in (min(counts), max(counts)))
        slope = (hi["peak_mb"] - lo["peak_mb"]) * 2**20 / (hi["count"] - lo["count"])
        print(f"{strategy}: peak grows {slope / 1e3:.1f} kB per target image: {slope * 1e6 / 1e9:.0f} GB at 10^6, "
              f"{slope * 1e7 / 1e9:.0f} GB at 10^7")


if __name__ == "__main__":
    main()
