"""Memory a teacher-cache build's per-sample structures hold: main's Python objects vs this checkout's columns.

    PYTHONPATH=. .venv/bin/python benchmarks/cache_build_memory.py --sizes 20000,200000 [--old-rev f3340c3] [--dir DIR]

Builds ROOT/d{0,1}/c{0,1,2}/NNNNNNN.jpg (N empty files, 20-byte relative paths: never decoded). In a fresh process
per figure (:mod:`benchmarks.fresh_process`), old (``--old-rev``'s whole ``distill``, a ``git archive`` copy put first
on ``sys.path``) and new side by side at each size: the dataset is listed, the random-weight ``distill-demo-vit``
teacher made and the plan made (``fm`` views, 3 per image: mixup/cutmix, so the partner pools are built); then
``build._shards`` runs over every shard with its DataLoader replaced by a probe, which measures when the build's
loop starts, every per-sample structure alive (the DataLoader's dataset and batch sampler, the partner pools, the
rows' attribute tensors, the selection); nothing decoded, the teacher never run. Figures, over the process just
before ``_shards``:

- RssAnon held at the loop's start, and after ``malloc_trim(0)`` (the freed temporaries glibc kept, given back; the
  process before is measured after one too);
- tracemalloc (another fresh process): what is allocated at the loop's start, and the peak of the set-up;
- pickled: the bytes of the DataLoader's dataset pickled, what each worker receives under spawn/forkserver.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import pickle
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

OLD_REV = "f3340c3"  # main before the column-backed build structures (session 28, fix-H)


def make_root(top: Path, n: int) -> Path:
    root = top / f"root{n}"
    if (top / f".done{n}").exists():
        return root
    for i in range(n):
        folder = root / f"d{i % 2}" / f"c{i % 3}"
        if i < 6:
            folder.mkdir(parents=True, exist_ok=True)
        os.close(os.open(folder / f"{i:07d}.jpg", os.O_CREAT | os.O_WRONLY, 0o644))
    (top / f".done{n}").touch()
    return root


def anon() -> int:
    with open("/proc/self/status") as f:
        return int(re.search(r"RssAnon:\s+(\d+) kB", f.read()).group(1)) * 1024


def measure(checkout: str, root: str, traced: bool) -> dict:
    sys.path.insert(0, checkout)  # this checkout's distill, or the old copy's
    import dataclasses  # lazy: after the path is set

    import torch

    import distill
    import distill.teacher.cache.build as build
    from distill.data.folder import DomainFolder
    from distill.data.view_policy import preset
    from distill.teacher.cache import CacheOptions, make_plan
    from distill.teacher.cache.shards import ResumableShards
    from distill.teacher.clip import Teacher
    from distill.teacher.prompts import DEFAULT_TEMPLATES

    assert Path(distill.__file__).resolve().is_relative_to(Path(checkout).resolve()), distill.__file__
    ds = DomainFolder(root)
    torch.manual_seed(0)
    teacher = Teacher("distill-demo-vit", None, ds.classes, DEFAULT_TEMPLATES)
    options = dataclasses.replace(CacheOptions(views=3, batch_size=192, shard_size=1024),
                                  policy=preset("fm", mixup=1.0, cutmix=1.0))
    plan = make_plan(ds, teacher, options)
    out = tempfile.TemporaryDirectory()  # _shards writes nothing here (its loader yields nothing); removed at exit
    shards = ResumableShards(Path(out.name) / "cache", 0, 1)
    got: dict = {}

    class Probe:
        def __init__(self, data, batch_sampler, **kw):
            self.data, self.batches = data, batch_sampler

        def __iter__(self):  # the build's loop starts: every structure is alive
            got["held"] = (tracemalloc.get_traced_memory()[0] if traced else anon()) - base
            if not traced:
                got["trim"] = (ctypes.CDLL("libc.so.6").malloc_trim(0), anon())[1] - base
            got["pickled"] = len(pickle.dumps(self.data))
            got["batches"] = sum(1 for _ in self.batches)
            return iter(())

    build.WorkerLoader = Probe
    if traced:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
    else:
        base = (ctypes.CDLL("libc.so.6").malloc_trim(0), anon())[1]  # the set-up's own freed memory given back too
    t0 = time.perf_counter()
    for _ in build._shards(ds, teacher, shards, plan, list(range(plan.num_shards)), False, 0, False):
        pass
    got["s"] = time.perf_counter() - t0
    if traced:
        got["peak"] = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    got["images"] = len(ds)
    out.cleanup()
    return got


def main() -> None:
    if run_child(measure):
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="20000,200000", help="images in the data root")
    p.add_argument("--old-rev", default=OLD_REV, help="the code compared against (default: main before this change)")
    p.add_argument("--dir", type=Path, help="where the trees are built (kept: reused by a later run)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cache-build-bench-"))
    old = old_checkout(REPO, args.old_rev, tmp)
    top = args.dir or tmp / "trees"
    top.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for n in (int(x) for x in args.sizes.split(",")):
            root = str(make_root(top, n))
            got = {}
            for which in ("old", "new", "new", "old"):  # RssAnon twice each, interleaved; the smaller kept
                r = in_fresh_process(__file__, {"checkout": str(old if which == "old" else REPO), "root": root,
                                                "traced": False})
                assert r["images"] == n, r
                got[which] = min([got.get(which, r), r], key=lambda x: x["held"])
            for which in ("old", "new"):
                got[which + "_t"] = in_fresh_process(__file__, {"checkout": str(old if which == "old" else REPO),
                                                                "root": root, "traced": True})
            assert got["old"]["batches"] == got["new"]["batches"], got
            rows.append((n, got))
            print(f"(size {n:,} done)", file=sys.stderr, flush=True)
        print("| images | RssAnon held at the loop, old / new B/img | then malloc_trim(0), old / new | "
              "tracemalloc held, old / new B/img | set-up peak, old / new | pickled dataset, old / new B/img | "
              "set-up s, old / new |\n|---:|---:|---:|---:|---:|---:|---:|")
        for n, g in rows:
            o, w, ot, nt = g["old"], g["new"], g["old_t"], g["new_t"]
            b = lambda r, k: f"{r[k] / n:.0f}"  # noqa: E731
            print(f"| {n:,} | {b(o, 'held')} / {b(w, 'held')} | {b(o, 'trim')} / {b(w, 'trim')} | "
                  f"{b(ot, 'held')} / {b(nt, 'held')} | {b(ot, 'peak')} / {b(nt, 'peak')} | "
                  f"{b(o, 'pickled')} / {b(w, 'pickled')} | {o['s']:.2f} / {w['s']:.2f} |")
        if len(rows) == 2:
            (n0, g0), (n1, g1) = rows
            growth = lambda w: (g1[w]["held"] - g0[w]["held"]) / (n1 - n0)  # noqa: E731
            print(f"\ngrowth with N (tracemalloc, bytes per added image): old {growth('old_t'):.1f}, "
                  f"new {growth('new_t'):.1f}; RssAnon: old {growth('old'):.1f}, new {growth('new'):.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the old copy, and the trees unless --dir put them elsewhere


if __name__ == "__main__":
    main()
