"""What a run trains on, recorded when it starts (``RUN/data.json``) and compared when it resumes.

A resume is exact only on the images and teacher targets the run started with: sample indices key the cache's rows
and every random draw. Before this record a resumed run whose ``data.root`` had gained, lost or changed images went
on without a word: a run without a cache compared nothing, and a run with one compared the cache with today's data,
not with the run's (a cache rebuilt after the data changed passes). Now the resume is refused in one line naming
what changed: a domain's or pool folder's image count, the file list (paths and sizes), the classes, a split key, or
what a cache's rows are.

The record: the dataset fingerprint over every file of every domain and pool folder (:meth:`DomainFolder.fingerprint`:
paths, sizes, classes, split rule; one pass over the file list on rank 0, about 1.7 s per 10^6 images), the image
count of each domain and folder, the classes and the split rule (read off, no pass), and each cache's manifest less
what an identical rebuild changes (dates, library versions, shard files). It is compared as soon as the data and
caches are open (:func:`distill.train.build.build`'s ``on_data``), before any image is decoded. A run written before
this record, or resumed before its first checkpoint, records the data it starts on now (an older run says so).
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from distill.data.folder import DomainFolder
from distill.errors import DistillError
from distill.records import CACHE_MANIFEST, RunData, RunLaunch
from distill.teacher.cache import TeacherCache
from distill.teacher.cache.identity import TEACHER_UNCOMPARED
from distill.utils.launch import distill_command, ranks

#: cache manifest keys an identical rebuild changes (or that say nothing of the rows' values)
REBUILT = ("created", "distill_version", "shards", "num_shards", "shard_size", "batch_size", "teacher_path")


def run_data(dataset: DomainFolder, caches: Sequence[TeacherCache]) -> RunData:
    """The record of what a run on ``dataset`` (its pool folders added) and ``caches`` trains on."""
    names = [*dataset.domains, *dataset.folders]
    c = dataset.samples.columns
    counts = np.bincount(c.domain, minlength=len(c.domain_names))
    rule = {"classes": list(dataset.classes), "test_fraction": dataset.test_fraction, "split_seed": dataset.split_seed,
            "val_fraction": dataset.val_fraction, "pretrain_fraction": dataset.pretrain_fraction}
    return RunData(fingerprint=dataset.fingerprint(names), rule=rule,
                   images={n: int(counts[c.domain_names.index(n)]) for n in names},
                   caches=[cache_meaning(cache) for cache in caches])


def cache_meaning(cache: TeacherCache) -> dict[str, Any]:
    """What a cache's rows are: its manifest (and its companions': adversarial views, pixel stores) less
    :data:`REBUILT` and the teacher's library versions, with its path (not compared: a cache moved is the same)."""
    meaning: dict[str, Any] = {"path": str(cache.path)}
    for manifest in sorted(Path(cache.path).glob(f"**/{CACHE_MANIFEST}")):
        try:
            fields = json.loads(manifest.read_text())
        except (OSError, ValueError) as e:
            raise DistillError(f"{manifest}: unreadable ({e})") from None
        teacher = fields.get("teacher")
        if isinstance(teacher, dict):
            fields["teacher"] = {k: v for k, v in teacher.items() if k not in TEACHER_UNCOMPARED}
        meaning[str(manifest.parent.relative_to(cache.path))] = {k: v for k, v in fields.items() if k not in REBUILT}
    return meaning


def check_same_data(run_dir: Path, dataset: DomainFolder, caches: Sequence[TeacherCache],
                    resuming: bool) -> RunData | None:
    """On a resume from a checkpoint (``resuming``), refuse data or caches that differ from ``RUN/data.json`` and
    return None; otherwise (a new run, a resume before the first checkpoint, a run from before the record) return
    the record to write once the run folder is made. Rank 0's work (``share_from_main`` raises its refusal on every
    rank).

    Raises:
        DistillError: one line naming the run, what changed (then -> now) and the way out.
    """
    path = RunData.path_in(run_dir)
    now = run_data(dataset, caches)
    if not resuming:
        return now
    if not path.is_file():
        print(f"warning: {run_dir} has no {path.name} (a run from before distill recorded its data): resumed without "
              "comparing the data it started on; recorded now", file=sys.stderr)
        return now
    then = RunData.read(path)
    change = _change(then, now)
    if change is None:
        return None
    raise DistillError(f"--resume {run_dir}: {change} since the run started ({path}); resumed, it would not be the "
                       "run it was (sample indices and cache rows would name other images): restore them, or start a "
                       "new run")


def check_same_launch(run_dir: Path, world: int, command: str) -> None:
    """On a resume from a checkpoint, refuse another number of ranks than ``RUN/launch.json`` records: each rank takes
    its share of the global batch (and on a CPU, gloo, keeps its own BatchNorm statistics), so the run would go on as
    another run. A run from before the record passes. Rank 0's work, as :func:`check_same_data`.

    Raises:
        DistillError: one line naming both numbers and the command that continues the run as it was launched.
    """
    path = RunLaunch.path_in(run_dir)
    if not path.is_file():
        return
    launch = RunLaunch.read(path)
    saved, nodes = launch.world_size, launch.nnodes
    if saved != world:
        raise DistillError(f"--resume {run_dir}: the run was trained on {ranks(saved, nodes)} ({path}) and this resume "
                           f"runs on {ranks(world)}; resumed so, it would not be the run it was (each rank takes its "
                           f"share of the batch): continue it with: {distill_command(command, saved, saved // nodes)} "
                           f"--resume {shlex.quote(str(run_dir))}")


def _moved(caches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in c.items() if k != "path"} for c in caches]


def _change(then: RunData, now: RunData) -> str | None:
    """What differs, the most specific thing first; None: nothing."""
    for key in then.rule.keys() | now.rule.keys():
        if then.rule.get(key) != now.rule.get(key):
            shown = "" if key == "classes" else f" ({then.rule.get(key)} -> {now.rule.get(key)})"
            return "the classes changed" if key == "classes" else f"data.{key} changed{shown}"
    for name in [*then.images, *(n for n in now.images if n not in then.images)]:
        a, b = then.images.get(name), now.images.get(name)
        if a != b:
            return f"'{name}': its image count changed ({a if a is not None else 'absent'} -> " \
                   f"{b if b is not None else 'absent'})"
    if then.fingerprint != now.fingerprint:
        return "the data's file list (paths, sizes) changed"
    if len(then.caches) != len(now.caches):
        return f"the number of caches changed ({len(then.caches)} -> {len(now.caches)})"
    for old, new, cache in zip(_moved(then.caches), _moved(now.caches), now.caches):
        for part in old.keys() | new.keys():
            a, b = old.get(part, {}), new.get(part, {})
            keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            if keys:
                where = "" if part == "." else f"{part}/"
                return f"cache {cache['path']}: {where}{CACHE_MANIFEST}'s {', '.join(keys)} changed"
    return None
