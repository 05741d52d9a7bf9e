"""The stand-in teacher's pretraining pool, and the one check that a dataset keeps it out of the students' splits.

A bootstrapped teacher (:mod:`distill.teacher.bootstrap`) records in ``teacher.json`` the pool it
was trained on (``dataset.pretrain``: the ``pretrain`` split of :func:`distill.data.folder.split_of`).
Which images are in the pool follows from ``split_seed`` and ``pretrain_fraction`` alone (the pool
is carved from the top of the path hash; test and val from the bottom), so those are the fields a
dataset must share with the teacher. With any other split rule some of the teacher's pretraining
images would land in a student's train, val or test split, and the teacher's zero-shot numbers
(and everything distilled from them) would rest on images it was trained on. Cache builds and
training runs call :func:`check_teacher_pool` before they use a teacher or its cache.
"""
from __future__ import annotations

from pathlib import Path

from distill.data.folder import DomainFolder
from distill.errors import DistillError
from distill.records import TeacherManifest, TeacherPool
from distill.teacher.prompts import teacher_manifest_of

NO_POOL = ("the stand-in teacher trains on the pretraining pool only (images no student sees); pass "
           "--pretrain-fraction (0.3 on the digits suite)")


def pool_of(dataset: DomainFolder) -> TeacherPool:
    """The pool ``dataset``'s split rule gives the teacher (its ``pretrain`` split)."""
    if dataset.pretrain_fraction <= 0:
        raise DistillError(f"{dataset.root}: pretrain_fraction is 0, no pretraining pool; {NO_POOL}")
    return TeacherPool(fraction=dataset.pretrain_fraction, split_seed=dataset.split_seed,
                       test_fraction=dataset.test_fraction, val_fraction=dataset.val_fraction,
                       images=len(dataset.select(split="pretrain")))


def teacher_pool(pretrained: str | Path | None) -> tuple[TeacherPool, Path] | None:
    """(pool, teacher.json) of the bootstrapped teacher at ``pretrained``; None for any other teacher
    (a downloaded CLIP, or a stand-in bootstrapped before pools existed)."""
    manifest = teacher_manifest_of(pretrained)
    if manifest is None:
        return None
    pool = TeacherManifest.read(manifest).dataset.pretrain
    return (pool, manifest) if pool is not None else None


def check_teacher_pool(pretrained: str | Path | None, dataset: DomainFolder, what: str, keys: str = "") -> None:
    """Refuse ``dataset`` when its split rule would put the teacher's pretraining images in the students' splits.

    Args:
        pretrained: the teacher's checkpoint (a ``teacher.json`` beside it names its pool); other
            teachers pass.
        dataset: the data the cache or run reads.
        what: the subject of the refusal ("a cache", "this run").
        keys: where the caller's config keeps the split keys (``"data."`` for a run): the refusal then names the
            settings to make (``data.pretrain_fraction=0.3``).
    """
    found = teacher_pool(pretrained)
    if found is None:
        return
    pool, manifest = found
    diffs = [f"{name} {have:g}" for name, have, want in (("pretrain_fraction", dataset.pretrain_fraction, pool.fraction),
                                                        ("split_seed", dataset.split_seed, pool.split_seed))
             if have != want]
    if diffs and keys:
        fix = " and ".join(f"{keys}{k}={v:g}" for k, v in (("pretrain_fraction", pool.fraction),
                                                           ("split_seed", pool.split_seed)))
        advice = f"set {fix}"
    else:
        advice = f"use the teacher's pretrain_fraction {pool.fraction:g} and split_seed {pool.split_seed}"
    if diffs:
        raise DistillError(
            f"the teacher was pretrained on {100 * pool.fraction:g}% of each domain (pretrain_fraction {pool.fraction:g}, "
            f"split_seed {pool.split_seed}: {manifest}); {what} with {' and '.join(diffs)} would put its pretraining "
            f"images in the students' train/test; {advice}")
