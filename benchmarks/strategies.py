"""Per-domain test accuracy of every training strategy on the built-in suite, with the demo teacher.

Trains ``erm``, ``kd`` and each feature-alignment strategy from its ``configs/<name>.yaml`` recipe
(the one the demo trains: source = ``mnist``, a real domain; targets = the other three), then
prints one table: per-domain test accuracy for the teacher's zero-shot head and each student,
mean target accuracy, and the params and FLOPs of teacher (image tower) and student.

Goal: the best strategy's mean target accuracy >= the teacher's zero-shot mean target accuracy
at <= 5% of the teacher's FLOPs.

Usage (after ``make demo``, which writes demo_out/ with the data, teacher and cache):
    .venv/bin/python benchmarks/strategies.py [--demo-out demo_out] [--out benchmarks/runs]
        [--strategies erm,kd,rise,vl2v,customkd] [--epochs 30] [--seeds 0,1,2]
Finished runs are reused (delete --out to retrain); interrupted ones resume. Each strategy runs every
seed; the table shows target mean ± std (n) over the seeds, and a difference from erm is called real
only at Welch p < 0.05 over seeds (distill/report/stats.py).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from distill.data import DomainFolder
from distill.recipes import load_recipe, train_or_resume
from distill.records import CACHE_MANIFEST, CacheManifest, RunSummary, pct
from distill.report.stats import pm, two_se, verdict
from distill.teacher.cache import TeacherCache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo-out", type=Path, default=Path("demo_out"))
    ap.add_argument("--cache", type=Path, default=None, help="teacher cache (default DEMO_OUT/cache)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/runs"))
    ap.add_argument("--strategies", default="erm,kd,rise,vl2v,customkd")
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds; the table shows mean ± std over them")
    ap.add_argument("--workers", type=int, default=None, help="override run.workers (0: decode in-process)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()

    roots = sorted((args.demo_out / "data").glob("digits-full-seed*"))
    cache_dir = args.cache or args.demo_out / "cache"
    if not roots or not (cache_dir / CACHE_MANIFEST).is_file():
        raise SystemExit(f"{args.demo_out}: run `make demo` (or `distill demo --out {args.demo_out}`) first")
    root = roots[0]
    dataset = DomainFolder(root)
    cache = TeacherCache.open(cache_dir)
    zs = {d: v["test"] for d, v in cache.zero_shot_accuracy().items() if "test" in v}  # fractions
    teacher_flops = CacheManifest.read(cache_dir).teacher_flops_per_image

    source: list[str] = []
    results: dict[str, dict] = {}
    for name in args.strategies.split(","):
        accs: list[dict[str, float]] = []
        summary: RunSummary | None = None
        for seed in [int(s) for s in args.seeds.split(",")]:
            overrides = {"data.root": root, "cache": cache_dir, "run.out": args.out / f"{name}-seed{seed}",
                         "run.seed": seed, "run.progress": not args.no_progress}
            if args.epochs:
                overrides["optim.epochs"] = args.epochs
            if args.workers is not None:
                overrides["run.workers"] = args.workers
            cfg = load_recipe(name, overrides)  # configs/<name>.yaml, the recipe the demo trains too
            source = list(cfg.data.source)
            print(f"== {name} (seed {seed})", flush=True)
            summary = train_or_resume(cfg)
            accs.append(summary.test_acc)
        results[name] = {"acc": {d: statistics.mean(a[d] for a in accs) for d in accs[0]}, "summary": summary,
                         "per_seed": accs}
    targets = [d for d in dataset.domains if d not in source]

    def tmean(acc: dict) -> float:
        return statistics.mean(acc[d] for d in targets if d in acc)

    def per_seed(name: str) -> list[float]:
        """Each seed's target mean (fractions): the figures a ranking and its significance are read from."""
        return [tmean(a) for a in results[name]["per_seed"]]

    doms = dataset.domains
    print(f"\nsource {source}, targets {targets}; test-split accuracy (%), mean over seeds {args.seeds}")
    head = ["model", *[f"{d}{'*' if d in source else ''}" for d in doms], "target mean ± std over seeds", "params",
            "MFLOPs", "FLOPs vs teacher"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    teacher_params = None
    print("| teacher zero-shot | " + " | ".join(pct(zs.get(d, math.nan)) for d in doms)
          + f" | {pct(tmean(zs))} | {teacher_params or '-'} | {teacher_flops / 1e6:.1f} | 100% |")
    for name, r in results.items():
        s: RunSummary = r["summary"]
        print(f"| {name} | " + " | ".join(pct(r["acc"].get(d, math.nan)) for d in doms)
              + f" | {pm(per_seed(name))} | {s.params / 1e6:.2f}M | {s.flops / 1e6:.2f} | "
              f"{100 * s.flops / teacher_flops:.1f}% |")
    best = max(results, key=lambda n: tmean(results[n]["acc"]))
    gap = tmean(results[best]["acc"]) - tmean(zs)
    if "erm" in results and best != "erm":  # a difference is real only at Welch p < 0.05
        print(f"{best} vs erm: {verdict(per_seed(best), per_seed('erm'))}")
        if not two_se(per_seed(best), per_seed("erm"))[2]:
            print(f"  -> no strategy is shown better than erm with seeds {args.seeds}")
    print(f"\nbest strategy: {best} ({pct(tmean(results[best]['acc']))} mean target vs teacher zero-shot "
          f"{pct(tmean(zs))}: {100 * gap:+.1f} points) -> goal {'met' if gap >= 0 else 'MISSED'}")
    (args.out / "strategies.json").write_text(json.dumps(  # accuracies as fractions, as in every artifact
        {"teacher_zero_shot": zs, "results": {k: v["acc"] for k, v in results.items()},
         "per_seed": {k: v["per_seed"] for k, v in results.items()}, "best": best}, indent=2))


if __name__ == "__main__":
    main()
