"""Source-free domain adaptation on the built-in digits suite: source-only vs shot vs teacher_pl vs sfda.

The source model is the demo's source-only ``erm`` student (``demo_out/runs/erm/checkpoints/best``,
trained on mnist). Each target domain is adapted on its own (its train split, labels unused; no
source image read) and the table reports the target's test accuracy.

Teachers are given as named sets of caches, ``--teachers NAME=CACHE[,CACHE...]`` (repeatable);
``shot`` needs none and runs once (at its own default step, lr 5e-4), ``teacher_pl`` and ``sfda``
run once per set. With several caches in a set, ``teacher_pl`` averages them with equal weights
while ``sfda`` weighs them per image by reliability. ``random`` in a set stands for a cache of a
*random-weights* teacher of the demo architecture (built on the fly; near-chance, near-flat
predictions): an unreliable teacher that a reliability-weighted fusion should learn to ignore.

Targets: sfda >= source-only + 15 points on the hardest target (lowest source-only accuracy),
and sfda above both baselines there. Each adaptation runs every seed of ``--seeds`` (default 0,1,2;
the source model is the same); cells are mean ± std (n) over the seeds, and "above" is claimed only
at Welch p < 0.05 over seeds (distill/report/stats.py).

Usage (after `distill demo --out demo_out`):
    .venv/bin/python benchmarks/sfda.py [--demo-out demo_out] [--epochs 10] [--out runs/bench-sfda]
        [--teachers demo=demo_out/cache --teachers demo+random=demo_out/cache,random]
        [--targets mnist_m,optdigits,mnist_c] [--seeds 0,1,2] [--threads 1] [--quick]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from distill.config import load_train_config
from distill.data import DomainFolder
from distill.data.split import SplitKeys
from distill.evaluate import DomainEvaluator
from distill.records import CacheManifest, RunSummary, TeacherManifest, pct, percent
from distill.report.stats import mean_std, pm, two_se, verdict
from distill.student.model import load_student
from distill.teacher import Teacher
from distill.teacher.cache import CacheBuildConfig, CacheOptions, TeacherCache, ViewConfig, run_cache_build
from distill.train import train
from distill.train.adapt import adapt_recipe


def adapt(ckpt: Path, target: str, root: Path, caches: list[Path], strategy: str, out: Path, epochs: int,
          batch_size: int = 64, lr: float | None = None, seed: int = 0) -> float:
    """Adapt ``ckpt`` to ``target`` alone (or reuse the finished run); its test accuracy there (a fraction)."""
    seconds = None
    if not RunSummary.exists_in(out):
        cfg = adapt_recipe(ckpt, [target], root, caches=caches, strategy=strategy, out=out,
                           optim={"epochs": epochs, "batch_size": batch_size, **({"lr": lr} if lr else {})},
                           run={"workers": 0, "progress": False, "seed": seed})
        t0 = time.perf_counter()
        train(load_train_config(None, base=cfg))
        seconds = time.perf_counter() - t0
    accuracy = RunSummary.read(out).test_acc[target]
    print(f"  {out.name}: {pct(accuracy)}" + (f"  ({seconds:.0f}s)" if seconds is not None else "  (done before)"),
          flush=True)
    return accuracy


def random_teacher_cache(demo_out: Path, root: Path, like: Path, out: Path) -> Path:
    """A cache of a random-weights teacher of the demo architecture (seed 1), with the views of cache ``like``."""
    meta = TeacherManifest.read(demo_out / "teacher")
    built = CacheManifest.read(like)
    views = built.views
    split = SplitKeys(pretrain_fraction=built.dataset.pretrain_fraction)  # the same rows as ``like``
    ds = DomainFolder(root, split.split_rule())
    torch.manual_seed(1)  # not the entry's seed 0 for random weights: this teacher is its own, passed in
    teacher = Teacher(meta.arch, None, ds.classes, meta.templates)
    run_cache_build(CacheBuildConfig(data=root, out=out, arch=meta.arch, pretrained="none", split=split,
                                     options=CacheOptions(views=views.count, seed=views.seed,
                                                          augment=ViewConfig.from_dict(views.augment)),
                                     workers=0, progress=False), teacher=teacher)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo-out", type=Path, default=Path("demo_out"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench-sfda"))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--teachers", action="append", default=None, metavar="NAME=CACHE[,CACHE]",
                    help="a named set of teacher caches ('random' = a random-weights teacher); repeatable")
    ap.add_argument("--targets", default=None, help="comma-separated (default: every non-source domain)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: fastest for these tiny models on a shared 2-core box)")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated adaptation seeds (cells: mean ± std over them)")
    ap.add_argument("--quick", action="store_true", help="smoke test on a `distill demo --quick` output")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(x) for x in args.seeds.split(",")]

    def runs(name: str, seed: int) -> Path:  # seed 0 keeps the folder names of earlier one-seed runs
        return args.out / (name if seed == 0 else f"{name}-s{seed}")

    root = args.demo_out / "data" / ("digits-quick-seed0" if args.quick else "digits-full-seed0")
    ckpt = args.demo_out / "runs" / "erm" / "checkpoints" / "best"
    bs = 16 if args.quick else 64
    ds = DomainFolder(root)
    student = load_student(ckpt)
    source = student.spec.provenance["source_domains"]
    targets = args.targets.split(",") if args.targets else [d for d in ds.domains if d not in source]
    specs = args.teachers or [f"demo={args.demo_out / 'cache'}", f"demo+random={args.demo_out / 'cache'},random"]
    sets: dict[str, list[Path]] = {}
    for spec in specs:
        name, _, paths = spec.partition("=")
        caches: list[Path] = []
        for p in paths.split(","):
            if p == "random":
                like = caches[0] if caches else args.demo_out / "cache"
                p = str(random_teacher_cache(args.demo_out, root, like, args.out / "cache-random-teacher"))
            caches.append(Path(p))
        sets[name] = caches

    src_only = DomainEvaluator(ds, targets, student.preprocess())(student)
    print(f"source model {ckpt} (trained on {source}); {args.epochs} epochs per adaptation; teachers: "
          + "; ".join(f"{n} = {', '.join(map(str, c))}" for n, c in sets.items()))

    # per seed, fractions; percents only when printed (the source model is one: one value)
    rows: dict[str, dict[str, list[float]]] = {"source-only (erm)": {d: [v] for d, v in src_only.items()}}
    seen = set()
    for caches in sets.values():
        for c in caches:
            if c not in seen:
                seen.add(c)
                zs = TeacherCache.open(c).zero_shot_accuracy()
                label = "random teacher" if "random" in c.name else c.name
                rows[f"zero-shot: {label}"] = {d: [zs[d]["test"]] for d in targets}
    # SHOT at its own default step (Shot.default_optim: lr 5e-4, not the teacher-based strategies' 3e-3,
    # at which it drifts: its only signal is the model's own predictions)
    rows["shot"] = {t: [adapt(ckpt, t, root, [], "shot", runs(f"shot-{t}-e{args.epochs}", seed), args.epochs, bs,
                              seed=seed) for seed in seeds] for t in targets}
    for name, caches in sets.items():
        for strategy in ("teacher_pl", "sfda"):
            rows[f"{strategy} [{name}]"] = {
                t: [adapt(ckpt, t, root, caches, strategy, runs(f"{strategy}-{name}-{t}-e{args.epochs}", seed),
                          args.epochs, bs, seed=seed) for seed in seeds] for t in targets}

    hardest = min(targets, key=lambda d: src_only[d])
    print(f"\n### Source-free adaptation (target test accuracy, %; source {source}; each target adapted alone, "
          f"{args.epochs} epochs; mean ± std (n) over seeds {args.seeds})\n")
    print("| method | " + " | ".join(t + (" (hardest)" if t == hardest else "") for t in targets) + " | mean |")
    print("|---|" + "---|" * (len(targets) + 1))
    for name, acc in rows.items():
        n = min(len(acc[t]) for t in targets)
        per_seed = [mean_std([acc[t][i] for t in targets])[0] for i in range(n)]
        print(f"| {name} | " + " | ".join(pm(acc[t]) for t in targets) + f" | {pm(per_seed)} |")
    print()
    for name in sets:
        s, pl = rows[f"sfda [{name}]"][hardest], rows[f"teacher_pl [{name}]"][hardest]
        sh = rows["shot"][hardest]
        gain = percent(mean_std(s)[0]) - percent(src_only[hardest])  # points
        above = all(two_se(s, other)[2] and two_se(s, other)[0] > 0 for other in (sh, pl))
        print(f"[{name}] hardest target {hardest}: sfda {pm(s)} vs source-only {pct(src_only[hardest])} ({gain:+.1f}; "
              f"target +15: {'met' if gain >= 15 else 'MISSED'}); above shot ({pm(sh)}: {verdict(s, sh)}) and "
              f"teacher_pl ({pm(pl)}: {verdict(s, pl)}): {'yes' if above else 'NO (not at Welch p < 0.05)'}")


if __name__ == "__main__":
    main()
