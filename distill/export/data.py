"""The images an export is checked on: test images per domain, and int8 calibration images.

Parity and accuracy run on the *test* split of every evaluated domain (the split training
held out); int8 calibrates on the *train* split of the calibration domains plus the target
domains' train images, unlabeled. Without a dataset, parity runs on random-noise images and
no accuracy is measured. A text-head (open-vocabulary) student is scored only on images of the
data's classes its head names; when it names none, its checks run on real images, label-free.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from distill.data.folder import DomainFolder, Sample
from distill.errors import DistillError
from distill.export.config import ExportConfig
from distill.export.images import PROGRESS_EVERY, ImageSet, load_images, pick, pick_per_domain, random_images
from distill.export.log import ExportLog
from distill.records import CacheManifest
from distill.spelling import option
from distill.student.model import StudentSpec

RANDOM_IMAGES = 32  # parity images when no dataset is given


@dataclass(frozen=True)
class CalibrationPicks:
    """The calibration picks (:func:`calibration_samples`): a few hundred samples, not images.

    Attributes:
        domains: the calibration domains then the target domains, as the export lists them (repeats kept).
        by_domain: each domain's picks, in sample order.
        count: the calibration count they were picked with (``cfg.calib_count``, or what ``fit_count`` made it).
    """

    domains: list[str]
    by_domain: dict[str, list[Sample]]
    count: int = 0

    def samples(self) -> list[Sample]:
        """Every pick, domain by domain: the order of the calibration images (and of cached teacher rows)."""
        return [s for d in self.domains for s in self.by_domain[d]]


@dataclass(frozen=True)
class ExportData:
    """The images every check runs on, and what export.json's ``data`` block says about them.

    Attributes:
        eval_images: test images (labels are the student's class ids), or random noise.
        calib_images: calibration images when int8 is exported, else None.
        info: export.json ``data`` (root, split, domains, counts, skipped images).
        calib_picks: which samples the calibration images are; None without int8.
        folder: the one scan of the data root (cache-skipped images left out), kept only when
            :func:`load_export_data` is asked to (``keep_folder``: ``distill qad``'s hold-out and cached
            teacher rows pick from it instead of scanning again); None otherwise, so an export does not
            hold the index (its size grows with the data set) past loading.
    """

    eval_images: ImageSet
    calib_images: ImageSet | None
    info: dict[str, Any]
    calib_picks: CalibrationPicks | None = None
    folder: DomainFolder | None = None

    @property
    def labeled(self) -> bool:
        return bool(self.info["labeled"])

    def without_folder(self) -> ExportData:
        """This record without its folder: drops the index once the picks that need it are made."""
        return replace(self, folder=None)


def load_export_data(cfg: ExportConfig, spec: StudentSpec, source_domains: list[str], log: ExportLog,
                     keep_folder: bool = False, spill_dir: str | Path | None = None,
                     fit_count: Callable[[dict[str, int]], int] | None = None) -> ExportData:
    """Load the eval (and, for int8, calibration) images ``cfg`` names; ``source_domains``: the run's,
    the default calibration domains. ``keep_folder``: the record keeps the folder scanned here
    (:attr:`ExportData.folder`), for picks made later from the same scan. ``spill_dir``: where images too
    many for RAM are memory-mapped from (:func:`distill.export.images.pixel_array`; default: the temp folder).
    ``fit_count``: given each calibration domain's train-split image count, the calibration count to pick with
    instead of ``cfg.calib_count`` (``distill qad``'s default: :func:`distill.export.qad_calibration.count_fitter`;
    the count used is :attr:`CalibrationPicks.count`)."""
    if not cfg.data_root:
        log.warn(f"no {option('data_root')}: fp32/fp16 parity is checked on {RANDOM_IMAGES} random-noise images and no accuracy "
                 "is measured")
        return ExportData(random_images(spec, RANDOM_IMAGES, cfg.seed), None,
                          {"root": None, "labeled": False, "eval_count": {"random": RANDOM_IMAGES}})
    rule = cfg.split_rule(where="export")
    folder = DomainFolder(cfg.data_root, rule, skip_bad=True)  # bad images are skipped and listed here, as below
    skipped = folder.unnamed + exclude_cache_skipped(folder, cfg.caches or ())
    eval_domains = list(cfg.eval_domains or folder.domains)
    folder.check_domains(eval_domains)
    samples = pick_per_domain(folder, eval_domains, "test", cfg.eval_count, cfg.seed)
    labeled = True
    if spec.head == "text":  # open vocabulary: accuracy only on the data's classes the head names
        named = [x for x in samples if folder.classes[x.label] in set(spec.class_names)]
        labeled = bool(named)
        samples = named or samples
        if not labeled:
            log.warn(f"none of {cfg.data_root}'s classes is among the student's {len(spec.class_names)}: "
                     "checks run on its test images label-free, and no accuracy is measured")
    if len(samples) >= PROGRESS_EVERY:
        log(f"decoding {len(samples):,} test images of {', '.join(eval_domains)}")
    eval_images = load_images(folder, samples, spec, spill_dir, log)
    if len(eval_images) == 0:
        raise DistillError(f"{cfg.data_root}: no decodable test-split images in {eval_domains}")
    if labeled:
        relabel(eval_images, folder.classes, list(spec.class_names), cfg.data_root, partial=spec.head == "text")
    skipped += eval_images.skipped
    known_sources = [d for d in source_domains if d in folder.domains]
    calib_domains = list(cfg.calib_domains or known_sources or folder.domains)
    target_domains = [d for d in cfg.target_domains or () if d not in calib_domains]
    folder.check_domains(calib_domains + target_domains)
    calib_images, calib_picks = None, None
    if "int8" in cfg.precisions:
        domains = calib_domains + target_domains
        if fit_count is not None:
            cfg = cfg.model_copy(update={"calib_count": fit_count(train_counts(folder, domains))})
        calib_picks = CalibrationPicks(domains, calibration_samples(cfg, folder, domains), cfg.calib_count)
        calib_images = _calibration_images(cfg, folder, calib_picks, spec, spill_dir)
        skipped += calib_images.skipped
    calib_per_domain = {d: len(calib_picks.by_domain[d]) for d in calib_picks.domains} if calib_picks else {}
    if skipped:
        log.warn(f"{len(skipped)} undecodable image(s) skipped: {', '.join(skipped)}")
    info = {
        "root": str(cfg.data_root), "labeled": labeled, "fingerprint": folder.fingerprint(),
        "test_fraction": rule.test_fraction, "split_seed": rule.split_seed, "val_fraction": rule.val_fraction,
        **({"pretrain_fraction": rule.pretrain_fraction} if rule.pretrain_fraction else {}),  # absent: no pool
        "skipped": skipped,
        "eval_domains": eval_domains, "eval_split": "test",
        "eval_count": {d: int((eval_images.domains == d).sum()) for d in eval_domains},
        "calib_domains": calib_domains, "target_domains": target_domains, "calib_split": "train",
        "calib_count": len(calib_images) if calib_images is not None else 0, "calib_per_domain": calib_per_domain,
        "calib_method": cfg.calib_method,
    }
    if spec.head == "text":
        info["eval_classes"] = [c for c in spec.class_names if c in folder.classes] if labeled else []
    return ExportData(eval_images, calib_images, info, calib_picks, folder if keep_folder else None)


def _share(count: int, i: int, n: int) -> int:
    """Domain ``i``'s even share of ``count`` over ``n`` domains (the first ``count % n`` take one more)."""
    return count // n + (1 if i < count % n else 0)


def calibration_samples(cfg: ExportConfig, folder: DomainFolder, domains: list[str]) -> dict[str, list[Sample]]:
    """The calibration picks per domain: ``cfg.calib_count`` train images, an even share per domain (at least
    one each). The one rule: :func:`load_export_data`, QAD's cached teacher rows and its hold-out use it."""
    return {d: pick(folder.select([d], "train"), max(1, _share(cfg.calib_count, i, len(domains))), cfg.seed)
            for i, d in enumerate(domains)}


def train_counts(folder: DomainFolder, domains: list[str]) -> dict[str, int]:
    """Each domain's train-split image count (what calibration and the hold-out pick from)."""
    return {d: len(folder.select([d], "train")) for d in domains}


def fitted_count(count: int, holdout: int, train: dict[str, int]) -> int:
    """The calibration count that leaves the hold-out some images: ``count`` whenever its even shares leave any
    domain a train image for the hold-out (one small domain beside large ones does not shrink every domain's share:
    review 4 M2, session 26). Only where ``count`` would take every train image (a small data set: the hold-out
    empty), each domain short of its even shares of ``count`` calibration and ``holdout`` hold-out images has its
    images split in proportion of the two (256 and 256: half each), and the count is the largest whose even share
    fits every such domain (at least one image per domain, as :func:`calibration_samples` picks)."""
    n = len(train)
    if holdout <= 0 or sum(max(0, have - max(1, _share(count, i, n))) for i, have in enumerate(train.values())) > 0:
        return count
    caps = []
    for i, have in enumerate(train.values()):
        calib, held = max(1, _share(count, i, n)), _share(holdout, i, n)
        if 0 < have < calib + held:
            caps.append((i, max(1, have * calib // (calib + held))))
    fitted = count
    while fitted > 1 and any(max(1, _share(fitted, i, n)) > cap for i, cap in caps):
        fitted -= 1
    return fitted


def _calibration_images(cfg: ExportConfig, folder: DomainFolder, picks: CalibrationPicks, spec: StudentSpec,
                        spill_dir: str | Path | None = None) -> ImageSet:
    """The images of the calibration ``picks``, domain by domain."""
    images = load_images(folder, picks.samples(), spec, spill_dir)
    if len(images) == 0:
        raise DistillError(f"{cfg.data_root}: no train-split images to calibrate with in {picks.domains}")
    return images


def holdout_samples(cfg: ExportConfig, folder: DomainFolder, domains: list[str], count: int,
                    calib: dict[str, list[Sample]] | None = None) -> list[Sample]:
    """Up to ``count`` train-split images of ``domains`` (an even share per domain, fewer where fewer are left)
    that are not calibration images (``calib``, :func:`calibration_samples` picked again when None); test images
    are another split.

    Used to choose between int8 models without choosing on the calibration images (QAD trained on them) or on
    the test images (accuracy is reported there). Label-free: only top-1 agreement with fp32 is measured.
    """
    calib = calibration_samples(cfg, folder, domains) if calib is None else calib
    out: list[Sample] = []
    for i, d in enumerate(domains):
        train = folder.select([d], "train")  # a view over the index's columns: no Sample per image is made
        rest = train.take(np.flatnonzero(~np.isin(train.column("index"), [s.index for s in calib[d]])))
        out.extend(pick(rest, _share(count, i, len(domains)), cfg.seed))
    return out


def load_holdout_images(cfg: ExportConfig, spec: StudentSpec, data: ExportData, count: int,
                        spill_dir: str | Path | None = None, exported: str | None = None) -> ImageSet:
    """The images of :func:`holdout_samples` over the calibration (and target) domains, from the folder and
    calibration picks ``data`` holds (:func:`load_export_data` with ``keep_folder``: no second scan). ``exported``:
    the export folder whose calibration the picks are (``distill qad --export``), for the error's advice.

    Raises:
        DistillError: no train-split image is left once the calibration images are taken (one line with each
            domain's numbers and a calibration count that leaves some: :func:`fitted_count`).
    """
    folder, picks = data.folder, data.calib_picks
    assert folder is not None and picks is not None, "hold-out images need load_export_data(keep_folder=True), int8"
    images = load_images(folder, holdout_samples(cfg, folder, picks.domains, count, picks.by_domain), spec, spill_dir)
    if len(images) == 0:
        train = train_counts(folder, picks.domains)
        taken = ", ".join(f"{d} {len(picks.by_domain[d])} of {n}" for d, n in train.items())
        lower = fitted_count(min(picks.count, ExportConfig.model_fields["calib_count"].default), count, train)
        fix = (f"re-export {exported} with {option('calib_count', lower)} (its int8 file is the arm QAD must beat, "
               f"so QAD calibrates on the export's images), or drop {option('export_dir')} (QAD then leaves some by "
               "itself)" if exported else f"lower {option('calib_count')}, e.g. to {lower}")
        raise DistillError(f"{cfg.data_root}: no train-split image is left for the hold-out: the "
                           f"{'export' if exported else 'calibration'} ({option('calib_count', picks.count)}) took "
                           "every one "
                           f"({taken} train-split images); {fix}")
    return images


def exclude_cache_skipped(folder: DomainFolder, caches: tuple[str, ...]) -> list[str]:
    """Leave out the images the run's caches skipped at build time; returns their paths."""
    out: list[str] = []
    for cache in caches:
        if CacheManifest.exists_in(cache):
            manifest = CacheManifest.read(cache)
            new = folder.exclude((image.path, image.reason) for image in manifest.skipped)
            out += [str(folder.root / p) for p, _ in new]
    return out


def relabel(images: ImageSet, folder_classes: list[str], student_classes: list[str], root: str,
            partial: bool = False) -> ImageSet:
    """Map dataset label ids to the student's class order (names must match; with ``partial``, the images
    hold only classes the student names, and the data set may have others)."""
    index = {c: i for i, c in enumerate(student_classes)}
    missing = [c for c in folder_classes if c not in index]
    if partial:
        index.update({c: -1 for c in missing})
    elif missing:
        raise DistillError(f"{root}: class(es) {missing[:5]} are not among the student's {len(student_classes)} "
                           f"classes {student_classes[:5]}...; evaluate on the data the student was trained for")
    table = np.asarray([index[c] for c in folder_classes], dtype=np.int64)
    images.labels = table[images.labels] if len(images) else images.labels
    return images
