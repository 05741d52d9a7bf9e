"""Label-free selection vs source validation: the target accuracy of the epoch each criterion keeps.

One ``fm_unlabeled`` run per seed (the digits suite, the honest teacher and the policy cache of
``benchmarks/generalization.py``: pretrained on ``data.pretrain_fraction`` 0.3 that no student sees,
8 ``--policy fm`` views per image, pixels stored at 32 px) with ``run.select_on: teacher_agreement``
and ``run.eval_every 1``: every epoch records source validation accuracy, the student's top-1
agreement with the cached teacher on the unlabeled pool (no target label read) and the target test
accuracy. From the same run's ``metrics.csv`` each criterion picks its epoch (first of ties, as the
trainer does) and the table compares the target accuracy of the two picks, paired by seed
(``scipy.stats.ttest_rel``, with Welch's test alongside: :func:`distill.report.stats.verdict`).
The last epoch and the best target epoch (an oracle no run can use: it reads target labels) are
printed for scale.

The comparison is paired and free: both criteria see the very same weights at every epoch, so the
difference is the selection rule alone, not training noise.

Usage:
    .venv/bin/python benchmarks/selection.py [--out runs/bench-selection] [--seeds 0,1,2] [--epochs 60]
        [--reuse runs/bench-generalization] [--json benchmarks/runs/selection.json]
``--reuse DIR``: take the data, teacher and cache from a generalization benchmark's ``--out`` (or the
demo's ``demo_out``) instead of building them (~5 minutes). ``--quick``: the quick suite, seeds 0,1,
3 epochs (a smoke run of every stage, not a result). Finished runs are reused; interrupted ones resume.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import platform
from pathlib import Path
from typing import Any

from distill.data import DomainFolder
from distill.data.builtin import materialize
from distill.recipes import load_recipe, recipes_view_policy, train_or_resume
from distill.records import RUN_METRICS, pct
from distill.report.stats import mean_std, paired, pm, verdict
from distill.teacher.bootstrap.presets import DEMO_ARCH
from distill.teacher.bootstrap.train import bootstrap_teacher
from distill.teacher.cache import CacheBuildConfig, CacheOptions, PixelOptions, run_cache_build
from distill.train.checkpoints import best_epoch

PRETRAIN_FRACTION = 0.3
RECIPE = "fm_unlabeled"
CRITERIA = {"source_val": "source_val_acc", "teacher_agreement": "teacher_agreement"}  # -> metrics.csv column


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """``RUN/metrics.csv`` as rows of floats (empty cells: NaN)."""
    with (run_dir / RUN_METRICS).open() as f:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()} for row in csv.DictReader(f)]


def picks(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each criterion's epoch (first of ties) and the target accuracy there; the last and the oracle epochs."""
    by_epoch = {int(r["epoch"]): r for r in rows}
    out = {}
    for name, key in CRITERIA.items():
        epoch = best_epoch(rows, key)
        out[name] = {"epoch": int(epoch), "value": by_epoch[epoch][key], "target_acc": by_epoch[epoch]["target_acc"]}
    last = rows[-1]
    out["last epoch"] = {"epoch": int(last["epoch"]), "target_acc": last["target_acc"]}
    oracle = best_epoch(rows, "target_acc")
    out["oracle (reads target labels)"] = {"epoch": int(oracle), "target_acc": by_epoch[oracle]["target_acc"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-selection"))
    ap.add_argument("--reuse", type=Path, default=None,
                    help="a generalization benchmark's --out (data/, teacher/, cache/) to take the data, teacher "
                         "and cache from")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/runs/selection.json"))
    ap.add_argument("--seeds", default=None, help="comma-separated training seeds (default 0,1,2; --quick 0,1)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per run (default 60, RESULTS.md's CPU budget)")
    ap.add_argument("--views", type=int, default=8, help="policy views per image in the cache (when built here)")
    ap.add_argument("--quick", action="store_true", help="smoke run on the quick suite (every stage, no result)")
    args = ap.parse_args()
    seeds = [int(s) for s in (args.seeds or ("0,1" if args.quick else "0,1,2")).split(",") if s.strip()]
    epochs = args.epochs or (3 if args.quick else 60)
    size = {"optim.batch_size": 16, "optim.warmup_epochs": 0} if args.quick else {}

    base = args.reuse or args.out
    root = materialize(base / "data", quick=args.quick)
    cache_dir = base / "cache"
    if args.reuse is None:
        dataset = DomainFolder(root, pretrain_fraction=PRETRAIN_FRACTION)
        ckpt = bootstrap_teacher(dataset, args.out / "teacher", quick=args.quick, progress=False)
        # the one build entry (as `distill cache build`): templates and pretraining pool from the teacher.json
        run_cache_build(CacheBuildConfig(
            data=root, out=cache_dir, arch=DEMO_ARCH, pretrained=str(ckpt),
            options=CacheOptions(views=args.views, seed=0, policy=recipes_view_policy()),
            pixels=PixelOptions(((32, 32),)), workers=0 if args.quick else 2, progress=False, device="cpu"))

    per_seed: list[dict[str, Any]] = []
    for seed in seeds:
        cfg = load_recipe(RECIPE, {"data.root": root, "cache": cache_dir, "run.out": args.out / f"{RECIPE}-s{seed}",
                                   "run.seed": seed, "run.progress": False, "optim.epochs": epochs,
                                   "run.eval_every": 1, "run.select_on": "teacher_agreement", **size})
        print(f"{RECIPE} seed {seed}: {epochs} epochs, selecting on teacher agreement, test every epoch")
        train_or_resume(cfg)
        per_seed.append({"seed": seed, **picks(read_metrics(Path(cfg.run.out)))})

    names = [*CRITERIA, "last epoch", "oracle (reads target labels)"]
    print(f"\n{RECIPE}, {epochs} epochs, seeds {seeds}: target mean test accuracy (%) of the epoch each rule keeps")
    print("| selected on | epochs kept | target accuracy |")
    print("|---|---|---|")
    for name in names:
        accs = [s[name]["target_acc"] for s in per_seed]
        print(f"| {name} | {', '.join(str(s[name]['epoch']) for s in per_seed)} | {pm(accs)} |")
    agree = [s["teacher_agreement"]["target_acc"] for s in per_seed]
    val = [s["source_val"]["target_acc"] for s in per_seed]
    line = verdict(agree, val, pair=True)
    print(f"\nteacher_agreement - source_val: {line}")
    result = {"recipe": RECIPE, "epochs": epochs, "seeds": seeds, "quick": args.quick, "per_seed": per_seed,
              "teacher_agreement_minus_source_val": {"diff": mean_std(agree)[0] - mean_std(val)[0],
                                                     "paired_p": paired(agree, val).p, "verdict": line},
              "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote {args.json}; target accuracies {', '.join(pct(a) for a in agree)} (agreement) vs "
          f"{', '.join(pct(v) for v in val)} (source val)")


if __name__ == "__main__":
    main()
