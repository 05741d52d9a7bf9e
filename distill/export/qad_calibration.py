"""Which images ``distill qad`` calibrates (trains) on: ``distill export``'s picks, with ``--export`` the export's own.

The no-harm rule compares the PTQ arm with QAD on hold-out images: train-split images that are not calibration
images (:func:`distill.export.data.holdout_samples`). With ``--export`` the PTQ arm is the export's int8 file, so the
hold-out must hold none of *its* calibration images either. QAD therefore picks its calibration images exactly as the
export did (the same data root, split, domains, count and seed: :func:`distill.export.data.calibration_samples` then
picks the same images), and a setting given to QAD that differs from the export's is refused in one line: both
int8 files are calibrated alike, and the hold-out excludes what either was calibrated on.

Without ``--export`` and ``--calib-count``, QAD calibrates on 256 images unless the train split is too small to hold
them and the hold-out too (:func:`count_fitter`): then the two share each short domain's train images in proportion
(256 : ``--holdout-count``), and one line says so. Where the images are there, nothing changes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from distill.data.split import SPLIT_KEYS
from distill.errors import DistillError
from distill.export.config import ExportConfig
from distill.export.data import fitted_count
from distill.export.kept_float import ExportedInt8
from distill.export.log import ExportLog
from distill.export.qad_config import QADConfig
from distill.export.training_run import TrainingRun, with_run_defaults
from distill.records import EXPORT_REPORT, ExportReport
from distill.spelling import option
from distill.validation import first_error

DEFAULT_CALIB_COUNT = ExportConfig.model_fields["calib_count"].default
DEFAULT_SEED = ExportConfig.model_fields["seed"].default


def export_config(cfg: QADConfig, run: TrainingRun, say: ExportLog,
                  exported: ExportedInt8 | None = None) -> ExportConfig:
    """The ``distill export`` settings QAD picks its images with: fp32 + int8 of ``cfg.int8_flavour``, ``cfg``'s test count;
    with ``exported`` (``--export``) its data root (unless ``cfg`` names one), split, calibration domains, count and
    seed (the PTQ file QAD must beat was calibrated on them: both files are calibrated alike), else ``cfg``'s and the
    run's.

    Raises:
        DistillError: ``cfg`` sets a calibration setting the export set otherwise (one line naming both values), the
            export's split differs from the run's on the run's own data (its test images held train images), or
            there is no data root to calibrate on (int8 needs one).
    """
    data_root, calib, targets = cfg.data_root, cfg.calib_domains, cfg.target_domains
    count = cfg.calib_count if cfg.calib_count is not None else DEFAULT_CALIB_COUNT
    seed = cfg.seed if cfg.seed is not None else DEFAULT_SEED
    split: dict[str, Any] = {}
    split_from: dict[str, str] = {}  # who set the split keys: with_run_defaults refuses another rule than the run's
    if exported is not None and exported.data_root is not None:
        where = Path(str(cfg.export_dir)) / EXPORT_REPORT
        report = ExportReport.read(where.parent)
        theirs, taken = report.config, (report.data or {}).get("calib_count")
        data_root = data_root or exported.data_root
        if cfg.data_root is None and not Path(data_root).is_dir():  # an export copied from elsewhere
            raise DistillError(f"{data_root}: the export's data root (data.root in {where}) is not there: pass "
                               f"{option('data_root', 'ROOT')}, the dataset's folder here (QAD trains and calibrates "
                               "on it)")
        calib = _agree(where, "calib_domains", cfg.calib_domains, exported.calib_domains or None)
        given = None if cfg.target_domains is None else tuple(d for d in cfg.target_domains if d not in (calib or ()))
        targets = _agree(where, "target_domains", given, exported.target_domains)  # as export.json lists them
        count = _agree(where, "calib_count", cfg.calib_count, theirs.get("calib_count", DEFAULT_CALIB_COUNT))
        seed = _agree(where, "seed", cfg.seed, theirs.get("seed", DEFAULT_SEED))
        split = {k: theirs[k] for k in SPLIT_KEYS if theirs.get(k) is not None}
        split_from = {"split_from": str(where), "split_fix": "re-export with the run's split ({flag} unset)"}
        say(f"calibration as the export's ({option('export_dir')}): {data_root}, domains {', '.join(calib or ())}"
            + (f" + {', '.join(targets)} (unlabeled)" if targets else "")
            + (f", {count} images" if taken in (None, count) else f", {option('calib_count', count)} ({taken} images there)")
            + f", seed {seed}")
    ecfg = with_run_defaults(ExportConfig(
        precisions=("fp32", "int8"), data_root=data_root, calib_domains=calib, target_domains=targets,
        calib_count=count, eval_count=cfg.eval_count, int8_flavour=cfg.int8_flavour, seed=seed,
        trt_batches=_trt(cfg, "trt_batches"),
        trt_workspace_mib=_trt(cfg, "trt_workspace_mib"), **split), run, say, **split_from)
    ecfg.check_data("QAD")  # int8 is QAD's own choice: the user named no precision
    return ecfg


def _trt(cfg: QADConfig, key: str) -> Any:
    """A TensorRT setting of QAD's ``build_engine.sh`` (``trt_batches``: the profile, ``trt_workspace_mib``: the
    builder's workspace): ``cfg``'s, else the export's (``--export``: its engines are built with it; export.json's
    config records it), else ``distill export``'s default."""
    if getattr(cfg, key) is not None:
        return getattr(cfg, key)
    theirs = ExportReport.read(cfg.export_dir).config.get(key) if cfg.export_dir else None
    if theirs is not None:  # export.json records the profile as a list: checked and made a tuple as ExportConfig takes it
        try:  # a 0 or [] is refused as distill export refuses it, not taken for absent
            return getattr(ExportConfig.model_validate({key: theirs}), key)
        except ValidationError as e:
            where = Path(cfg.export_dir or "") / EXPORT_REPORT
            raise DistillError(f"{where}: 'config.{key}': {first_error(e)['msg']} (got {theirs!r})") from None
    return ExportConfig.model_fields[key].default


def _agree(where: Path, key: str, given: Any, theirs: Any) -> Any:
    """The export's value of a calibration setting (``theirs``) unless QAD was ``given`` another: then one line naming
    ``key`` (as the caller spells it) and both values. Domains agree as sets (the export's order is kept: it sets
    each domain's share)."""
    if given is None or theirs is None or given == theirs or (
            isinstance(given, tuple) and set(given) == set(theirs)):
        return theirs if theirs is not None else given
    given_text, theirs_text = (",".join(v) if isinstance(v, (list, tuple)) else str(v) for v in (given, theirs))
    raise DistillError(f"{where}: {option(key, given_text or '(none)')} differs from the export's "
                       f"{theirs_text or '(none)'}; with {option('export_dir')} both int8 files calibrate alike, so "
                       f"that the no-harm rule's hold-out holds no calibration image of either: drop {option(key)}, "
                       "or re-export with it")


def count_fitter(cfg: QADConfig, exported: ExportedInt8 | None, say: ExportLog) -> Callable[[dict[str, int]], int] | None:
    """:func:`distill.export.data.load_export_data`'s ``fit_count`` for QAD: None (the count as resolved) with
    ``--calib-count`` or ``--export`` (the export's calibration is the PTQ arm's: never changed here); else
    :func:`~distill.export.data.fitted_count` of the default over the train split's images, said in one line when
    it is lower (a small data set: 84 train images give 42 calibration + 42 hold-out images, not 84 + none)."""
    if cfg.calib_count is not None or exported is not None:
        return None

    def fit(train: dict[str, int]) -> int:
        count = fitted_count(DEFAULT_CALIB_COUNT, cfg.holdout_count, train)
        if count < DEFAULT_CALIB_COUNT:
            have = ", ".join(f"{d} {n}" for d, n in train.items())
            say(f"calibration: {count} images, not {DEFAULT_CALIB_COUNT}: the train split ({have} images) cannot "
                f"hold {DEFAULT_CALIB_COUNT} calibration and {cfg.holdout_count} hold-out images, so they share it "
                f"({option('calib_count')} sets it)")
        return count
    return fit
