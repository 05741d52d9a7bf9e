"""A run's refusal of a mismatching teacher cache, worded for the run: which data each side means, and the fix
of a split key the run sets otherwise than the cache.

A cache records the split rule it was built with; a run takes the keys its recipe leaves unset from it
(:func:`distill.train.build.with_split_rule`), so a split key that differs was set by the recipe or an override.
Rebuilding cannot fix that where the cache's value is its teacher's (a cache of a non-bootstrapped teacher always
records ``pretrain_fraction`` 0): the fix is the run's key.
"""
from __future__ import annotations

from pathlib import Path

from distill.records import CacheDataset
from distill.teacher.cache import CacheMismatchError

#: the split rule's keys a cache manifest records under ``dataset`` (``class_map`` is a path: not suggested back)
SPLIT_FIELDS = ("test_fraction", "split_seed", "val_fraction", "pretrain_fraction")


def explained_mismatch(error: CacheMismatchError, built: CacheDataset, root: str | Path) -> CacheMismatchError:
    """``error`` naming both data roots whenever the data differ, and, where the run's split rule differs from
    the cache's, the ``data.KEY=VALUE`` that matches the cache instead of a rebuild."""
    fields = list(error.fields)
    if any(f.startswith("dataset.") for f in fields) and not any("the cache was built from" in f for f in fields):
        fields.append(f"the cache was built from {built.root or 'a data root it does not record'}; this run's "
                      f"data.root is {root}")
    split = [k for k in SPLIT_FIELDS if any(f.startswith(f"dataset.{k}:") for f in fields)]
    if not split:
        return CacheMismatchError(error.path, fields, error.advice)
    keys = ", ".join(f"data.{k}={getattr(built, k)!r}" for k in split)
    them = "them" if len(split) > 1 else "it"
    return CacheMismatchError(error.path, fields, f"this run's split rule is not the cache's: set {keys} (or leave "
                                                  f"{them} unset: a run takes its cache's), or point to a cache "
                                                  "built with this rule")
