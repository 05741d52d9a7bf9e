"""``distill eval``: clean, PGD and common-corruption accuracy of a student checkpoint, per domain."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from distill.cli._split import add_split_arguments, split_rule_of
from distill.data.listing import left_out_line
from distill.data.split import SPLIT_KEYS, split_of
from distill.errors import DistillError
from distill.records import RUN_CONFIG

if TYPE_CHECKING:
    from distill.config import RobustSettings
    from distill.data.split import SplitRule


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="per-domain accuracy of a checkpoint: clean, under PGD attack, under common corruptions",
        description="Evaluate a student checkpoint (a folder with model.safetensors + student.json, e.g. "
        "RUN/checkpoints/best) on each domain's test split: clean accuracy, accuracy under an untargeted L-inf PGD "
        "attack on the label (in pixel space, through the student's own normalization), and accuracy under "
        "common corruptions. Examples:\n"
        "  distill eval runs/kd/checkpoints/best --data demo_out/data/digits-full-seed0\n"
        "  distill eval CKPT --data ROOT --domains mnist,mnist_m --pgd-eps 2/255,8/255 --pgd-steps 20 --json\n"
        "  distill eval CKPT --data ROOT --pgd-eps 0 --corruptions none      # clean accuracy only",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="student checkpoint folder")
    p.add_argument("--data", required=True, type=Path, metavar="ROOT", help="dataset root (ROOT/DOMAIN/CLASS/image)")
    p.add_argument("--domains", metavar="a,b", help="comma-separated domains (default: all under ROOT)")
    p.add_argument("--split", choices=("test", "val", "train"), default="test", help="which split to evaluate (test)")
    # on the run's own data: must match training's (unset: the run's)
    add_split_arguments(p, unset=SPLIT_KEYS, unset_from=f"the run's {RUN_CONFIG} when ROOT is the run's data")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave undecodable images out (listed once on stderr) instead of stopping")
    p.add_argument("--pgd-eps", action="append", default=None, metavar="EPS",
                   help="L-inf radius in pixel units, e.g. 2/255; comma-separated or repeated for several; 0 or none "
                        "skips the attack (default 2/255)")
    p.add_argument("--pgd-steps", type=int, default=10, metavar="N", help="PGD steps (10)")
    p.add_argument("--pgd-step-size", default=None, metavar="A", help="PGD step in pixel units (default 2.5*eps/steps)")
    p.add_argument("--no-random-start", action="store_true", help="start PGD at the clean image")
    p.add_argument("--corruptions", default="all", metavar="a,b",
                   help="corruptions to apply: comma-separated names, 'all' or 'none' (all: gaussian_noise, "
                        "shot_noise, gaussian_blur, contrast, jpeg)")
    p.add_argument("--severity", type=int, default=3, choices=range(1, 6), metavar="1-5",
                   help="corruption severity (3)")
    p.add_argument("--max-images", type=int, default=None, metavar="N", help="at most N images per domain")
    p.add_argument("--seed", type=int, default=0, help="seed of PGD random starts and corruption noise (0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help="print the results as JSON (accuracies as fractions)")
    p.set_defaults(func=_run, interrupt_hint="nothing was saved; rerun the same command (it starts over)")


def _eps_list(values: list[str] | None) -> tuple[float, ...]:
    """``--pgd-eps`` values (comma-separated, repeatable) -> radii; ``0`` / ``none`` entries skip the attack."""
    from distill.config import parse_eps  # lazy: pydantic; the CLI builds its parser before any command runs

    if values is None:
        return (2 / 255,)
    parts = [part.strip() for v in values for part in v.split(",")]
    return tuple(e for e in (parse_eps(p) for p in parts if p and p.lower() != "none") if e > 0)


def _settings(args: argparse.Namespace) -> RobustSettings:
    """The flags -> the same validated :class:`~distill.config.RobustSettings` a train config's ``robust`` holds."""
    # lazy: torch and pydantic; the CLI builds its parser before any command runs
    from distill.config import RobustSettings, parse_eps, validate
    from distill.robust.corruptions import check_corruptions

    corr = [c.strip() for c in args.corruptions.split(",") if c.strip()]
    corruptions = [] if corr in ([], ["none"]) else check_corruptions(corr)
    if args.pgd_steps < 0:
        raise DistillError(f"--pgd-steps must be >= 0, got {args.pgd_steps}")
    return validate(RobustSettings, {
        "pgd_eps": _eps_list(args.pgd_eps), "pgd_steps": args.pgd_steps,
        "pgd_step_size": None if args.pgd_step_size is None else parse_eps(args.pgd_step_size),
        "random_start": not args.no_random_start, "corruptions": corruptions, "severity": args.severity,
        "max_images": args.max_images, "seed": args.seed}, "distill eval")


def _split_rule(args: argparse.Namespace) -> tuple[SplitRule, tuple[str, ...]]:
    """The split flags, the unset ones the checkpoint's run's when ``--data`` is the run's data (a flag that differs
    from the run's value there is refused: :func:`distill.run_split.run_split_rule`), else the defaults; and, on the
    run's data, the run's caches (the images they skipped are left out here too, as the run left them out)."""
    # lazy: pydantic; the CLI builds its parser before any command runs
    from distill.run_split import read_run_config, run_config_file, run_split_rule

    def warn(line: str) -> None:
        print(f"warning: {line}", file=sys.stderr)

    config_file = run_config_file(args.checkpoint)
    view = read_run_config(config_file, warn, "evaluating without the run's split rule",
                           args.checkpoint) if config_file else None
    data = view.data if view is not None else None
    names = {k: "--" + k.replace("_", "-") for k in SPLIT_KEYS}
    trained = run_split_rule(vars(args), args.data, data, config_file, str(args.checkpoint),
                             "drop {flag} (the run's value is the default here), or evaluate on other data", names)
    caches = view.caches() if trained is not None and view is not None else ()
    return split_rule_of(args, **(trained.model_dump() if trained is not None else {})), caches


def _cache_skipped(caches: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(relpath, reason)`` of the images the run's caches skipped at build time (a cache gone: none of its)."""
    from distill.records import CacheManifest  # lazy: pydantic; the CLI builds its parser before any command runs

    return [(k.path, k.reason) for c in caches if CacheManifest.exists_in(c) for k in CacheManifest.read(c).skipped]


def _run(args: argparse.Namespace) -> int:
    # lazy: torch, timm; the CLI builds its parser before any command runs
    from distill.data.folder import DomainFolder
    from distill.records import RobustReport, SkippedImage
    from distill.robust.evaluate import RobustEvaluator, robust_table
    from distill.student.model import load_student
    from distill.utils.runtime import resolve_device

    settings = _settings(args)
    device = resolve_device(args.device, what="--device")
    student = load_student(args.checkpoint).to(device)
    rule, caches = _split_rule(args)
    dataset = DomainFolder(args.data, rule, skip_bad=args.skip_bad)
    if student.spec.class_names != dataset.classes:
        from distill.data.classes import class_difference  # lazy: it imports torch (not at parser build)

        raise DistillError(f"{args.checkpoint}: the checkpoint's classes ({len(student.spec.class_names)}) differ from "
                           f"{args.data}'s ({len(dataset.classes)}): "
                           f"{class_difference(student.spec.class_names, dataset.classes, 'the checkpoint', str(args.data))}"
                           "; evaluate on the data it was trained for")
    domains = dataset.check_domains([d.strip() for d in args.domains.split(",") if d.strip()]) if args.domains \
        else dataset.domains
    in_domains, ds = set(domains), dataset  # the run's skipped images this evaluation would have read: named
    run_skipped = [k for k in dataset.exclude(_cache_skipped(caches)) if k[0].split("/", 1)[0] in in_domains
                   and split_of(k[0], ds.test_fraction, ds.split_seed, ds.val_fraction, ds.pretrain_fraction) == args.split]
    skipped = run_skipped + (dataset.left_out(domains) + dataset.skip_undecodable(domains, args.split)
                             if args.skip_bad else [])
    if skipped:
        print(f"warning: {left_out_line('undecodable image(s) skipped', dataset.root, skipped)}", file=sys.stderr)
    evaluator = RobustEvaluator(dataset, domains, student.spec, settings, split=args.split)
    results = evaluator(student, device)
    report = RobustReport(checkpoint=str(args.checkpoint), data=str(args.data), split=args.split,
                          skipped_images=[SkippedImage(path=p, reason=why) for p, why in skipped],
                          settings=settings.to_dict(), domains=results)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"{args.checkpoint} ({student.spec.arch}, {student.spec.input_size[0]} px) on {args.data} [{args.split}]")
        print(robust_table(results))
    return 0
