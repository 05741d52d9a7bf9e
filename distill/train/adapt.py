"""Source-free adaptation recipes: a source-trained checkpoint + unlabeled target domains -> a TrainConfig dict.

``distill adapt`` and the demo's SFDA stage build their training configs here, so both adapt
with the same defaults. The result goes through :func:`distill.config.load_train_config`
(``--set`` overrides, validation) and :func:`distill.train.train` like any recipe; the
trainer then reads only the target domains' training images (labels hidden) and evaluates
only the target domains.

What the recipe needs from earlier stages it reads through their records: the checkpoint's
:class:`~distill.student.model.StudentSpec` (``student.json``: arch, input size, the source
domains it was trained on), the cache's :class:`~distill.records.CacheManifest` (the split
rule) or, with no cache (``shot``), the source checkpoint's run config (the split rule that run trained
with: the same target test images, the teacher's pool kept out; :mod:`distill.train.source_run`). The optimizer
defaults are the strategy's own (:meth:`Strategy.default_optim`).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Collection, Sequence

from distill.config import TrainConfig, load_train_config, parse_overrides, set_flag
from distill.errors import DistillError
from distill.records import CACHE_MANIFEST, CacheManifest
from distill.run_split import PLACING_KEYS
from distill.strategies import Strategy, build_config, get_strategy, list_strategies
from distill.train.source_run import checkpoint_spec, split_of_source_run


def adapt_strategies() -> list[str]:
    """The strategies ``distill adapt`` runs: those that train on the unlabeled target domains (``needs.target_data``:
    sfda, shot, teacher_pl). ``distill train`` runs every strategy (these too, from a recipe that names a
    ``source_checkpoint``)."""
    return [name for name in list_strategies() if get_strategy(name).needs.target_data]


def adapt_strategy(name: str) -> type[Strategy]:
    """The adaptation strategy ``name``; a one-line error that offers only the adaptation strategies otherwise."""
    available = adapt_strategies()
    if name in available:
        return get_strategy(name)
    if name in list_strategies():
        raise DistillError(f"strategy '{name}' is not a source-free adaptation strategy (use {', '.join(available)}; "
                           "`distill train` runs the others)")
    raise DistillError(f"unknown strategy '{name}' (available for adapt: {', '.join(available)})")


def check_adapt_overrides(items: Sequence[str]) -> None:
    """Refuse ``--set strategy.name=...`` (or the whole ``strategy`` section) on an adaptation: the recipe spells out
    its strategy's options, which another strategy would take for unknown keys, and the strategy must be checked
    as an adaptation strategy (:func:`adapt_strategy`). One line pointing at ``--strategy``."""
    for item in items:
        key = item.split("=", 1)[0].strip()
        if key in ("strategy", "strategy.name"):
            raise DistillError(f"adapt: --set {item}: choose the adaptation strategy with --strategy (strategy= in "
                               "Python), not --set; --set strategy.KEY=VALUE sets one of its options")


def effective_options(strategy: type[Strategy], given: dict[str, Any]) -> dict[str, Any]:
    """``given`` options of ``strategy`` validated, with its defaults for the others (``{}`` for none)."""
    config = build_config(strategy.Config, given, where="strategy")
    return dataclasses.asdict(config) if config is not None else {}


def adapt_optim(strategy: str, optim: dict[str, Any] | None = None) -> dict[str, Any]:
    """The optim section of an adaptation: the strategy's :meth:`~distill.strategies.base.Strategy.default_optim`
    under ``optim`` (the caller's, e.g. ``--set optim.*``)."""
    return {**get_strategy(strategy).default_optim(), **(optim or {})}


def split_of_cache(cache: str | Path) -> dict[str, Any]:
    """The split rule of a cache's manifest as ``data`` config keys (test_fraction, split_seed, val_fraction,
    pretrain_fraction): the run's split is the cache's, so test images stay test images and the teacher's
    pretraining pool stays out of the run."""
    if not CacheManifest.exists_in(cache):
        raise DistillError(f"{cache}: not a complete teacher cache (no {CACHE_MANIFEST})")
    dataset = CacheManifest.read(cache).dataset
    return {"test_fraction": dataset.test_fraction, "split_seed": dataset.split_seed,
            "val_fraction": dataset.val_fraction, "pretrain_fraction": dataset.pretrain_fraction}


def adapt_recipe(source_checkpoint: str | Path, targets: Sequence[str], root: str | Path, *,
                 caches: Sequence[str | Path] = (), strategy: str | dict = "sfda", out: str | Path | None = None,
                 source_domains: Sequence[str] | None = None, optim: dict[str, Any] | None = None,
                 run: dict[str, Any] | None = None, given: Collection[str] = ()) -> dict[str, Any]:
    """A training-config dict that adapts ``source_checkpoint`` to ``targets`` without source data.

    The split rule is the first cache's; without a cache (``shot``), the source checkpoint's run's
    (:func:`split_of_source_run`; no run found: a warning, and test fraction 0.3, split seed 0), so
    test images stay test images; like any other key it can be changed with ``--set data.*``.

    Args:
        source_checkpoint: ``RUN/checkpoints/best`` of a ``distill train`` run on the source domains.
        targets: target domains (their train split is adapted on, labels unused; test split evaluated).
        root: dataset root holding the target domains.
        caches: teacher cache dirs (one per teacher); needed by ``sfda`` and ``teacher_pl``.
        strategy: ``sfda``, ``shot``, ``teacher_pl`` (or a dict with name + options).
        out: run directory (default ``runs/adapt-<strategy>-<targets>``).
        source_domains: recorded as the run's source (default: the checkpoint's provenance).
        optim, run: overrides of the optim section (:func:`adapt_optim`) and of the run section.
        given: the split keys the caller sets over the recipe (``--set data.KEY=...``): not looked up, and not
            warned about, in the source run.
    """
    strat = {"name": strategy} if isinstance(strategy, str) else dict(strategy)
    name = strat.pop("name")
    # the options in full, defaults included, as a recipe spells them out: config.yaml and summary.json record them
    strat = {"name": name, **effective_options(adapt_strategy(name), strat)}
    targets = [t for t in targets if t]
    if not targets:
        raise DistillError("adapt: name at least one target domain (--target mnist_m[,optdigits])")
    spec = checkpoint_spec(source_checkpoint)
    recorded = spec.provenance.get("source_domains")
    src = list(source_domains) if source_domains else (list(recorded) if recorded else None)
    if not src:
        raise DistillError(f"{source_checkpoint}: its student.json records no source domains; pass --source-domains")
    overlap = sorted(set(src) & set(targets))
    if overlap:
        raise DistillError(f"adapt: {overlap} are both source and target domains; a target must be unseen")
    split = split_of_cache(caches[0]) if caches else split_of_source_run(source_checkpoint, spec, given)
    cfg: dict[str, Any] = {
        "data": {"root": str(root), "source": src, "target": list(targets), **split},
        "student": {"arch": spec.arch, "input_size": int(spec.input_size[0])},
        "strategy": strat,
        "source_checkpoint": str(source_checkpoint),
        "optim": adapt_optim(strat["name"], optim),
        "run": {"out": str(out or Path("runs") / f"adapt-{strat['name']}-{'+'.join(targets)}"), "seed": 0,
                "workers": 2, **(run or {})},
    }
    if caches:
        cfg["cache"] = str(caches[0]) if len(caches) == 1 else [str(c) for c in caches]
    return cfg


def split_keys_set(items: Sequence[str], named: Callable[[str], str] = set_flag) -> set[str]:
    """The split keys (:data:`~distill.run_split.PLACING_KEYS`) that ``--set`` items give a value: ``data.KEY=V``,
    or ``data={KEY: V, ...}``."""
    given: set[str] = set()
    for key, value in parse_overrides(list(items), named):
        if key.startswith("data.") and value is not None:  # `data.KEY=` (None) leaves it unset
            given.add(key.removeprefix("data."))
        elif key == "data":  # the whole section replaced
            given = {k for k, v in value.items() if v is not None} if isinstance(value, dict) else set()
    return {k for k in given if k in PLACING_KEYS}


def adapt_train_config(source_checkpoint: str | Path, target: str | Sequence[str], data: str | Path, *,
                       cache: str | Path | Sequence[str | Path] = (), strategy: str = "sfda",
                       out: str | Path | None = None, source_domains: Sequence[str] | None = None,
                       items: Sequence[str] = (), named: Callable[[str], str] = set_flag) -> TrainConfig:
    """The :class:`TrainConfig` of a source-free adaptation (:func:`distill.api.adapt_config`; ``distill adapt``).
    ``items``: ``--set`` items; ``named``: how an error names one (:func:`distill.config.set_flag`: as the command
    line gave it)."""
    adapt_strategy(strategy)  # before any other check: a train-only or mistyped strategy is named first
    check_adapt_overrides(items)
    targets = [t.strip() for t in target.split(",")] if isinstance(target, str) else [str(t) for t in target]
    caches = [cache] if isinstance(cache, (str, os.PathLike)) else list(cache)
    given = split_keys_set(items, named)
    base = adapt_recipe(source_checkpoint, [t for t in targets if t], data, caches=caches, strategy=strategy,
                        out=out, source_domains=source_domains, given=given)
    return load_train_config(None, list(items), base=base, named=named)
