"""Memory while a flat folder is listed: main's one sorted list of a folder's entries vs sorted runs on disk.

    PYTHONPATH=. .venv/bin/python benchmarks/flat_listing.py --sizes 20000,200000 [--old-rev c5fea07] [--dir DIR] [--rounds 2]
        [--what pack,list]

Builds DIR/flatN/NNNNNNN.png: N empty files in ONE folder (a camera dump), kept in ``--dir`` (default: the system's
temporary folder's ``distill-flat-listing``) and reused by a later run, since making 10^5 files takes a while. The
old code is ``distill/data/listing.py`` of ``--old-rev`` (a ``git archive`` copy, made here), loaded beside this
checkout's modules. Each figure comes from a fresh process (:mod:`benchmarks.fresh_process`) that runs
``pack_images(FOLDER)`` (``--what pack``: what ``scan_folder`` runs, the walk packed) or ``list_images(ROOT)``
(``--what list``: the data root's listing for train, eval and export, with ROOT/d/c a link to FOLDER: one flat class
folder), old and new side by side at each size, and with ``--chunk`` also the new code with ``SORT_CHUNK`` set to
it (how the peak follows the chunk, not the folder):

- peak RSS growth: the process's peak resident memory (``VmHWM``, reset through ``/proc/self/clear_refs`` before)
  over its resident memory just before the listing (anonymous memory in practice: the listing maps no file), and
  RssAnon held after it (the packed listing, plus what glibc keeps of freed temporaries);
- tracemalloc (another fresh process): the peak while listing and what is still allocated after (exact);
- the listing's wall time (the smallest of ``--rounds`` processes, interleaved; page cache warm after the first).
"""
from __future__ import annotations

import argparse
import gc
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

OLD_REV = "c5fea07"  # main before the bounded listing (session 29)


def build(top: Path, n: int) -> Path:
    flat = top / f"flat{n}"
    if (top / f".done{n}").exists():
        return flat
    flat.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        os.close(os.open(flat / f"{i:07d}.png", os.O_CREAT | os.O_WRONLY, 0o644))
    (top / f".done{n}").touch()
    return flat


def root_of(flat: Path) -> Path:
    """ROOT whose one class folder ROOT/d/c is ``flat`` (a link: the files are made once)."""
    root = flat.parent / f"root-{flat.name}"
    if not (root / "d" / "c").exists():
        (root / "d").mkdir(parents=True, exist_ok=True)
        os.symlink(flat, root / "d" / "c")
    return root


def listing_module(which: str, old: str, chunk: int):
    from distill.data import listing  # lazy: the child imports before its first reading
    if which == "old":
        spec = importlib.util.spec_from_file_location("old_listing", Path(old) / "distill" / "data" / "listing.py")
        listing = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = listing  # dataclasses look their module up
        spec.loader.exec_module(listing)
    elif chunk:
        listing.SORT_CHUNK = chunk
    return listing


def status(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+) kB", f.read()).group(1)) * 1024


def measure(which: str, old: str, folder: str, traced: bool, chunk: int = 0, what: str = "pack") -> dict:
    listing = listing_module(which, old, chunk)
    gc.collect()
    if traced:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # peak RSS (VmHWM) := RSS now
        base, anon0 = status("VmRSS"), status("RssAnon")
    t0 = time.perf_counter()
    packed = listing.pack_images(Path(folder)) if what == "pack" else listing.list_images(root_of(Path(folder)))[1]
    took = time.perf_counter() - t0
    images = len(packed.size)
    if traced:
        now, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return {"peak": peak - base, "held": now - base, "images": images}
    return {"peak": status("VmHWM") - base, "held": status("RssAnon") - anon0, "images": images, "s": took}


def main() -> None:
    if run_child(measure):
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="20000,200000", help="images in the flat folder")
    p.add_argument("--old-rev", default=OLD_REV, help="the code compared against (default: main before this change)")
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "distill-flat-listing",
                   help="where the folders are built (kept: reused by a later run)")
    p.add_argument("--rounds", type=int, default=2, help="fresh processes per arm for RSS and time (the smaller kept)")
    p.add_argument("--chunk", type=int, default=8192, help="a third arm: the new code with this SORT_CHUNK (0: none)")
    p.add_argument("--what", default="pack,list", help="pack: pack_images(FOLDER); list: list_images(ROOT), ROOT/d/c "
                   "being FOLDER (a table each)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flat-listing-bench-"))
    old = old_checkout(REPO, args.old_rev, tmp)
    args.dir.mkdir(parents=True, exist_ok=True)
    arms = [("old", 0), ("new", 0)] + ([("new", args.chunk)] if args.chunk else [])
    rows = []
    try:
        for what, n in ((w, int(x)) for w in args.what.split(",") for x in args.sizes.split(",")):
            folder = str(build(args.dir, n))
            got: dict = {}
            for arm in [a for r in range(args.rounds) for a in (arms if r % 2 == 0 else arms[::-1])]:  # interleaved
                r = in_fresh_process(__file__, {"which": arm[0], "old": str(old), "folder": folder, "traced": False,
                                                "chunk": arm[1], "what": what})
                assert r["images"] == n, r
                got[arm] = {k: min(v, got.get(arm, r)[k]) for k, v in r.items()}
            for arm in arms:
                got[arm + ("t",)] = in_fresh_process(__file__, {"which": arm[0], "old": str(old), "folder": folder,
                                                                "traced": True, "chunk": arm[1],
                                                                "what": what})
            rows.append((what, n, got))
            print(f"({what} {n:,} done)", file=sys.stderr, flush=True)
        names = " / ".join("old" if w == "old" else f"new{f' chunk {c}' if c else ''}" for w, c in arms)
        for what in args.what.split(","):
            print(f"\n{'pack_images(FOLDER)' if what == 'pack' else 'list_images(ROOT), ROOT/d/c = FOLDER'}; "
                  f"B/img = bytes per image; arms: {names}\n\n| images | peak RSS growth B/img | RssAnon held B/img | "
                  "tracemalloc peak B/img | tracemalloc held B/img | peak RSS growth MB | s |\n"
                  "|---:|---:|---:|---:|---:|---:|---:|")
            mine = [(n, g) for w, n, g in rows if w == what]
            for n, g in mine:
                col = lambda k, t=(), f=lambda v: f"{v / n:.0f}": " / ".join(f(g[a + t][k]) for a in arms)  # noqa: E731
                print(f"| {n:,} | {col('peak')} | {col('held')} | {col('peak', ('t',))} | {col('held', ('t',))} | "
                      f"{col('peak', (), lambda v: f'{v / 2**20:.1f}')} | {col('s', (), lambda v: f'{v:.2f}')} |")
            if len(mine) > 1:
                (n0, g0), (n1, g1) = mine[0], mine[-1]
                for k, t in (("peak", ()), ("peak", ("t",))):
                    grow = " / ".join(f"{(g1[a + t][k] - g0[a + t][k]) / (n1 - n0):.1f}" for a in arms)
                    print(f"growth per added image, {n0:,} -> {n1:,}, {'tracemalloc' if t else 'RSS'} peak: {grow}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the old copy; the folders stay in --dir


if __name__ == "__main__":
    main()
