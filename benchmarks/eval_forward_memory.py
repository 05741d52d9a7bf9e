"""The anonymous-memory transient of one evaluation forward, by batch size (issue "Scale").

Why the 2k vs 20k training benchmark's whole-run peak still differs (benchmarks/RESULTS.md, "Where the
benchmark's growth went"): evaluation forwards full batches of 256 images only when a domain's test split
has that many. This measures, in one process, what one no-grad forward of timm's ``test_resnet`` at 32 px
adds to ``RssAnon`` (sampled every millisecond by a thread) at batch sizes 200, 256 and 64, repeated.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/eval_forward_memory.py [--batches 200,256,200,256,64,200,256]
"""
from __future__ import annotations

import argparse
import os
import threading
import time

import timm
import torch
from scale_train import rss_anon  # benchmarks/scale_train.py: this script's folder is on sys.path when it runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="200,256,200,256,64,200,256", help="batch sizes, in order")
    ap.add_argument("--arch", default="test_resnet")
    ap.add_argument("--size", type=int, default=32)
    args = ap.parse_args()
    pid, peak, stop = os.getpid(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_anon(pid) or 0)
            time.sleep(0.001)

    threading.Thread(target=sample, daemon=True).start()
    model = timm.create_model(args.arch, num_classes=4).eval()
    torch.set_num_threads(2)
    with torch.no_grad():
        for b in (int(x) for x in args.batches.split(",")):
            x = torch.randn(b, 3, args.size, args.size)
            time.sleep(0.05)
            base = rss_anon(pid) or 0
            peak[0] = base
            model(x)
            time.sleep(0.02)
            print(f"batch {b}: base {base / 2**20:.1f} MB, forward transient +{(peak[0] - base) / 2**20:.1f} MB",
                  flush=True)
    stop.set()


if __name__ == "__main__":
    main()
