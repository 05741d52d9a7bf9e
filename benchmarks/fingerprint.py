"""The dataset fingerprint's file-list hash: one Sample object per image (before) vs chunks of rows from the columns.

    PYTHONPATH=. .venv/bin/python benchmarks/fingerprint.py --sizes 120000,1200000

Every stage that opens a data folder (train, cache build, export, qad) hashes its file list once
(``DomainFolder.fingerprint``: each image's "relpath, size, class" line). The table is synthetic (paths like
``domainD/classC/img_00000001_é.jpg``, random sizes), so no disk is read: this times the hashing alone. Both
ways run side by side, twice, on the same table; the figure is the ratio (and that both give the same sha256).
Memory: the peak of what each way allocates while hashing (``tracemalloc``, which sees Python objects and numpy
buffers; a third pass, untimed), at each size: it must not grow with N (the table itself is made before).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.data.sample_table import SampleColumns, SampleTable, hash_file_lines, pack_strings  # noqa: E402


def table(n: int) -> SampleTable:
    paths = [f"domain{i % 4}/class{i % 10}/img_{i:08d}_é.jpg" for i in range(n)]
    text, offsets = pack_strings(paths)
    sizes = np.random.default_rng(0).integers(1, 10**6, n)
    cols = SampleColumns(np.arange(n), text, offsets, np.arange(n) % 4, [f"domain{i}" for i in range(4)],
                         np.arange(n) % 10, [f"class{i}" for i in range(10)], np.arange(n) % 10, np.zeros(n), sizes)
    return SampleTable(cols).take(np.arange(n))  # a selection, as fingerprint() hashes


def per_sample(t: SampleTable) -> str:
    """The loop fingerprint() ran before: a Sample per image, a formatted line each."""
    h = hashlib.sha256()
    for s in t:
        h.update(f"{s.relpath}\t{s.size}\t{s.class_name}\n".encode())
    return h.hexdigest()


def chunked(t: SampleTable) -> str:
    h = hashlib.sha256()
    hash_file_lines(h, t)
    return h.hexdigest()


def peak_mb(fn, t: SampleTable) -> float:
    """MB allocated at the peak while ``fn(t)`` runs, above what was allocated before it."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn(t)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (peak - base) / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="120000,1200000", help="images per synthetic table")
    args = p.parse_args()
    print("| images | per Sample, s | chunked, s | ratio | same sha256 |\n|---:|---:|---:|---:|---|")
    peaks = []
    for n in (int(x) for x in args.sizes.split(",")):
        t = table(n)
        for _ in range(2):
            t0 = time.perf_counter()
            a = per_sample(t)
            t1 = time.perf_counter()
            b = chunked(t)
            t2 = time.perf_counter()
            print(f"| {n:,} | {t1 - t0:.2f} | {t2 - t1:.2f} | {(t2 - t1) / (t1 - t0):.2f} | {a == b} |", flush=True)
        peaks.append((n, peak_mb(per_sample, t), peak_mb(chunked, t)))
    print("\n| images | peak allocated while hashing, per Sample, MB | chunked, MB |\n|---:|---:|---:|")
    for n, old, new in peaks:
        print(f"| {n:,} | {old:.1f} | {new:.1f} |")


if __name__ == "__main__":
    main()
