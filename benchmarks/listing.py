"""Listing a data root: the former ``sorted(Path.rglob)`` walk (two stats per file) vs the ``os.scandir`` walk.

    PYTHONPATH=. .venv/bin/python benchmarks/listing.py --sizes 200000,1000000 [--old DIR] [--dir DIR] [--flat]

Builds ROOT/d{0..3}/c{0..49}/img_NNNNNNN.jpg (one byte each; N/200 files per class folder, as an ImageNet-like
tree; ``--flat``: ROOT/d0/c000/ holds all N) and, beside it, one unlabeled folder of N/10 files in 10 subfolders.
The old code is main's before the ``os.scandir`` walk (``--old-rev``), loaded from a ``git archive`` copy (``--old``;
made here when not given), into this process beside the new code. Per size:

- time: ``list_images(ROOT)`` and ``scan_folder(FOLDER)``, old and new, interleaved (old, new, new, old, ...),
  warm page cache (one untimed listing first); both must give the same arrays. The figure is the ratio.
- stat syscalls: ``strace -c -f`` of a child process that lists a ``--strace-n`` tree minus one that only
  imports, per file (stat-family calls: newfstatat/statx/stat/lstat; and getdents64, openat).
- memory: ``tracemalloc`` peak while listing (Python objects and numpy buffers), per file, on an untimed pass; and
  the anonymous memory (``RssAnon``) a fresh process holds once it has listed, old and new, at each size (how it
  grows with N: the listing a run keeps).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distill.data import listing as new_listing  # noqa: E402
from distill.data import unlabeled as new_unlabeled  # noqa: E402

DOMAINS, CLASSES = 4, 50
OLD_REV = "04bceb0^1"  # main just before the os.scandir walk merged (session 27)
STATS = ("newfstatat", "statx", "stat", "lstat", "fstatat64")


def load_old(old: Path):
    """The old listing.py and unlabeled.py as modules beside this checkout's (their imports resolve here: the
    modules they import are unchanged)."""
    mods = []
    for name in ("listing", "unlabeled"):
        spec = importlib.util.spec_from_file_location(f"old_{name}", old / "distill" / "data" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod  # dataclasses look their module up
        spec.loader.exec_module(mod)
        mods.append(mod)
    return mods


def build(top: Path, n: int, flat: bool = False) -> tuple[Path, Path]:
    tag = f"{n}flat" if flat else f"{n}"
    root, cam = top / f"root{tag}", top / f"cam{tag}"
    if (top / f".done{tag}").exists():
        return root, cam
    domains, classes = (1, 1) if flat else (DOMAINS, CLASSES)
    per = n // (domains * classes)
    k = 0
    for d in range(domains):
        for c in range(classes):
            folder = root / f"d{d}" / f"c{c:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(per):
                fd = os.open(folder / f"img_{k:07d}.jpg", os.O_CREAT | os.O_WRONLY, 0o644)
                os.write(fd, b"x")
                os.close(fd)
                k += 1
    for s in range(10):
        (cam / f"s{s}").mkdir(parents=True, exist_ok=True)
        for i in range(n // 100):
            fd = os.open(cam / f"s{s}" / f"u_{i:07d}.jpg", os.O_CREAT | os.O_WRONLY, 0o644)
            os.write(fd, b"x")
            os.close(fd)
    (top / f".done{tag}").touch()
    return root, cam


def run(mods, root: Path, cam: Path):
    listing, unlabeled = mods
    return listing.list_images(root), unlabeled.scan_folder(str(cam), root, "k")


def same(a, b) -> bool:
    (da, fa), ua = a
    (db, fb), ub = b
    return (da == db and _rows(ua) == _rows(ub) and all(np.array_equal(getattr(fa, k), getattr(fb, k))
                                                       for k in ("text", "offsets", "domain", "folder", "size")))


def _rows(folder) -> tuple:
    """An unlabeled folder's (path, size) pairs: main's ``files`` before the packed listing, ``rows()`` after."""
    return folder.files if isinstance(getattr(folder, "files", None), tuple) else tuple(folder.rows())


def peak_mb(mods, root: Path, cam: Path) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    out = run(mods, root, cam)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del out
    return (peak - base) / 2**20


def strace_counts(which: str, old: Path, root: Path | None, cam: Path | None) -> dict[str, int]:
    """Syscall counts of a child that imports the code (and lists when root is given)."""
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); sys.argv=['x']; import benchmarks.listing as b; "
            f"mods = b.load_old(b.Path({str(old)!r})) if {which!r} == 'old' else (b.new_listing, b.new_unlabeled); "
            + (f"b.run(mods, b.Path({str(root)!r}), b.Path({str(cam)!r}))" if root else "pass"))
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as log:
        subprocess.run(["strace", "-c", "-f", "-o", log.name, sys.executable, "-c", code], check=True,
                       cwd=REPO, capture_output=True)
        text = log.read()
    counts: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
        if m:
            counts[m.group(2)] = int(m.group(1))
    return counts


def anon_held(which: str, old: Path, root: Path, cam: Path) -> int:
    """Bytes of anonymous memory (``RssAnon``) a fresh process adds by listing ROOT and the unlabeled folder and
    keeping what it listed (imports done before the first reading)."""
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); sys.argv=['x']; import benchmarks.listing as b; "
            "import re; anon = lambda: int(re.search(r'RssAnon:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)); "
            f"mods = b.load_old(b.Path({str(old)!r})) if {which!r} == 'old' else (b.new_listing, b.new_unlabeled); "
            f"base = anon(); out = b.run(mods, b.Path({str(root)!r}), b.Path({str(cam)!r})); print(anon() - base)")
    done = subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True, text=True)
    return int(done.stdout.split()[-1]) * 1024


def per_file(which: str, old: Path, root: Path, cam: Path, n: int) -> str:
    full, bare = strace_counts(which, old, root, cam), strace_counts(which, old, None, None)
    d = {k: full.get(k, 0) - bare.get(k, 0) for k in set(full) | set(bare)}
    stats = sum(d.get(k, 0) for k in STATS)
    return f"{stats / n:.2f} | {d.get('getdents64', 0) / n:.3f} | {d.get('openat', 0) / n:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="200000", help="image files under ROOT per tree (a multiple of 200)")
    p.add_argument("--repeats", type=int, default=2, help="timed (old, new) pairs per size")
    p.add_argument("--old", type=Path, help="a `git archive OLD_REV` copy (default: made in a temporary folder)")
    p.add_argument("--old-rev", default=OLD_REV, help="the listing compared against (default: main before the scandir walk)")
    p.add_argument("--dir", type=Path, help="where the trees are built (kept: reused by a later run)")
    p.add_argument("--flat", action="store_true", help="all of ROOT's files in one class folder")
    p.add_argument("--strace-n", type=int, default=20000, help="files in the tree the syscalls are counted on (0: not counted)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="listing-bench-"))
    old = args.old
    if old is None:
        old = tmp / "old"
        old.mkdir()
        subprocess.run(f"git -C {REPO} archive {args.old_rev} | tar -x -C {old}", shell=True, check=True)
    top = args.dir or tmp / "trees"
    top.mkdir(parents=True, exist_ok=True)
    old_mods, new_mods = load_old(old), (new_listing, new_unlabeled)
    try:
        if shutil.which("strace") and args.strace_n:
            root, cam = build(top, args.strace_n)
            n = args.strace_n + args.strace_n // 10
            print(f"syscalls per file (strace -c -f; {args.strace_n:,} under ROOT + {args.strace_n // 10:,} unlabeled)\n"
                  "| walk | stat-family | getdents64 | openat |\n|---|---:|---:|---:|")
            for which in ("old", "new"):
                print(f"| {which} | {per_file(which, old, root, cam, n)} |", flush=True)
        print("\n| files under ROOT | old s | new s | new/old | same arrays |\n|---:|---:|---:|---:|---|")
        peaks = []
        for size in (int(x) for x in args.sizes.split(",")):
            t0 = time.perf_counter()
            root, cam = build(top, size, args.flat)
            print(f"(tree of {size:,} built in {time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
            ref = run(new_mods, root, cam)  # warms the page cache
            for r in range(args.repeats):
                took = {}
                for which in (("old", "new") if r % 2 == 0 else ("new", "old")):
                    t0 = time.perf_counter()
                    got = run(old_mods if which == "old" else new_mods, root, cam)
                    took[which] = time.perf_counter() - t0
                    assert same(got, ref), which
                    del got
                print(f"| {size:,} | {took['old']:.2f} | {took['new']:.2f} | {took['new'] / took['old']:.2f} | True |",
                      flush=True)
            del ref
            peaks.append((size, peak_mb(old_mods, root, cam), peak_mb(new_mods, root, cam),
                          anon_held("old", old, root, cam), anon_held("new", old, root, cam)))
        print("\n| files under ROOT | old peak MB | new peak MB | old B/file | new B/file | RssAnon held, old MB | "
              "new MB | new B/file |\n|---:|---:|---:|---:|---:|---:|---:|---:|")
        for size, a, b, anon_old, anon_new in peaks:
            n = size + size // 10
            print(f"| {size:,} | {a:.1f} | {b:.1f} | {a * 2**20 / n:.0f} | {b * 2**20 / n:.0f} | "
                  f"{anon_old / 2**20:.1f} | {anon_new / 2**20:.1f} | {anon_new / n:.0f} |")
    finally:
        if args.dir is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
