"""Memory an unlabeled folder's listing keeps for a run: main's tuple per image vs the packed listing.

    PYTHONPATH=. .venv/bin/python benchmarks/unlabeled_listing.py --sizes 20000,200000 [--old-rev a94ae8c] [--dir DIR]

Builds FOLDER/s{0..9}/NNNNNNN.jpg (N empty files, short names: 13-byte relative paths) and a one-image ROOT beside
it. The old code is ``distill/data/unlabeled.py`` and ``folder.py`` of ``--old-rev`` (a ``git archive`` copy, made
here), loaded beside this checkout's modules (what they import is this checkout's: the walk is the same). Each
figure comes from a fresh process (:mod:`benchmarks.fresh_process`), old and new side by side at each size:

- RssAnon held: the anonymous memory the process gained by ``scan_folder(FOLDER)`` while it keeps the folder, and
  then by ``add_folders(DomainFolder(ROOT), [folder])`` (what a run or a cache build holds: the folder in
  ``dataset.folders`` and its samples' columns), over the same process after imports and the one-image ROOT; and
  after ``malloc_trim(0)`` (the freed temporaries glibc kept in its heap given back: what is really held).
- tracemalloc (another fresh process): the peak while scanning, and what is still allocated after the scan and
  after the add (Python objects and numpy buffers, exactly; RssAnon also counts what malloc did not give back).
"""
from __future__ import annotations

import argparse
import ctypes
import importlib.util
import os
import re
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.fresh_process import in_fresh_process, old_checkout, run_child  # noqa: E402

OLD_REV = "a94ae8c"  # main before the packed unlabeled listing (session 28)


def build(top: Path, n: int) -> tuple[Path, Path]:
    root, cam = top / "root", top / f"cam{n}"
    if not (root / "d" / "c" / "a.png").exists():
        (root / "d" / "c").mkdir(parents=True, exist_ok=True)
        (root / "d" / "c" / "a.png").write_bytes(b"x")
    if (top / f".done{n}").exists():
        return root, cam
    for s in range(10):
        (cam / f"s{s}").mkdir(parents=True, exist_ok=True)
        for i in range(s, n, 10):
            os.close(os.open(cam / f"s{s}" / f"{i:07d}.jpg", os.O_CREAT | os.O_WRONLY, 0o644))
    (top / f".done{n}").touch()
    return root, cam


def modules(which: str, old: str):
    """(unlabeled, folder) modules: this checkout's, or ``old``'s loaded from its files beside them."""
    from distill.data import folder, unlabeled  # lazy: the child imports before its first reading
    if which == "new":
        return unlabeled, folder
    mods = []
    for name in ("unlabeled", "folder"):
        spec = importlib.util.spec_from_file_location(f"old_{name}", Path(old) / "distill" / "data" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod  # dataclasses look their module up
        spec.loader.exec_module(mod)
        mods.append(mod)
    return tuple(mods)


def anon() -> int:
    with open("/proc/self/status") as f:
        return int(re.search(r"RssAnon:\s+(\d+) kB", f.read()).group(1)) * 1024


def measure(which: str, old: str, root: str, cam: str, traced: bool) -> dict:
    unlabeled, folder_mod = modules(which, old)
    ds = folder_mod.DomainFolder(root)
    if traced:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
    else:
        base = anon()
    t0 = time.perf_counter()
    folder = unlabeled.scan_folder(cam, root, "k")
    took = time.perf_counter() - t0
    scanned = tracemalloc.get_traced_memory() if traced else (anon(), 0)
    unlabeled.add_folders(ds, [folder])
    del folder  # what a run keeps from here: the dataset (its folders and columns)
    added = tracemalloc.get_traced_memory()[0] if traced else anon()
    trimmed = 0 if traced else (ctypes.CDLL("libc.so.6").malloc_trim(0), anon())[1]  # what malloc kept, given back
    images = len(ds.select(list(ds.folders)))
    if traced:
        tracemalloc.stop()
        return {"peak": scanned[1] - base, "scan": scanned[0] - base, "add": added - base, "images": images}
    return {"scan": scanned[0] - base, "add": added - base, "trim": trimmed - base, "images": images, "s": took}


def main() -> None:
    if run_child(measure):
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="20000,200000", help="images in the folder (a multiple of 10)")
    p.add_argument("--old-rev", default=OLD_REV, help="the code compared against (default: main before packing)")
    p.add_argument("--dir", type=Path, help="where the trees are built (kept: reused by a later run)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="unlabeled-bench-"))
    old = old_checkout(REPO, args.old_rev, tmp)
    top = args.dir or tmp / "trees"
    top.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for n in (int(x) for x in args.sizes.split(",")):
            root, cam = build(top, n)
            got = {}
            for which in ("old", "new", "new", "old"):  # RssAnon twice each, interleaved; the smaller kept
                r = in_fresh_process(__file__, {"which": which, "old": str(old), "root": str(root), "cam": str(cam),
                                                "traced": False})
                assert r["images"] == n, r
                got[which] = min([got.get(which, r), r], key=lambda x: x["add"])
            for which in ("old", "new"):
                got[which + "_t"] = in_fresh_process(__file__, {"which": which, "old": str(old), "root": str(root),
                                                                "cam": str(cam), "traced": True})
            rows.append((n, got))
            print(f"(size {n:,} done)", file=sys.stderr, flush=True)
        print("| images | RssAnon after scan, old / new B/img | after scan + add_folder, old / new B/img | "
              "then malloc_trim(0), old / new | tracemalloc held after scan, old / new B/img | after add, old / new | "
              "scan peak, old / new | scan s, old / new |\n|---:|---:|---:|---:|---:|---:|---:|---:|")
        for n, g in rows:
            o, w, ot, nt = g["old"], g["new"], g["old_t"], g["new_t"]
            b = lambda r, k: f"{r[k] / n:.0f}"  # noqa: E731
            print(f"| {n:,} | {b(o, 'scan')} / {b(w, 'scan')} | {b(o, 'add')} / {b(w, 'add')} | "
                  f"{b(o, 'trim')} / {b(w, 'trim')} | {b(ot, 'scan')} / {b(nt, 'scan')} | {b(ot, 'add')} / {b(nt, 'add')} | "
                  f"{b(ot, 'peak')} / {b(nt, 'peak')} | {o['s']:.2f} / {w['s']:.2f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the old copy, and the trees unless --dir put them elsewhere


if __name__ == "__main__":
    main()
