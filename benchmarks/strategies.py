"""Per-domain test accuracy of every training strategy on the built-in suite, with the demo teacher.

Trains ``erm``, ``kd`` and each feature-alignment strategy with the demo's recipe (source =
``mnist``, a real domain; targets = the other three), then prints one table: per-domain test
accuracy for the teacher's zero-shot head and each student, mean target accuracy, and the
params and FLOPs of teacher (image tower) and student.

Goal: the best strategy's mean target accuracy >= the teacher's zero-shot mean target accuracy
at <= 5% of the teacher's FLOPs.

Usage (after ``make demo``, which writes demo_out/ with the data, teacher and cache):
    .venv/bin/python benchmarks/strategies.py [--demo-out demo_out] [--out benchmarks/runs]
        [--strategies erm,kd,rise,vl2v,customkd] [--epochs 30] [--seeds 0]
Finished runs are reused (delete --out to retrain); interrupted ones resume.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo-out", type=Path, default=Path("demo_out"))
    ap.add_argument("--cache", type=Path, default=None, help="teacher cache (default DEMO_OUT/cache)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/runs"))
    ap.add_argument("--strategies", default="erm,kd,rise,vl2v,customkd")
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds; the table shows their mean")
    ap.add_argument("--workers", type=int, default=None, help="override run.workers (0: decode in-process)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()

    from distill.data import DomainFolder
    from distill.demo import SOURCE, recipe, train_or_resume
    from distill.records import CacheManifest
    from distill.teacher.cache import TeacherCache

    roots = sorted((args.demo_out / "data").glob("digits-full-seed*"))
    cache_dir = args.cache or args.demo_out / "cache"
    if not roots or not CacheManifest.exists_in(cache_dir):
        raise SystemExit(f"{args.demo_out}: run `make demo` (or `distill demo --out {args.demo_out}`) first")
    root = roots[0]
    dataset = DomainFolder(root)
    cache = TeacherCache.open(cache_dir)
    targets = [d for d in dataset.domains if d not in SOURCE]
    zs = {d: 100.0 * v["test"] for d, v in cache.zero_shot_accuracy().items() if "test" in v}
    teacher_flops = cache.manifest.teacher_flops_per_image

    results: dict[str, dict] = {}
    for name in args.strategies.split(","):
        accs, summary = [], None
        for seed in [int(s) for s in args.seeds.split(",")]:
            base = recipe(name, root, cache_dir, args.out / f"{name}-seed{seed}", progress=not args.no_progress)
            base["run"]["seed"] = seed
            if args.epochs:
                base["optim"]["epochs"] = args.epochs
            if args.workers is not None:
                base["run"]["workers"] = args.workers
            print(f"== {name} (seed {seed})", flush=True)
            summary = train_or_resume(base)
            accs.append(summary["test_acc"])
        results[name] = {"acc": {d: statistics.mean(a[d] for a in accs) for d in accs[0]}, "summary": summary,
                         "per_seed": accs}

    def tmean(acc: dict) -> float:
        return statistics.mean(acc[d] for d in targets if d in acc)

    def spread(name: str) -> str:
        """Target mean over seeds as mean ± sample std (n): the figure a ranking is read from."""
        per = [tmean(a) for a in results[name]["per_seed"]]
        sd = statistics.stdev(per) if len(per) > 1 else float("nan")
        return f"{statistics.mean(per):.1f} ± {sd:.1f} (n={len(per)})"

    doms = dataset.domains
    print(f"\nsource {SOURCE}, targets {targets}; test-split accuracy (%), mean over seeds {args.seeds}")
    head = ["model", *[f"{d}{'*' if d in SOURCE else ''}" for d in doms], "target mean ± std over seeds", "params",
            "MFLOPs", "FLOPs vs teacher"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    teacher_params = None
    print("| teacher zero-shot | " + " | ".join(f"{zs.get(d, math.nan):.1f}" for d in doms)
          + f" | {tmean(zs):.1f} | {teacher_params or '-'} | {teacher_flops / 1e6:.1f} | 100% |")
    for name, r in results.items():
        s = r["summary"]
        print(f"| {name} | " + " | ".join(f"{r['acc'].get(d, math.nan):.1f}" for d in doms)
              + f" | {spread(name)} | {s['params'] / 1e6:.2f}M | {s['flops'] / 1e6:.2f} | "
              f"{100 * s['flops'] / teacher_flops:.1f}% |")
    best = max(results, key=lambda n: tmean(results[n]["acc"]))
    gap = tmean(results[best]["acc"]) - tmean(zs)
    if "erm" in results and best != "erm":  # a difference is real only beyond two standard errors
        b, e = ([tmean(a) for a in results[n]["per_seed"]] for n in (best, "erm"))
        if len(b) > 1 and len(e) > 1:
            se = math.sqrt(statistics.variance(b) / len(b) + statistics.variance(e) / len(e))
            d = statistics.mean(b) - statistics.mean(e)
            print(f"{best} vs erm: {d:+.1f} points, 2 standard errors = {2 * se:.1f} -> "
                  f"{'a real difference' if abs(d) > 2 * se else 'within noise'}")
    print(f"\nbest strategy: {best} ({tmean(results[best]['acc']):.1f} mean target vs teacher zero-shot "
          f"{tmean(zs):.1f}: {gap:+.1f} points) -> goal {'met' if gap >= 0 else 'MISSED'}")
    (args.out / "strategies.json").write_text(json.dumps(
        {"teacher_zero_shot": zs, "results": {k: v["acc"] for k, v in results.items()},
         "per_seed": {k: v["per_seed"] for k, v in results.items()}, "best": best}, indent=2))


if __name__ == "__main__":
    main()
