"""Open vocabulary with and without fm's text-anchor term (``strategy.text_anchor_weight``), seed-paired.

Trains ``configs/openvocab.yaml`` (fm, text head, feature_weight 1, seven/eight/nine withheld) for each seed
twice -- as is, and with ``strategy.text_anchor_weight=W`` -- then re-targets every run to all ten names and
scores it on the test images of the withheld classes (as ``benchmarks/withheld.py RUN_DIR`` does), next to
the teacher's zero-shot on the same images. Prints per-domain accuracy (mean ± std over seeds), the
student / teacher ratio and the paired test of the two arms (distill/report/stats.py).

Usage (after ``make demo``, which writes demo_out/ with the data, teacher and cache):
    .venv/bin/python benchmarks/openvocab_geometry.py [--demo-out demo_out] [--out runs/openvocab_geometry]
        [--epochs 30] [--seeds 0,1,2] [--weight 1.0] [--eval-every 10]
Finished runs (RUN/summary.json) are reused; delete --out to retrain.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from distill.config import load_train_config
from distill.data import DomainFolder
from distill.data.split import SplitRule
from distill.export.retarget import retarget, teacher_source
from distill.records import RUN_CONFIG, RUN_SUMMARY, CacheManifest, RunSummary
from distill.report.stats import mean_std, pm, verdict
from distill.report.withheld import student_withheld_accuracy, teacher_withheld_accuracy
from distill.student.model import load_student
from distill.teacher.cache import TeacherCache

RECIPE = Path(__file__).resolve().parent.parent / "configs" / "openvocab.yaml"


def train(run: Path, demo: Path, seed: int, epochs: int, eval_every: int, weight: float) -> None:
    """One ``distill train`` of the recipe into ``run`` (skipped when it finished before)."""
    if (run / RUN_SUMMARY).is_file():
        return
    sets = {"data.root": demo / "data" / "digits-full-seed0", "cache": demo / "cache", "optim.epochs": epochs,
            "run.eval_every": eval_every, "run.seed": seed, "run.out": run}
    if weight:
        sets["strategy.text_anchor_weight"] = weight
    cmd = [sys.executable, "-m", "distill", "train", "-c", str(RECIPE), "--no-progress"]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def score(run: Path) -> dict[str, float]:
    """Per domain: the re-targeted student's accuracy on the test images of the run's withheld classes."""
    summary = RunSummary.read(run)
    cfg = load_train_config(run / RUN_CONFIG)
    cache = Path(cfg.caches()[0])
    keys = SplitRule.from_cache(CacheManifest.read(cache).dataset)
    keys.update(cfg.data.split_keys())
    dataset = DomainFolder(Path(cfg.data.root), **keys)
    student = load_student(Path(summary.checkpoint))
    student = retarget(student, list(dataset.classes), teacher_source(student))
    return student_withheld_accuracy(student, dataset, list(dataset.domains), list(cfg.data.withhold_classes))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo-out", type=Path, default=Path("demo_out"))
    ap.add_argument("--out", type=Path, default=Path("runs/openvocab_geometry"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--weight", type=float, default=1.0, help="strategy.text_anchor_weight of the new arm")
    ap.add_argument("--eval-every", type=int, default=10)
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    arms = {"openvocab (today)": ("base", 0.0), f"+ text anchor {args.weight:g}": (f"anchor{args.weight:g}",
                                                                                  args.weight)}
    acc: dict[str, list[dict[str, float]]] = {}
    for label, (stem, weight) in arms.items():
        runs = [args.out / f"{stem}-s{seed}" for seed in seeds]
        for run, seed in zip(runs, seeds):
            train(run, args.demo_out, seed, args.epochs, args.eval_every, weight)
        acc[label] = [score(run) for run in runs]
    cfg = load_train_config(args.out / f"base-s{seeds[0]}" / RUN_CONFIG)
    teacher = teacher_withheld_accuracy(TeacherCache.open(args.demo_out / "cache"), list(cfg.data.withhold_classes))
    domains = list(teacher)
    t_mean = mean_std(list(teacher.values()))[0]
    print(f"\nwithheld {', '.join(cfg.data.withhold_classes)}; {args.epochs} epochs, seeds {args.seeds}; "
          "test accuracy (%) on those classes, re-targeted to all names, mean ± std over seeds\n")
    print("| model | " + " | ".join(domains) + " | mean | / teacher |")
    print("|---|" + "---|" * (len(domains) + 2))
    print("| teacher zero-shot | " + " | ".join(f"{100 * teacher[d]:.1f}" for d in domains)
          + f" | {100 * t_mean:.1f} | 1.00x |")
    means: dict[str, list[float]] = {}
    for label, rows in acc.items():
        means[label] = [mean_std([r[d] for d in domains])[0] for r in rows]
        ratios = [m / t_mean for m in means[label]]
        r_mean, r_std = mean_std(ratios)
        print(f"| {label} | " + " | ".join(pm([r[d] for r in rows]) for d in domains)
              + f" | {pm(means[label])} | {r_mean:.2f}x ± {r_std:.2f} |")
    new, old = list(means.values())[1], list(means.values())[0]
    print(f"\ntext anchor vs today, withheld mean (paired by seed): {verdict(new, old, pair=True)}")
    for d in domains:
        rows_new, rows_old = list(acc.values())[1], list(acc.values())[0]
        print(f"  {d}: {verdict([r[d] for r in rows_new], [r[d] for r in rows_old], pair=True)}")


if __name__ == "__main__":
    main()
