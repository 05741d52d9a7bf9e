"""A run's refusal of a mismatching teacher cache, worded for the run: which data each side means, and the fix
of a split key the run sets otherwise than the cache.

A cache records the split rule it was built with; a run takes the keys its recipe leaves unset from it
(:func:`distill.train.build.with_split_rule`), so a split key that differs was set by the recipe or an override.
Rebuilding cannot fix that where the cache's value is its teacher's (a cache of a non-bootstrapped teacher always
records ``pretrain_fraction`` 0): the fix is the run's key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

from torch import Tensor

from distill.data.folder import DomainFolder
from distill.records import CacheDataset
from distill.teacher.cache import CacheMismatchError

#: the split rule's keys a cache manifest records under ``dataset`` (``class_map`` is a path: not suggested back)
SPLIT_FIELDS = ("test_fraction", "split_seed", "val_fraction", "pretrain_fraction")


def _same_folder(built: str | None, root: Path) -> bool:
    return built is not None and Path(built).resolve() == root.resolve()


def changed_counts(cached: Mapping[str, Tensor], dataset: DomainFolder) -> str:
    """What changed in the cache's domains of ``dataset`` since the cache was built from that same folder: the
    domains whose image count (outside the teacher's pool: those hold no row) differs, else that the files
    changed with the counts kept. The cache records no file list, so no file can be named."""
    now = dataset.summary()
    diffs = [f"{d}: {n} image(s) now, {len(cached[d])} when cached" for d in cached if d in now
             if (n := sum(c for split, c in now[d].items() if split != "pretrain")) != len(cached[d])]
    if diffs:
        return "its images changed since (" + "; ".join(diffs) + ")"
    return ("its files changed since, with the same number of images per domain (a file renamed, resized or "
            "replaced, or one added to or removed from the teacher's pool)")


def explained_mismatch(error: CacheMismatchError, built: CacheDataset, dataset: DomainFolder,
                       cached: Callable[[], Mapping[str, Tensor]] | None = None) -> CacheMismatchError:
    """``error`` naming both data roots whenever the data differ (or, where they are the same folder, what
    changed in it: :func:`changed_counts` of ``cached()``, the cache's sample indices), and, where the run's
    split rule differs from the cache's, the ``data.KEY=VALUE`` that matches the cache instead of a rebuild."""
    fields, root = list(error.fields), dataset.root
    split = [k for k in SPLIT_FIELDS if any(f.startswith(f"dataset.{k}:") for f in fields)]
    if any(f.startswith("dataset.") for f in fields) and not any("the cache was built from" in f for f in fields):
        if _same_folder(built.root, root):
            both = str(root) if str(root) == built.root else f"{root} = {built.root}"
            line = f"the cache was built from this run's data.root ({both})"
            if split:  # the folder is the same: what differs is the split key (named once, not as two roots)
                line += f"; the split rule differs ({', '.join(split)})"
            elif cached is not None:
                line += "; " + changed_counts(cached(), dataset)
            fields.append(line)
        else:
            fields.append(f"the cache was built from {built.root or 'a data root it does not record'}; this run's "
                          f"data.root is {root}")
    if not split:
        return CacheMismatchError(error.path, fields, error.advice)
    keys = ", ".join(f"data.{k}={getattr(built, k)!r}" for k in split)
    them = "them" if len(split) > 1 else "it"
    return CacheMismatchError(error.path, fields, f"this run's split rule is not the cache's: set {keys} (or leave "
                                                  f"{them} unset: a run takes its cache's), or point to a cache "
                                                  "built with this rule")
