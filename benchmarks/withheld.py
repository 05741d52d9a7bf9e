"""Open vocabulary of one trained run: re-target its text-head student to every class name and score it
on the test images of the classes its run withheld, next to the teacher's zero-shot on the same images.

Usage:
    .venv/bin/python benchmarks/withheld.py RUN_DIR [--data ROOT] [--cache CACHE] [--class-map FILE]
        [--pretrain-fraction 0.3] [--targets a,b] [--withhold x,y] [--dry-run]
``--data`` and ``--cache`` default to the run's (``RUN_DIR/config.yaml``); the split rule and class map to
the cache's (its manifest), so a data set whose folders need a class map is scored under the mapped names.
``--targets``: the domains scored (default: every domain); ``--withhold``: the classes scored (default: the
run's ``data.withhold_classes``). ``--dry-run`` prints what would be scored and stops.
Prints per-domain accuracy (%) and the student / teacher ratio (issue 12's target: >= 0.8x).
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from distill.config import load_train_config
from distill.data import DomainFolder
from distill.data.split import SplitRule
from distill.export.retarget import retarget, teacher_source
from distill.records import RUN_CONFIG, CacheManifest, RunSummary, pct
from distill.report.stats import mean_std
from distill.report.withheld import student_withheld_accuracy, teacher_withheld_accuracy
from distill.student.model import load_student
from distill.teacher.cache import TeacherCache


def names(text: str | None) -> list[str]:
    """``a,b`` -> ``["a", "b"]`` (None or empty: [])."""
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--data", type=Path, default=None, help="dataset root (default: the run's data.root)")
    ap.add_argument("--cache", type=Path, default=None, help="the run's teacher cache (default: its config's first)")
    ap.add_argument("--class-map", type=Path, default=None, metavar="FILE",
                    help="'folder: class name' map (default: the cache's, else ROOT/classnames.yaml)")
    ap.add_argument("--pretrain-fraction", type=float, default=None, help="default: the cache's")
    ap.add_argument("--targets", default=None, metavar="a,b", help="domains scored (default: every domain)")
    ap.add_argument("--withhold", default=None, metavar="x,y", help="classes scored (default: the run's withheld)")
    ap.add_argument("--dry-run", action="store_true", help="print what would be scored and stop")
    return ap.parse_args(argv)


@dataclass
class Scoring:
    """What is scored: the run, its data set (under the cache's split rule and class map), cache, domains, classes."""

    run: RunSummary
    dataset: DomainFolder
    cache: Path
    domains: list[str]
    withheld: list[str]


def plan(args: argparse.Namespace) -> Scoring:
    """Resolve the data set, cache, domains and classes; a bad one is one line (SystemExit)."""
    run = RunSummary.read(args.run)
    cfg = load_train_config(args.run / RUN_CONFIG) if (args.run / RUN_CONFIG).is_file() else None
    caches = [] if cfg is None or cfg.cache is None else (cfg.cache if isinstance(cfg.cache, list) else [cfg.cache])
    cache = args.cache or (Path(caches[0]) if caches else None)
    root = args.data or (Path(cfg.data.root) if cfg is not None else None)
    if cache is None or root is None:
        raise SystemExit(f"{args.run}: no {RUN_CONFIG} naming its data and cache; pass --data and --cache")
    keys = SplitRule.from_cache(CacheManifest.read(cache).dataset)  # the cache's split rule and class map
    if cfg is not None:
        keys.update(cfg.data.split_keys())
    if args.class_map is not None:
        keys["class_map"] = args.class_map
    if args.pretrain_fraction is not None:
        keys["pretrain_fraction"] = args.pretrain_fraction
    dataset = DomainFolder(root, **keys)
    withheld = names(args.withhold) or list(run.withheld_classes or [])
    if not withheld:
        raise SystemExit(f"{args.run}: the run withheld no class (data.withhold_classes); pass --withhold")
    missing = [c for c in withheld if c not in dataset.classes]
    if missing:
        hint = "" if dataset.class_map else "; no class map found: pass --class-map FILE"
        raise SystemExit(f"withheld {missing} not a class of {root} (classes: {', '.join(dataset.classes)}{hint})")
    domains = names(args.targets) or list(dataset.domains)
    dataset.check_domains(domains)
    return Scoring(run, dataset, Path(cache), domains, withheld)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    job = plan(args)
    print(f"{args.run}: withheld {', '.join(job.withheld)} on {', '.join(job.domains)}; data {job.dataset.root} "
          f"(class map: {job.dataset.class_map_source or 'none'}); cache {job.cache}", flush=True)
    if args.dry_run:
        return
    run, dataset = job.run, job.dataset
    student = load_student(Path(run.checkpoint))
    student = retarget(student, list(dataset.classes), teacher_source(student))
    mine = student_withheld_accuracy(student, dataset, job.domains, job.withheld)
    teacher = teacher_withheld_accuracy(TeacherCache.open(job.cache), job.withheld, job.domains)
    print(f"withheld {', '.join(job.withheld)}; selected epoch {run.best_epoch}; test accuracy (%)")
    for name, acc in (("student (re-targeted)", mine), ("teacher zero-shot", teacher)):
        print(f"  {name:22s} " + "  ".join(f"{d} {pct(v)}" for d, v in acc.items())
              + f"  | mean {pct(mean_std(list(acc.values()))[0])}")
    reference = mean_std(list(teacher.values()))[0]
    ratio = f"{mean_std(list(mine.values()))[0] / reference:.2f}x" if reference else "n/a (the teacher scored 0)"
    print(f"student / teacher: {ratio} (goal >= 0.8x)")


if __name__ == "__main__":
    main()
