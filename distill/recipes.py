"""The training recipes in ``configs/*.yaml``, loaded with a caller's overrides; train, resume or reuse a run.

A recipe has one home: its YAML file. ``distill train -c configs/kd.yaml``, ``distill demo`` and the
scripts in ``benchmarks/`` all start from it and change only what differs for their run (data
root, cache, run folder, epochs) through ``--set``-style overrides, which
:func:`distill.config.load_train_config` validates like a user's (a bad one is one line naming it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

from distill.config import TrainConfig, load_train_config
from distill.data.view_policy import ViewPolicy, preset
from distill.data.views import ViewConfig
from distill.errors import DistillError
from distill.records import CHECKPOINT_POINTER, CHECKPOINTS_DIR, RUN_CONFIG, RunSummary
from distill.train import train

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"

#: The adversarial views ``configs/adv_cached.yaml`` expects in its cache: PGD views of the source
#: train split crafted once against the teacher (``distill cache build --adv-views 1 --adv-eps 8/255
#: --adv-steps 5``); the demo's stage 5 and ``benchmarks/adversarial.py`` build these.
ADVERSARIAL_VIEWS: dict[str, Any] = {"views": 1, "epsilon": 8 / 255, "steps": 5}


def recipes_view_policy() -> ViewPolicy:
    """The view policy of the cache the recipes train on (``demo_out/cache``; ``distill cache build
    --policy fm --crop-scale 0.6,1``): function-matching views, crops of 60-100%, no flips (digits)."""
    return preset("fm", crop=ViewConfig(scale=(0.6, 1.0), hflip=0.0))


def recipe_path(name: str) -> Path:
    """``configs/<name>.yaml``; a missing one is an error listing the recipes there are."""
    path = CONFIGS_DIR / f"{name}.yaml"
    if not path.is_file():
        have = ", ".join(sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))) or "none"
        raise DistillError(f"{path}: no such recipe (configs/ has: {have})")
    return path


def load_recipe(name: str, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """``configs/<name>.yaml`` with ``overrides`` (``{"optim.epochs": 3, "run.out": "runs/x"}``), validated.

    Each override is passed on as ``--set key=value`` with the value written as YAML, so it means
    exactly what the same ``--set`` on the command line would.
    """
    sets = [f"{key}={_yaml_value(value)}" for key, value in (overrides or {}).items()]
    return load_train_config(recipe_path(name), sets)


def _yaml_value(value: Any) -> str:
    if isinstance(value, Path):
        value = str(value)
    elif isinstance(value, tuple):
        value = list(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10**9).removesuffix("\n...\n").strip()


def train_or_resume(cfg: TrainConfig) -> RunSummary:
    """Train ``cfg``, resume its run if it was interrupted, or read its summary if it finished."""
    run_dir = Path(cfg.run.out)
    if RunSummary.exists_in(run_dir):
        print(f"  {run_dir}: already trained")
        return RunSummary.read(run_dir)
    resume = (run_dir / CHECKPOINTS_DIR / CHECKPOINT_POINTER).is_file()
    train(load_train_config(run_dir / RUN_CONFIG) if resume else cfg, resume=resume)
    return RunSummary.read(run_dir)
