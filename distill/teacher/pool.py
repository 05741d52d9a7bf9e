"""The stand-in teacher's pretraining pool, and the one check that a dataset keeps it out of the students' splits.

A bootstrapped teacher (:mod:`distill.teacher.bootstrap`) records in ``teacher.json`` the pool it
was trained on (``dataset.pretrain``: the ``pretrain`` split of :func:`distill.data.folder.split_of`).
Which images are in the pool follows from ``split_seed`` and ``pretrain_fraction`` alone (the pool
is carved from the top of the path hash; test and val from the bottom), so those are the fields a
dataset must share with the teacher. With any other split rule some of the teacher's pretraining
images would land in a student's train, val or test split, and the teacher's zero-shot numbers
(and everything distilled from them) would rest on images it was trained on. Cache builds and
training runs call :func:`check_teacher_pool` before they use a teacher or its cache.

The pool means something only on the data it was drawn from. ``teacher.json`` records that data's root
(as the bootstrap was given it, relative to where it ran), fingerprint and domain folders; the root's
spelling and the fingerprint both change with the data's place and with any added image, but a pool image
is a ``DOMAIN/CLASS/file`` path under one of the recorded domains. So data that holds none of the
teacher's domains holds none of its pool images: the pool is not applied there (a stand-in teacher reused
on other data keeps all of that data's images), and :func:`pool_line` says so. Data sharing a domain is
taken as the teacher's (with a changed image or two, the pool must still stay out of the students'
splits), and the line names the pool held out. The rule goes by folder name: the teacher's own images under
renamed domain folders look like other data, so the line warns when the data has the teacher's classes but
none of its domains.
"""
from __future__ import annotations

from pathlib import Path

from distill.data.folder import DomainFolder
from distill.data.listing import domain_folders
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


def _recorded(pretrained: str | Path | None) -> tuple[TeacherManifest, TeacherPool, Path] | None:
    manifest = teacher_manifest_of(pretrained)
    if manifest is None:
        return None
    record = TeacherManifest.read(manifest)
    return (record, record.dataset.pretrain, manifest) if record.dataset.pretrain is not None else None


def _domains(data: str | Path | DomainFolder) -> list[str]:
    return list(data.domains) if isinstance(data, DomainFolder) else domain_folders(data)


def _is_other_data(record: TeacherManifest, data: str | Path | DomainFolder) -> bool:
    """``data`` holds none of the domain folders the teacher's pool was drawn from (module docstring)."""
    return not set(record.domains) & set(_domains(data))


def teacher_pool(pretrained: str | Path | None, data: str | Path | DomainFolder | None = None
                 ) -> tuple[TeacherPool, Path] | None:
    """(pool, teacher.json) of the bootstrapped teacher at ``pretrained``; None for any other teacher
    (a downloaded CLIP, or a stand-in bootstrapped before pools existed), and for ``data`` (a root or a
    dataset; None: not asked) that is not the data the pool was drawn from (module docstring)."""
    found = _recorded(pretrained)
    if found is None or (data is not None and _is_other_data(found[0], data)):
        return None
    return found[1], found[2]


def _renamed_hint(record: TeacherManifest, dataset: DomainFolder) -> str:
    """The pitfall of the folder-name rule: the teacher's own images under renamed domain folders look like other data."""
    if not record.classes or set(record.classes) != set(dataset.classes):
        return ""
    return (f"; warning: the data has the teacher's classes but none of its pool's domains ({', '.join(record.domains)}): "
            "if these are the pool's images under renamed folders, rename them back (the pool is drawn by "
            "DOMAIN/CLASS/file path)")


def pool_line(pretrained: str | Path | None, dataset: DomainFolder) -> str | None:
    """One line on the teacher's pool for a stage reading ``dataset``: how many images it holds out, or that
    the pool is from other data and is not applied; None when the teacher records no pool."""
    found = _recorded(pretrained)
    if found is None:
        return None
    record, pool, manifest = found
    if _is_other_data(record, dataset):
        return (f"teacher pool: not applied: the pool in {manifest} is from other data ({record.dataset.root}: "
                f"domains {', '.join(record.domains)}; none of them is under {dataset.root}){_renamed_hint(record, dataset)}")
    held = len(dataset.select(split="pretrain"))
    return (f"teacher pool: {held} image(s) held out, never cached or trained on (pretrain_fraction "
            f"{dataset.pretrain_fraction:g} of each domain, split_seed {dataset.split_seed}; the teacher's pool in "
            f"{manifest}, bootstrapped on {record.dataset.root})")


def check_teacher_pool(pretrained: str | Path | None, dataset: DomainFolder, what: str, keys: str = "") -> None:
    """Refuse ``dataset`` when its split rule would put the teacher's pretraining images in the students' splits.

    Args:
        pretrained: the teacher's checkpoint (a ``teacher.json`` beside it names its pool); other
            teachers pass, and so does other data than the pool's (:func:`teacher_pool`).
        dataset: the data the cache or run reads.
        what: the subject of the refusal ("a cache", "this run").
        keys: where the caller's config keeps the split keys (``"data."`` for a run): the refusal then names the
            settings to make (``data.pretrain_fraction=0.3``).
    """
    found = teacher_pool(pretrained, dataset)  # a pool from other data binds nothing here
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
