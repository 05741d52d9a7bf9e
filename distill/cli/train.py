"""``distill train``: train a student with one strategy from a YAML recipe."""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Callable

from distill.config import load_train_config
from distill.errors import DistillError
from distill.recipes import CONFIGS_DIR, list_recipes, resolve_recipe
from distill.records import RUN_CONFIG, RUN_SUMMARY, pct
from distill.run_paths import resumed_config
from distill.utils.launch import launched_command

#: --no-progress as the config key it sets (``--set run.progress=false`` still works)
NO_PROGRESS = "run.progress=false"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a student (erm, kd, feature alignment, ...) from a YAML recipe",
        description="Train a timm student on the source domains with a distillation strategy, evaluating every "
        "domain's test split each epoch. Examples:\n"
        "  distill train -c kd --set optim.epochs=5 --set strategy.temperature=2   # a built-in recipe, by name\n"
        "  distill train -c my_recipe.yaml      # a recipe file (copy one from distill/configs/ or configs/)\n"
        "  distill train --resume runs/kd        # continue a killed run exactly\n"
        "  torchrun --nproc_per_node=2 -m distill train -c configs/kd.yaml   # DDP",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", metavar="RECIPE",
                   help="YAML recipe file, or a built-in recipe's name (kd, fm, erm, ...; see --list-recipes)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. optim.lr=3e-4 or data.target=[mnist_m] (repeatable)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last checkpoint (uses RUN_DIR/config.yaml)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave undecodable images out (listed once), same as --set data.skip_bad=true; a cache's "
                        "skipped images are always left out")
    p.add_argument("--list-strategies", action="store_true", help="print the registered strategies and exit")
    p.add_argument("--list-recipes", action="store_true", help="print the built-in recipes and exit")
    p.set_defaults(func=_run, _parser=p)


def resume_hint(command: str, run_dir: str | Path) -> Callable[[], str]:
    """The ``interrupted:`` line of a run (``interrupt_hint``): rerunning the same command refuses a folder that
    holds a run, so name the ``--resume`` that continues it, once RUN/config.yaml is written (before that
    nothing is on disk and the same command starts afresh), launched as this run was (under torchrun, its
    ``torchrun --nproc_per_node=N -m distill`` form: a resume on other ranks is refused)."""
    def hint() -> str:
        if (Path(run_dir) / RUN_CONFIG).is_file():
            return f"continue it with: {launched_command(command)} --resume {shlex.quote(str(run_dir))}"
        return "nothing was written yet: rerun the same command"
    return hint


def _train_on(run: Path) -> str:
    """What to do instead of resuming a finished run with other settings (more epochs): a new run that starts from
    its student (``source_checkpoint``), with a new optimizer and schedule; "" for a run not finished."""
    if not (run / RUN_SUMMARY).is_file():
        return ""
    q = shlex.quote
    return (f"; {run} is finished: to train its student on (more epochs, other settings), start a new run from it: "
            f"distill train -c {q(str(run / RUN_CONFIG))} --set source_checkpoint={q(str(run / 'checkpoints' / 'best'))} "
            "--set run.out=NEW_RUN --set optim.epochs=N (a new optimizer and learning-rate schedule)")


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """``--skip-bad`` and ``--no-progress`` as the ``--set`` items they stand for."""
    return (["data.skip_bad=true"] if args.skip_bad else []) + ([NO_PROGRESS] if args.no_progress else [])


def _run(args: argparse.Namespace) -> int:
    if args.list_recipes:
        for name in list_recipes():
            print(f"{name:12s} {CONFIGS_DIR / (name + '.yaml')}")
        return 0
    # lazy: torch, timm and the strategies load only when this command runs, not at every `distill` start-up
    from distill.strategies import get_strategy, list_strategies
    from distill.train import train

    if args.list_strategies:
        for name in list_strategies():
            doc = (get_strategy(name).__doc__ or "").strip().splitlines()[0]
            print(f"{name:12s} {doc}")
        return 0
    if args.resume is not None:
        if args.config is not None:
            raise DistillError(f"--resume uses RUN_DIR/{RUN_CONFIG}; do not pass --config with it")
        if args.overrides or args.skip_bad:
            raise DistillError("--resume continues the run exactly as configured; --set and --skip-bad are not "
                               "allowed with it" + _train_on(args.resume))
        # --no-progress changes no result, so it is allowed with --resume
        cfg = resumed_config(args.resume, [NO_PROGRESS] if args.no_progress else [])
    elif args.config is None:
        raise DistillError("pass --config FILE.yaml or a built-in recipe's name (or --resume RUN_DIR)")
    else:
        cfg = load_train_config(resolve_recipe(args.config), args.overrides + flag_overrides(args))
    args.interrupt_hint = resume_hint("train", cfg.run.out)
    summary = train(cfg, resume=args.resume is not None, out_flag="run.out" if args.resume is None else "--resume")
    if summary is not None:
        # lazy: as above (torch)
        from distill.train.selection import KEYS
        from distill.train.summary import nothing_to_select_on

        why = nothing_to_select_on(get_strategy(summary.strategy).needs.target_data, KEYS[cfg.run.select_on])
        kept = "best checkpoint" if summary.selected_on != "last_epoch" else \
            f"checkpoint (kept: last epoch, {summary.best_epoch}; {why})"
        print(f"{kept}: {summary.checkpoint}  (source {pct(summary.source_acc)}, "
              f"target {pct(summary.target_acc)})")
    return 0
