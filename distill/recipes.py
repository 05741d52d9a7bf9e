"""The training recipes in ``configs/*.yaml``, loaded with a caller's overrides; train, resume or reuse a run.

The recipes ship inside the package (``distill/configs/``; the repository's ``configs/`` is a link to
it), so an installed distill has them too, addressable by name: ``distill train -c kd``,
``distill.load_recipe("kd")``.

A recipe has one home: its YAML file. ``distill train -c configs/kd.yaml``, ``distill demo`` and the
scripts in ``benchmarks/`` all start from it and change only what differs for their run (data
root, cache, run folder, epochs) through ``--set``-style overrides, which
:func:`distill.config.load_train_config` validates like a user's (a bad one is one line naming it).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import yaml

from distill.config import TrainConfig, load_train_config
from distill.errors import DistillError
from distill.records import CHECKPOINT_POINTER, CHECKPOINTS_DIR, RunSummary
from distill.run_paths import resumed_config
from distill.validation import checked_keywords

if TYPE_CHECKING:
    from distill.data.view_policy import ViewPolicy

#: the built-in recipes, shipped as package data (pyproject.toml); ``configs/`` in a checkout links here
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"

#: The adversarial views ``configs/adv_cached.yaml`` expects in its cache: PGD views of the source
#: train split crafted once against the teacher (``distill cache build --adv-views 1 --adv-eps 8/255
#: --adv-steps 5``); the demo's stage 5 and ``benchmarks/adversarial.py`` build these.
ADVERSARIAL_VIEWS: dict[str, Any] = {"views": 1, "epsilon": 8 / 255, "steps": 5}


def recipes_view_policy() -> ViewPolicy:
    """The view policy of the cache the recipes train on (``demo_out/cache``; ``distill cache build
    --policy fm --crop-scale 0.6,1``): function-matching views, crops of 60-100%, no flips (digits)."""
    # lazy: kornia and torch; looking a recipe up (`distill train -c kd`) needs neither
    from distill.data.view_policy import preset
    from distill.data.views import ViewConfig

    return preset("fm", crop=ViewConfig(scale=(0.6, 1.0), hflip=0.0))


@checked_keywords()
def list_recipes() -> list[str]:
    """The names of the built-in recipes (``kd``, ``fm``, ...)."""
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


def resolve_recipe(text: str | Path) -> Path:
    """``-c`` of ``distill train``: a built-in recipe's name, or a YAML file.

    A bare name (a string with no folder separator and no ``.yaml``/``.yml`` suffix: ``kd``) that names a built-in
    recipe is always that recipe, ``distill/configs/kd.yaml``, whatever files the working folder holds (the demo,
    the benchmarks and ``load_recipe("kd")`` must not pick up a stray file named ``kd``); ``./kd`` is the file.
    Anything else is a file if one exists there, else ``kd.yaml`` is the built-in ``kd`` too (a user's own
    ``kd.yaml`` in the working folder wins). Neither is one line listing the built-in names.
    """
    path = Path(text)
    bare = isinstance(text, str) and not any(sep and sep in text for sep in ("/", os.sep, os.altsep)) \
        and not text.endswith((".yaml", ".yml"))
    if bare and (CONFIGS_DIR / f"{text}.yaml").is_file():
        return CONFIGS_DIR / f"{text}.yaml"
    if path.is_file():
        return path
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    if path.parent == Path(".") and (CONFIGS_DIR / f"{name}.yaml").is_file():
        return CONFIGS_DIR / f"{name}.yaml"
    raise DistillError(f"{text}: no such config file, nor a built-in recipe (built-in: {', '.join(list_recipes())})")


def recipe_path(name: str) -> Path:
    """``configs/<name>.yaml``; a missing one is an error listing the recipes there are."""
    path = CONFIGS_DIR / f"{name}.yaml"
    if not path.is_file():
        have = ", ".join(list_recipes()) or "none"
        raise DistillError(f"{path}: no such recipe (configs/ has: {have})")
    return path


@checked_keywords(paths=("name",))
def load_recipe(name: str | Path, overrides: Mapping[str, Any] | Sequence[str] | None = None) -> TrainConfig:
    """A built-in recipe (``"kd"``, ``"kd.yaml"``) or a recipe file, with ``overrides``, validated.

    ``name`` is looked up as ``distill train -c`` looks it up (:func:`resolve_recipe`). ``overrides``: a mapping
    (``{"optim.epochs": 3, "run.out": "runs/x"}``) or ``--set`` items (``["optim.epochs=3"]``); each is
    passed on as ``--set key=value`` (a mapping's values written as YAML), so it means exactly what the
    same ``--set`` on the command line would.
    """
    return load_train_config(resolve_recipe(name), override_items(overrides), named=override_namer(overrides))


def override_items(overrides: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    """``overrides`` as ``--set`` items: a mapping's values written as YAML; ``KEY=VALUE`` strings as they are."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{key}={_yaml_value(value)}" for key, value in overrides.items()]
    items = [overrides] if isinstance(overrides, str) else overrides
    if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
        raise DistillError(f"overrides: expected a mapping ({{'optim.epochs': 3}}) or KEY=VALUE strings, got "
                           f"{overrides!r:.80}")
    return list(items)


def override_namer(overrides: Mapping[str, Any] | Sequence[str] | None) -> Callable[[str], str]:
    """How an error names one of ``overrides`` given in Python (not as ``--set``, which the command line says):
    a mapping's entry as ``key=value`` with the value as Python writes it (``optim.epochs='two'``), a
    ``KEY=VALUE`` string as it is."""
    if not isinstance(overrides, Mapping):
        return lambda item: item
    given = {f"{key}={_yaml_value(value)}": f"{key}={(str(value) if isinstance(value, Path) else value)!r}"
             for key, value in overrides.items()}  # a path as the text it is: 'runs/x', not PosixPath('runs/x')
    return lambda item: given.get(item, item)


def _yaml_value(value: Any) -> str:
    if isinstance(value, Path):
        value = str(value)
    elif isinstance(value, tuple):
        value = list(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10**9).removesuffix("\n...\n").strip()


def train_or_resume(cfg: TrainConfig) -> RunSummary:
    """Train ``cfg``, resume its run if it was interrupted, or read its summary if it finished."""
    from distill.train import train  # lazy: torch; loading a recipe does not need it

    run_dir = Path(cfg.run.out)
    if RunSummary.exists_in(run_dir):
        print(f"  {run_dir}: already trained")
        return RunSummary.read(run_dir)
    resume = (run_dir / CHECKPOINTS_DIR / CHECKPOINT_POINTER).is_file()
    train(resumed_config(run_dir) if resume else cfg, resume=resume)
    return RunSummary.read(run_dir)
