"""Top-k teacher logits vs full rows: does a compact cache train the same students? (issue "Scale")

A ``--logits topk`` cache keeps the teacher's K largest logits per row and one value for the rest
(TinyViT's sparse soft labels; :mod:`distill.teacher.cache.compact`). This benchmark trains the same
recipes (kd and fm by default) from a full-row cache and from a top-K cache of the *same* views (same
images, view seed, policy and pixels; only the stored logits differ), over several seeds, and compares
each run's target mean test accuracy (``summary.json``'s ``target_acc``, the selected checkpoint),
paired by seed: both arms of a seed start from the same weights and read the same test images
(``scipy.stats.ttest_rel``, Welch alongside: :func:`distill.report.stats.verdict`).

The built-in digits have 10 classes, so K is small here (default 3, 30 % of the classes; TinyViT keeps
top-10 % of ImageNet-1k's logits at K=100, ml-dr top-10 of 1k).

Usage (the demo's data, teacher and cache as the full-row arm; builds only the top-K cache):
    make demo    # or: .venv/bin/distill demo
    PYTHONPATH=$PWD .venv/bin/python benchmarks/topk_quality.py --reuse demo_out [--topk 3] \
        [--seeds 0,1,2] [--epochs 30] [--recipes kd,fm] [--out runs/bench-topk]
Without ``--reuse`` it materializes the digits, bootstraps the demo teacher and builds both caches under
``--out`` (as ``make demo`` does). Finished runs are reused; interrupted ones resume.
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from distill.data import DomainFolder
from distill.data.builtin import materialize
from distill.recipes import load_recipe, recipes_view_policy, train_or_resume
from distill.records import RunSummary, pct
from distill.report.stats import mean_std, paired, pm, verdict
from distill.teacher.bootstrap.presets import DEMO_ARCH
from distill.teacher.bootstrap.train import bootstrap_teacher
from distill.teacher.cache import CacheBuildConfig, CacheOptions, PixelOptions, run_cache_build

VIEWS, PIXELS, PRETRAIN_FRACTION = 8, 32, 0.3  # the demo's cache (distill/demo.py) and teacher pool
TEACHER_FILE = "open_clip_model.safetensors"


def build(root: Path, ckpt: Path, out: Path, topk: int | None) -> Path:
    """A policy cache of the demo's views (8 per image, view seed 0, pixels at 32 px): full rows or top-K."""
    logits = {"logits": "topk", "topk": topk} if topk else {}
    run_cache_build(CacheBuildConfig(
        data=root, out=out, arch=DEMO_ARCH, pretrained=str(ckpt),
        options=CacheOptions(views=VIEWS, seed=0, policy=recipes_view_policy(), **logits),
        pixels=PixelOptions(((PIXELS, PIXELS),)), workers=2, progress=False, device="cpu"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reuse", type=Path, default=None,
                    help="a demo's out folder (data/, teacher/, cache/): its cache is the full-row arm")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-topk"))
    ap.add_argument("--topk", type=int, default=3, help="K of the top-K cache (1 <= K < classes)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=30, help="epochs per run (the demo's fm budget)")
    ap.add_argument("--recipes", default="kd,fm")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here (default OUT/topk.json)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]

    base = args.reuse or args.out
    root = materialize(base / "data")
    if args.reuse is not None:
        ckpt, full = args.reuse / "teacher" / TEACHER_FILE, args.reuse / "cache"
    else:
        ckpt = bootstrap_teacher(DomainFolder(root, pretrain_fraction=PRETRAIN_FRACTION), args.out / "teacher",
                                 progress=False)
        full = build(root, ckpt, args.out / "cache-full", None)
    caches = {"full": full, f"top{args.topk}": build(root, ckpt, args.out / f"cache-top{args.topk}", args.topk)}

    results: dict[str, dict[str, list[RunSummary]]] = {}
    for recipe in recipes:
        for arm, cache in caches.items():
            for seed in seeds:
                cfg = load_recipe(recipe, {"data.root": root, "cache": cache, "run.seed": seed,
                                           "run.out": args.out / f"{recipe}-{arm}-s{seed}", "run.progress": False,
                                           "optim.epochs": args.epochs})
                print(f"{recipe} from the {arm} cache, seed {seed}: {args.epochs} epochs", flush=True)
                results.setdefault(recipe, {}).setdefault(arm, []).append(train_or_resume(cfg))

    top = f"top{args.topk}"
    print(f"\ntarget mean test accuracy (%), selected checkpoint, seeds {seeds}, {args.epochs} epochs, "
          f"top-K cache K={args.topk} of {len(DomainFolder(root).classes)} classes")
    print(f"| recipe | full rows | top-{args.topk} | top-{args.topk} - full (paired by seed) |")
    print("|---|---|---|---|")
    out: dict[str, object] = {"topk": args.topk, "epochs": args.epochs, "seeds": seeds, "caches": {
        k: str(v) for k, v in caches.items()}, "machine": platform.processor() or platform.machine()}
    for recipe, arms in results.items():
        a = [s.target_acc for s in arms["full"]]
        b = [s.target_acc for s in arms[top]]
        assert all(v is not None for v in a + b), "every run has target domains"
        line = verdict(b, a, pair=True)
        print(f"| {recipe} | {pm(a)} | {pm(b)} | {line} |")
        out[recipe] = {"full": a, top: b, "diff_mean": mean_std(b)[0] - mean_std(a)[0], "paired_p": paired(b, a).p,
                       "verdict": line, "per_seed": {arm: [{d: pct(v) for d, v in s.test_acc.items()} for s in runs]
                                                     for arm, runs in arms.items()}}
    path = args.json or args.out / "topk.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
