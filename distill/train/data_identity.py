"""What a run trains on, recorded when it starts (``RUN/data.json``) and compared when it resumes.

A resume is exact only on the images and teacher targets the run started with: sample indices key the cache's rows
and every random draw. Before this record a resumed run whose ``data.root`` had gained, lost or changed images went
on without a word: a run without a cache compared nothing, and a run with one compared the cache with today's data,
not with the run's (a cache rebuilt after the data changed passes). Now the resume is refused in one line naming
what changed: the domains, the image count, the file list (paths and sizes, as the dataset fingerprint hashes
them), the classes or split, or a cache's teacher, templates or views.

The record is the dataset fingerprint the caches are checked with (:meth:`DomainFolder.fingerprint`, over every
domain and pool folder of the run: one pass over the file list on rank 0, about 5 s at 10^7 images),
its inputs field by field (only read to name a change), and each cache's meaning. A rebuilt cache of the same
teacher, templates and views is the same targets and resumes. A run written before this record, or resumed before
its first checkpoint, records the data it starts on now.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.errors import DistillError
from distill.records import RunData
from distill.teacher.cache.identity import TEACHER_UNCOMPARED
from distill.train.build import TrainSetup

#: the dataset fields a change is named by, in the order they are looked at
DATASET_FIELDS = {"domains": "the data's domains", "images": "the data's image count",
                  "files_sha256": "the data's file list (paths, sizes)", "test_fraction": "data.test_fraction",
                  "split_seed": "data.split_seed", "pretrain_fraction": "data.pretrain_fraction"}


def run_data(setup: TrainSetup) -> RunData:
    """The record of what ``setup`` trains on."""
    return RunData(fingerprint=setup.dataset.fingerprint(), dataset=setup.dataset.fingerprint_inputs(),
                   caches=_cache_meanings(setup))


def check_same_data(run_dir: Path, setup: TrainSetup, resuming: bool) -> None:
    """On a resume from a checkpoint (``resuming``), refuse data or caches that differ from ``RUN/data.json``;
    otherwise (a new run, a resume before the first checkpoint, a run from before the record) write it. Rank 0's
    work (:func:`distill.utils.runtime.share_from_main` raises its refusal on every rank).

    Raises:
        DistillError: one line naming the run, what changed (then vs now) and the way out.
    """
    path = RunData.path_in(run_dir)
    if resuming and path.is_file():
        then = RunData.read(path)
        if setup.dataset.fingerprint() == then.fingerprint and _moved(_cache_meanings(setup)) == _moved(then.caches):
            return
        change = _change(then, run_data(setup))
        raise DistillError(f"--resume {run_dir}: {change} since the run started ({path}); resumed, it would not be "
                           "the run it was (sample indices and cache rows would name other images): restore them, or "
                           "start a new run")
    run_data(setup).write(run_dir)


def _moved(caches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in c.items() if k != "path"} for c in caches]  # a cache moved is the same targets


def _cache_meanings(setup: TrainSetup) -> list[dict[str, Any]]:
    """Each cache's path and what its rows mean (no pass over the file list)."""
    return [{"path": str(cache.path),
             "teacher": {k: v for k, v in cache.manifest.teacher.model_dump(mode="json").items() if k not in TEACHER_UNCOMPARED},
             "templates": list(cache.manifest.templates), "views": cache.manifest.views.model_dump(mode="json")}
            for cache in setup.caches]


def _change(then: RunData, now: RunData) -> str:
    """What differs, the first thing found: a dataset field (then -> now), the classes/pools, or a cache."""
    for key, name in DATASET_FIELDS.items():
        a, b = then.dataset.get(key), now.dataset.get(key)
        if a != b:
            shown = "" if key == "files_sha256" else f" ({a} -> {b})"
            return f"{name} changed{shown}"
    if then.fingerprint != now.fingerprint:
        return "the data's classes or unlabeled pool folders changed"
    if len(then.caches) != len(now.caches):
        return f"the number of caches changed ({len(then.caches)} -> {len(now.caches)})"
    for i, (a, b) in enumerate(zip(_moved(then.caches), _moved(now.caches))):
        for key in ("teacher", "templates", "views"):
            if a.get(key) != b.get(key):
                return f"cache {now.caches[i]['path']}: its {key} changed"
    return "the data changed"
