"""Memory while a flat folder is listed: main's one sorted list of a folder's entries vs sorted runs on disk.

    PYTHONPATH=. .venv/bin/python benchmarks/flat_listing.py --sizes 20000,200000 [--old-rev c5fea07] [--dir DIR] [--rounds 2]
        [--what pack,list,walk] [--chunk 8192 | --arms old:2048,new:2048,new:2048:16]

Builds DIR/flatN/NNNNNNN.png: N empty files in ONE folder (a camera dump), kept in ``--dir`` (default: the system's
temporary folder's ``distill-flat-listing``) and reused by a later run, since making 10^5 files takes a while. The
old code is ``distill/data/listing.py`` of ``--old-rev`` (a ``git archive`` copy, made here), loaded beside this
checkout's modules. Each figure comes from a fresh process (:mod:`benchmarks.fresh_process`) that runs
``pack_images(FOLDER)`` (``--what pack``: what ``scan_folder`` runs, the walk packed) or ``list_images(ROOT)``
(``--what list``: the data root's listing for train, eval and export, with ROOT/d/c a link to FOLDER: one flat class
folder) or ``walk_images(FOLDER)`` with each file dropped as it comes (``--what walk``: the walk's own memory, the
sort's runs and their merge, without the packed result that grows with the folder), old and new side by side at each
size, and with ``--chunk`` also the new code with ``SORT_CHUNK`` set to it (how the peak follows the chunk, not the
folder). ``--arms`` names the arms instead, ``which:chunk[:fan_in]`` each (``which``: old or new; ``chunk``: its
``SORT_CHUNK``, 0 for the default; ``fan_in``: the new code's ``MERGE_FAN_IN``): with a small chunk a folder this
machine lists in minutes makes hundreds of runs, which the old code (main before session 30) merged all at once and
the new one at most ``MERGE_FAN_IN`` at a time (the ``runs`` column: the runs, and how many are merged at once):

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


def listing_module(which: str, old: str, chunk: int, fan_in: int = 0):
    from distill.data import extsort, listing  # lazy: the child imports before its first reading
    if which == "old":
        spec = importlib.util.spec_from_file_location("old_listing", Path(old) / "distill" / "data" / "listing.py")
        listing = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = listing  # dataclasses look their module up
        spec.loader.exec_module(listing)
        if chunk and not hasattr(listing, "SORT_CHUNK"):
            raise SystemExit(f"{old}: its listing has no SORT_CHUNK to set (--old-rev before session 29)")
    elif fan_in:
        extsort.MERGE_FAN_IN = fan_in
    if chunk:
        listing.SORT_CHUNK = chunk
    return listing


def status(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+) kB", f.read()).group(1)) * 1024


def measure(which: str, old: str, folder: str, traced: bool, chunk: int = 0, what: str = "pack",
            fan_in: int = 0) -> dict:
    listing = listing_module(which, old, chunk, fan_in)
    gc.collect()
    if traced:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # peak RSS (VmHWM) := RSS now
        base, anon0 = status("VmRSS"), status("RssAnon")
    t0 = time.perf_counter()
    if what == "walk":
        images = sum(1 for _ in listing.walk_images(folder))
    else:
        packed = listing.pack_images(Path(folder)) if what == "pack" else listing.list_images(root_of(Path(folder)))[1]
        images = len(packed.size)
    took = time.perf_counter() - t0
    if traced:
        now, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return {"peak": peak - base, "held": now - base, "images": images}
    return {"peak": status("VmHWM") - base, "held": status("RssAnon") - anon0, "images": images, "s": took}


TITLES = {"pack": "pack_images(FOLDER)", "list": "list_images(ROOT), ROOT/d/c = FOLDER",
          "walk": "walk_images(FOLDER), each file dropped"}


def parse_arm(text: str) -> tuple[str, int, int]:
    which, chunk, *fan_in = text.split(":")
    if which not in ("old", "new") or len(fan_in) > 1 or (fan_in and which == "old"):
        raise SystemExit(f"--arms: {text!r} is not old:CHUNK or new:CHUNK[:FAN_IN]")
    return which, int(chunk), int(fan_in[0]) if fan_in else 0


def runs(n: int, which: str, chunk: int, fan_in: int, old_spills: bool = True) -> str:
    """How many sorted runs a folder of ``n`` listed entries makes (the first one holds one more), and how many are
    merged at once: every one by the old code (main from session 29 to 30), at most the fan-in by the new; ``-``
    for old code that sorted a folder in memory (``old_spills`` False: before session 29)."""
    from distill.data import extsort, listing  # lazy: as listing_module's
    if which == "old" and not old_spills:
        return "-"
    chunk = chunk or listing.SORT_CHUNK
    count = 0 if n <= chunk else 1 + -(-(n - chunk - 1) // chunk)
    return f"{count}: {count if which == 'old' else min(count, fan_in or extsort.MERGE_FAN_IN)}"


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
    p.add_argument("--arms", default="", help="the arms instead: which:chunk[:fan_in],... (which: old or new; chunk: "
                   "SORT_CHUNK, 0: the default; fan_in: the new code's MERGE_FAN_IN)")
    p.add_argument("--what", default="pack,list", help="pack: pack_images(FOLDER); list: list_images(ROOT), ROOT/d/c "
                   "being FOLDER; walk: walk_images(FOLDER), nothing kept (a table each)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flat-listing-bench-"))
    old = old_checkout(REPO, args.old_rev, tmp)
    args.dir.mkdir(parents=True, exist_ok=True)
    old_spills = "SORT_CHUNK" in (old / "distill" / "data" / "listing.py").read_text()
    arms = ([parse_arm(a) for a in args.arms.split(",")] if args.arms else
            [("old", 0, 0), ("new", 0, 0)] + ([("new", args.chunk, 0)] if args.chunk else []))
    rows = []
    try:
        for what, n in ((w, int(x)) for w in args.what.split(",") for x in args.sizes.split(",")):
            folder = str(build(args.dir, n))
            got: dict = {}
            for arm in [a for r in range(args.rounds) for a in (arms if r % 2 == 0 else arms[::-1])]:  # interleaved
                r = in_fresh_process(__file__, {"which": arm[0], "old": str(old), "folder": folder, "traced": False,
                                                "chunk": arm[1], "fan_in": arm[2], "what": what})
                assert r["images"] == n, r
                got[arm] = {k: min(v, got.get(arm, r)[k]) for k, v in r.items()}
            for arm in arms:
                got[arm + ("t",)] = in_fresh_process(__file__, {"which": arm[0], "old": str(old), "folder": folder,
                                                                "traced": True, "chunk": arm[1], "fan_in": arm[2],
                                                                "what": what})
            rows.append((what, n, got))
            print(f"({what} {n:,} done)", file=sys.stderr, flush=True)
        names = " / ".join(f"{w}{f' chunk {c}' if c else ''}{f' fan-in {k}' if k else ''}" for w, c, k in arms)
        for what in args.what.split(","):
            print(f"\n{TITLES[what]}; B/img = bytes per image; runs: sorted runs, merged at once; arms: {names}\n\n"
                  "| images | runs | peak RSS growth B/img | RssAnon held B/img | tracemalloc peak B/img | "
                  "tracemalloc held B/img | peak RSS growth MB | tracemalloc peak MB | s |\n"
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            mine = [(n, g) for w, n, g in rows if w == what]
            for n, g in mine:
                col = lambda k, t=(), f=lambda v: f"{v / n:.0f}": " / ".join(f(g[a + t][k]) for a in arms)  # noqa: E731
                mb = lambda v: f"{v / 2**20:.1f}"  # noqa: E731
                print(f"| {n:,} | {' / '.join(runs(n, *a, old_spills) for a in arms)} | {col('peak')} | {col('held')} | "
                      f"{col('peak', ('t',))} | {col('held', ('t',))} | {col('peak', (), mb)} | "
                      f"{col('peak', ('t',), mb)} | {col('s', (), lambda v: f'{v:.2f}')} |")
            if len(mine) > 1:
                (n0, g0), (n1, g1) = mine[0], mine[-1]
                for k, t in (("peak", ()), ("peak", ("t",))):
                    grow = " / ".join(f"{(g1[a + t][k] - g0[a + t][k]) / (n1 - n0):.1f}" for a in arms)
                    print(f"growth per added image, {n0:,} -> {n1:,}, {'tracemalloc' if t else 'RSS'} peak: {grow}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the old copy; the folders stay in --dir


if __name__ == "__main__":
    main()
