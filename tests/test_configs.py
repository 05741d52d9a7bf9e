"""Every recipe in distill/configs/ (configs/ in a checkout) validates and runs: one training step against the quick demo's outputs.

The recipes point at ``demo_out/`` (what ``make demo`` writes); here they are pointed at the
session's ``distill demo --quick`` output instead (same teacher architecture, cache layout,
adversarial views and erm checkpoint, at test size), trained for one step and evaluated once.
A recipe that names another teacher than the demo bootstraps, a strategy option that no
longer exists, or a path the demo does not write fails here, not in a user's first run.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import yaml

from distill.config import load_train_config
from distill.recipes import CONFIGS_DIR

CONFIGS = sorted(CONFIGS_DIR.glob("*.yaml"))
FULL_ROOT, QUICK_ROOT = "digits-full-seed0", "digits-quick-seed0"


def _repoint(value: Any, out: Path) -> Any:
    """demo_out/... -> the quick demo's OUT/..., recursively."""
    if isinstance(value, dict):
        return {k: _repoint(v, out) for k, v in value.items()}
    if isinstance(value, list):
        return [_repoint(v, out) for v in value]
    if isinstance(value, str) and (value == "demo_out" or value.startswith("demo_out/")):
        return str(out / value.removeprefix("demo_out").lstrip("/")).replace(FULL_ROOT, QUICK_ROOT)
    return value


def test_there_are_recipes():
    assert len(CONFIGS) >= 2 and all(p.stat().st_size for p in CONFIGS)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_recipe_validates_and_runs_one_step(recipe, quick_demo, tmp_path):
    from distill.train import train

    out, _ = quick_demo
    cfg = load_train_config(recipe)  # as written: unknown keys, bad values, unknown strategy options
    raw = _repoint(yaml.safe_load(recipe.read_text()), out)
    raw["optim"].update(epochs=1, batch_size=16, warmup_epochs=0)  # quick domains: 23-28 train images (30% is the teacher's pool) -> 1 step
    raw["run"].update(out=str(tmp_path / "run"), progress=False)
    if raw.get("robust"):  # keep what the recipe asks for, at test size
        raw["robust"].update(pgd_eps=raw["robust"]["pgd_eps"][:1], pgd_steps=1, max_images=8,
                             corruptions=(raw["robust"].get("corruptions") or [])[:1])
    summary = train(load_train_config(None, base=raw))
    assert summary.strategy == cfg.strategy.name
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1"]
    assert (tmp_path / "run" / "checkpoints" / "best" / "model.safetensors").is_file()
