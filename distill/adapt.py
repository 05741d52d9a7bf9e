"""Source-free adaptation recipes: a source-trained checkpoint + unlabeled target domains -> a TrainConfig dict.

``distill adapt`` and the demo's SFDA stage build their training configs here, so both adapt
with the same defaults. The result goes through :func:`distill.config.load_train_config`
(``--set`` overrides, validation) and :func:`distill.train.run_training` like any recipe; the
trainer then reads only the target domains' training images (labels hidden) and evaluates
only the target domains.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from distill.errors import DistillError

SFDA_STRATEGIES = ("sfda", "shot", "teacher_pl")

#: Optimizer defaults for adaptation: a short, gentle fine-tune of an already trained model
#: (no warm-up from scratch). A strategy's own ``optim_defaults`` (SHOT: lr 5e-4) override them,
#: and the caller's ``optim`` (``--set optim.*``) overrides both: see :func:`adapt_optim`.
ADAPT_OPTIM: dict[str, Any] = {"epochs": 10, "batch_size": 64, "optimizer": "adamw", "lr": 3e-3,
                               "weight_decay": 0.01, "warmup_epochs": 0, "grad_clip": 1.0}


def adapt_optim(strategy: str, optim: dict[str, Any] | None = None) -> dict[str, Any]:
    """The optim section of an adaptation: :data:`ADAPT_OPTIM` < the strategy's ``optim_defaults`` < ``optim``."""
    from distill.strategies import get_strategy

    return {**ADAPT_OPTIM, **get_strategy(strategy).optim_defaults, **(optim or {})}


def source_domains_of(checkpoint: str | Path) -> list[str] | None:
    """The source domains a checkpoint was trained on (its ``student.json`` provenance), if recorded."""
    from distill.utils.io import read_json

    path = Path(checkpoint)
    folder = path.parent if path.suffix == ".safetensors" else path
    if not (folder / "student.json").is_file():
        raise DistillError(f"{folder}: not a student checkpoint (no student.json); pass RUN/checkpoints/best")
    prov = read_json(folder / "student.json").get("provenance") or {}
    doms = prov.get("source_domains")
    return list(doms) if doms else None


def split_of_cache(cache: str | Path) -> tuple[float, int, float]:
    """(test_fraction, split_seed, val_fraction) recorded in a cache manifest, so the run's split matches the cache's."""
    from distill.records import CACHE_MANIFEST as MANIFEST
    from distill.utils.io import read_json

    path = Path(cache) / MANIFEST
    if not path.is_file():
        raise DistillError(f"{cache}: not a complete teacher cache (no {MANIFEST})")
    ds = read_json(path)["dataset"]
    return float(ds["test_fraction"]), int(ds["split_seed"]), float(ds.get("val_fraction", 0.0))


def adapt_recipe(source_checkpoint: str | Path, targets: Sequence[str], root: str | Path,
                 caches: Sequence[str | Path] = (), strategy: str | dict = "sfda", out: str | Path | None = None,
                 source_domains: Sequence[str] | None = None, test_fraction: float | None = None,
                 split_seed: int | None = None, optim: dict[str, Any] | None = None,
                 run: dict[str, Any] | None = None) -> dict[str, Any]:
    """A training-config dict that adapts ``source_checkpoint`` to ``targets`` without source data.

    Args:
        source_checkpoint: ``RUN/checkpoints/best`` of a ``distill train`` run on the source domains.
        targets: target domains (their train split is adapted on, labels unused; test split evaluated).
        root: dataset root holding the target domains.
        caches: teacher cache dirs (one per teacher); needed by ``sfda`` and ``teacher_pl``.
        strategy: ``sfda``, ``shot``, ``teacher_pl`` (or a dict with name + options).
        out: run directory (default ``runs/adapt-<strategy>-<targets>``).
        source_domains: recorded as the run's source (default: the checkpoint's provenance).
        test_fraction, split_seed: the split rule (default: the first cache's, else 0.3 / 0).
        optim, run: overrides of the optim section (:func:`adapt_optim`) and of the run section.
    """
    strat = {"name": strategy} if isinstance(strategy, str) else dict(strategy)
    targets = [t for t in targets if t]
    if not targets:
        raise DistillError("adapt: name at least one target domain (--target mnist_m[,optdigits])")
    src = list(source_domains) if source_domains else source_domains_of(source_checkpoint)
    if not src:
        raise DistillError(f"{source_checkpoint}: its student.json records no source domains; pass --source-domains")
    overlap = sorted(set(src) & set(targets))
    if overlap:
        raise DistillError(f"adapt: {overlap} are both source and target domains; a target must be unseen")
    val_fraction = None
    if caches:
        val_fraction = split_of_cache(caches[0])[2]
    if caches and (test_fraction is None or split_seed is None):
        tf, ss, _ = split_of_cache(caches[0])
        test_fraction = tf if test_fraction is None else test_fraction
        split_seed = ss if split_seed is None else split_seed
    from distill.student.model import load_student

    spec = load_student(source_checkpoint).spec
    cfg: dict[str, Any] = {
        "data": {"root": str(root), "source": src, "target": list(targets),
                 "test_fraction": 0.3 if test_fraction is None else test_fraction,
                 "split_seed": 0 if split_seed is None else split_seed},
        "student": {"arch": spec.arch, "input_size": int(spec.input_size[0])},
        "strategy": strat,
        "source_checkpoint": str(source_checkpoint),
        "optim": adapt_optim(strat["name"], optim),
        "run": {"out": str(out or Path("runs") / f"adapt-{strat['name']}-{'+'.join(targets)}"), "seed": 0,
                "workers": 2, **(run or {})},
    }
    if val_fraction is not None:
        cfg["data"]["val_fraction"] = val_fraction
    if caches:
        cfg["cache"] = str(caches[0]) if len(caches) == 1 else [str(c) for c in caches]
    return cfg
