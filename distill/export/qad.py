"""``distill qad``: quantization-aware distillation of a trained student, and its QDQ int8 ONNX.

Steps (:func:`qad`):

1. Load the checkpoint and the images ``distill export`` would use (:func:`load_export_data`, the
   run's data and source domains by default): calibration = train-split images, test = held-out. The data
   root is scanned once: the hold-out images and the cached teacher rows are picked from that scan and its
   calibration picks (:attr:`ExportData.folder`, :attr:`ExportData.calib_picks`), which is dropped after.
2. PTQ baseline: with ``export_dir`` (``--export``), that ``distill export`` folder's int8 file (its calibration
   and float fallback; of ``flavour``, else of the flavour the export offers: :mod:`distill.export.qad_flavour`);
   else the export's own functions without the fallback (fp32 ONNX, TorchScript exporter -> ``quant_pre_process``
   -> MinMax calibration -> ``quantize_static`` for the flavour). Scored against the fp32 ONNX on the calibration,
   test and hold-out images.
3. Fake-quantize a copy of the student for the flavour (:mod:`distill.export.fakequant`), calibrate its
   activation ranges on the calibration images, then train ``epochs`` passes: T² KL(fp32 student ||
   int8 student) at temperature T, SGD with momentum (``--optimizer adamw`` optional; self-distillation: the
   frozen fp32 student needs no cache), mixed
   with KL(cached teacher || int8 student) when a cache is given (``cache_weight``). Ranges follow the
   data (MinMax) for ``observer_epochs`` epochs, then are frozen (``ranges="observed"``), or are trained from
   their calibrated values (``"learned"``, the default: :mod:`distill.export.learned_ranges`); BatchNorm is folded
   from the start (:mod:`distill.export.qad_train`).
4. Export the QDQ ONNX with the trained scales, check it (onnxruntime runs it, int8 weights, the
   flavour's QDQ rules, close to the torch fake-quant model), save the tuned fp32 student, and write
   ``qad.json`` (:class:`QADRecord`) with PTQ vs QAD disagreement per domain (and, on labelled images,
   test accuracy per domain of fp32, PTQ and QAD).
5. The no-harm rule (:mod:`distill.export.qad_ship`): on hold-out images (train-split images that are neither
   calibration nor test images) QAD's file is the int8 file only when its mean disagreement with fp32 is below
   the PTQ baseline's; otherwise the baseline is copied beside it (``model.int8-<flavour>.ptq.onnx``). The record
   says which and why; whether int8 ships at all is the export's recommendation (:mod:`distill.report.decision`).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from distill.errors import DistillError
from distill.export.config import ExportConfig
from distill.export.data import ExportData, load_export_data, load_holdout_images
from distill.export.evaluate import (
    accuracy_by_domain,
    disagreement_by_domain,
    ort_session,
    parity,
    predict_onnx,
    predict_torch,
)
from distill.export.fakequant import conv_bn_pairs, export_qdq, tuned_student
from distill.export.images import ImageCalibrationReader, ImageSet
from distill.export.int8_step import int8_file
from distill.export.kept_float import KeptFloat, export_int8, kept_layers
from distill.export.log import ExportLog
from distill.export.onnx import INPUT_NAME, build_metadata, export_onnx, stamp
from distill.export.out_dir import refuse_checkpoint_or_run
from distill.export.qad_calibration import count_fitter, export_config
from distill.export.qad_config import Disagreement, QADConfig, QADRecord
from distill.export.qad_flavour import qad_flavour, unused_flags
from distill.export.qad_ship import engine_script, holdout_pairs, no_harm, ptq_file
from distill.export.qad_train import train_qad
from distill.export.quantize import (
    FLAVOURS,
    Int8Flavour,
    calibrate,
    prepare,
    qdq_report,
    quantize,
    saturation_risk,
    tensorrt_qdq_problems,
    with_weight_range,
)
from distill.export.training_run import TrainingRun, checkpoint_provenance, provenance, shipped_provenance
from distill.outputs import QAD
from distill.records import EXPORT_CHECKPOINT, QADAccuracy
from distill.records.base import relative_paths
from distill.spelling import option
from distill.student.model import Student, load_student, save_student
from distill.utils.io import check_out_dir, make_out_dir, removed_if_left_empty
from distill.utils.runtime import resolve_device

if TYPE_CHECKING:
    from distill.teacher.cache import TeacherCache

PLAIN_PTQ = "plain PTQ (MinMax, no float fallback)"  # the PTQ arm without --export
LIBRARY = f"torch.ao.quantization (FX prepare_qat_fx, FakeQuantize), torch {torch.__version__}"


def qad(cfg: QADConfig, log: Callable[[str], None] | None = None) -> QADRecord:
    """Quantization-aware distillation of ``cfg.checkpoint``; writes ``cfg.out_dir`` and returns its record. A run
    that fails or is interrupted leaves no empty ``out_dir`` it made (the CLI and the Python API alike).

    Raises:
        DistillError: unreadable checkpoint, no data to calibrate on, a cache of other data, a student
            torch.fx cannot trace, or an export onnxruntime cannot run.
    """
    with removed_if_left_empty(cfg.out_dir):
        return _qad(cfg, log)


def _qad(cfg: QADConfig, log: Callable[[str], None] | None) -> QADRecord:
    """:func:`qad`'s steps (the module docstring's 1-5)."""
    say, t0 = ExportLog(log), time.time()
    checkpoint, out = Path(cfg.checkpoint), check_out_dir(cfg.out_dir)  # --out naming a file: one line, first
    refuse_checkpoint_or_run(out, "distill qad", "qad", QAD)  # as export: never among another stage's files
    if checkpoint.is_file():
        checkpoint = checkpoint.parent
    student = load_student(checkpoint)  # DistillError names the file when it is not a checkpoint
    chosen = qad_flavour(cfg.flavour, cfg.export_dir)  # --flavour, else the export's (its recommended int8 file)
    if chosen.why:
        say(chosen.why)
    cfg = cfg.model_copy(update={"flavour": chosen.flavour})  # as resolved (qad.json too)
    if unused := unused_flags(cfg.int8_flavour, cfg.trt_batches, cfg.trt_workspace_mib, cfg.reduce_range):
        say.warn(unused)
    flavour = FLAVOURS[cfg.int8_flavour]
    device = resolve_device(cfg.device)
    # --export: the arm QAD must beat is that folder's int8 file (checked before any data is read)
    exported = export_int8(Path(cfg.export_dir), checkpoint, flavour) if cfg.export_dir else None
    cache = _open_cache(cfg.cache) if cfg.cache else None  # a bad --cache too, before the data scan and --out
    reduce_range = cfg.reduce_range if cfg.reduce_range is not None else (
        exported.reduce_range if exported is not None else ExportConfig.model_fields["reduce_range"].default)
    flavour = with_weight_range(flavour, reduce_range)
    if flavour.name == "ort-cpu":
        say(f"int8 weights: {'7-bit (any x86 CPU runs the file alike)' if reduce_range else '8-bit (exact on VNNI x86 and ARM)'}"
            f"{', as the export' if cfg.reduce_range is None and exported is not None else ''}")
    folded = conv_bn_pairs(student)  # conv -> the BatchNorm folded into it
    keep = kept_layers(exported, student, folded, say) if exported is not None and not cfg.quantize_all else KeptFloat()
    run = TrainingRun.of_checkpoint(checkpoint, say)
    ecfg, fit = export_config(cfg, run, say, exported), count_fitter(cfg, exported, say)  # fit: --calib-count unset
    cfg = cfg.model_copy(update={"calib_count": ecfg.calib_count, "seed": ecfg.seed})  # as resolved (qad.json too)
    prov = provenance(checkpoint, student, run)
    # one scan of the data root: the hold-out and the cached teacher rows pick from the folder it kept
    data = load_export_data(ecfg, student.spec, list(prov.get("source_domains") or []), say, keep_folder=True,
                            spill_dir=out,  # images too many for RAM are memory-mapped from there
                            fit_count=fit)  # a small train split: room for the hold-out
    calib = data.calib_images
    assert calib is not None and data.calib_picks is not None  # check_data: int8 needs a data root
    if data.calib_picks.count != ecfg.calib_count:  # fitted to a small train split
        ecfg = ecfg.model_copy(update={"calib_count": data.calib_picks.count})
        cfg = cfg.model_copy(update={"calib_count": ecfg.calib_count})
    # the no-harm rule decides on images neither trained on (calibration) nor reported on (test)
    holdout = load_holdout_images(ecfg, student.spec, data, cfg.holdout_count, spill_dir=out, exported=cfg.export_dir)
    say(f"hold-out (decides which int8 ships): {len(holdout)} train-split images, none of them calibration images")
    make_out_dir(out)
    teacher_logits = None
    if cache is not None:
        teacher_logits, picked_domains = _cached_teacher_logits(cfg, cache, ecfg, data, student, say)
        if picked_domains != calib.domains.tolist():
            raise DistillError(f"{cfg.cache}: {len(teacher_logits)} cached rows do not line up with the "
                               f"{len(calib)} calibration images (an image failed to decode?); drop {option('cache')} to "
                               "distill from the fp32 student only")
    data = data.without_folder()  # the index grows with the data set: not held through training

    with tempfile.TemporaryDirectory(prefix=".qad-", dir=out) as work:
        fp32_path = Path(work) / "model.fp32.onnx"
        export_onnx(student, fp32_path, opset=max(cfg.opset, 17), exporter="torchscript")
        fp32 = ort_session(fp32_path)  # one session per file, for all three image sets
        refs = _References(predict_onnx(fp32, calib), predict_onnx(fp32, data.eval_images), predict_onnx(fp32, holdout))
        if exported is not None:
            ptq_path, ptq_origin = exported.path, exported.origin
        else:
            ptq_path, ptq_origin = plain_ptq(fp32_path, Path(work), calib, flavour), PLAIN_PTQ
        ptq, ptq_scored = _disagreement(ptq_path, refs, data, holdout)
        say(f"PTQ ({flavour.name}; {ptq_origin}): disagreement with fp32 (pts) calibration {_fmt(ptq.calibration)}; "
            f"test {_fmt(ptq.test)}; hold-out {_fmt(ptq.holdout)}")

        model, losses, moved = train_qad(cfg, student, flavour, calib, teacher_logits, device, say, keep)
        dst = export_qdq(model.cpu(), out / int8_file(flavour.name), student.spec.input_size, flavour, cfg.opset)
        fq_logits = predict_torch(model, calib)
        # the trained model's own number, so the log ends on the end state: an epoch line counts flips over the epoch,
        # while the weights still moved, and can be far from what the written file does (the calibration images)
        say(f"QAD: after training, fake-quant top-1 disagreement with fp32 "
            f"{100 * float((fq_logits.argmax(1) != refs.calibration.argmax(1)).mean()):.2f} pts")
        onnx_logits = predict_onnx(dst, calib)
        agreement = parity(fq_logits, onnx_logits)
        result, qad_scored = _disagreement(dst, refs, data, holdout)
        pairs = holdout_pairs(ptq_scored.holdout_flips, qad_scored.holdout_flips)
        ship, reason = no_harm(ptq, result, len(holdout), pairs)
        shipped_ptq = out / ptq_file(flavour.name)
        if ship == "ptq":  # the file the rule picked, beside the QAD one
            shutil.copyfile(ptq_path, shipped_ptq)
        else:
            shipped_ptq.unlink(missing_ok=True)  # a previous run's into this folder
    say(f"QAD ({flavour.name}): disagreement with fp32 (pts) calibration {_fmt(result.calibration)}; "
        f"test {_fmt(result.test)}; hold-out {_fmt(result.holdout)}")
    say(f"int8 file: {ship.upper()}'s ({shipped_ptq.name if ship == 'ptq' else dst.name}; no-harm rule: {reason}); "
        "whether int8 ships is the export's recommendation")
    rows = qdq_report(dst)
    # the layers left in float on purpose: float weights in QAD's file, as many as were kept (else none are excused)
    floats = [r["node"] for r in rows if len(r["inputs"]) > 1 and not r["inputs"][1]["dequantized"]]
    excused = floats if len(floats) == len(keep.layers) else []
    problems = tensorrt_qdq_problems(dst, excused) if flavour.name == "tensorrt" else []
    qdq_check = {"compute_nodes": len(rows), "int8_weight_nodes": sum(
        1 for r in rows if len(r["inputs"]) > 1 and r["inputs"][1].get("zero_point_dtype") == "int8"),
        "float_weight_nodes": floats, "tensorrt_problems": problems[:20]}
    if flavour.name == "ort-cpu":  # layers x86 CPUs without VNNI compute otherwise (quantize.saturation_risk)
        qdq_check["x86_without_vnni_at_risk"] = len(saturation_risk(dst))
    tuned = tuned_student(model.cpu(), student, folded)
    origin = shipped_provenance(prov)  # as distill export's files: no path of this machine
    # the tuned checkpoint, a folder users ship, names no path of this machine either: its run by name (and relative
    # to it), the checkpoint it was tuned from as the ONNX files name it, relative to that run, and by its sha256
    tuned.spec.provenance = checkpoint_provenance(tuned.spec.provenance, prov, out / EXPORT_CHECKPOINT)
    ckpt = save_student(tuned, out / EXPORT_CHECKPOINT, extra_provenance={"qad": {
        "from": origin.get("checkpoint"), "from_sha256": prov.get("checkpoint_sha256"), "flavour": flavour.name,
        "epochs": cfg.epochs}})
    _stamp_int8(dst, student, origin, flavour, {"qad": True, "library": LIBRARY}, "QAD")
    if ship == "ptq" and not cfg.export_dir:  # a copy of an export's file keeps the export's own stamp
        _stamp_int8(shipped_ptq, student, origin, flavour, {"qad": False, "calibration": "minmax"}, "PTQ")
    engine = engine_script(out, flavour.name, shipped_ptq.name if ship == "ptq" else dst.name,
                           student.spec.input_size, calib, ecfg.trt_batches, ecfg.trt_workspace_mib, say)
    record = QADRecord(
        checkpoint=str(checkpoint.resolve()), checkpoint_sha256=prov.get("checkpoint_sha256"),
        student=student.spec.arch, flavour=flavour.name, library=LIBRARY,
        teacher="fp32+cache" if teacher_logits is not None else "fp32", config=cfg.model_dump(mode="json") | (
            {"export_dir": os.path.abspath(cfg.export_dir)} if cfg.export_dir else {}) | {  # as laid out, absolute
            # and relative to the qad folder (a moved tree still joins), in config: an older distill reads it (M3)
            "relative": relative_paths(out, checkpoint=checkpoint, export_dir=cfg.export_dir)} | (
            {"tensorrt": engine.model_dump(mode="json")} if engine else {}),  # build_engine.sh's engine, in config too
        calibration_images=len(calib), test_images=len(data.eval_images), ptq=ptq, qad=result,
        qad_file=dst.name, tuned_checkpoint=ckpt.name, qdq_check=qdq_check, torch_vs_onnx=agreement,
        losses=losses, weights_changed_pct=round(moved, 4), elapsed_s=round(time.time() - t0, 1),
        within_target=result.worst_calibration <= 1.0,
        accuracy=_accuracy(data, refs.test, ptq_scored.test, qad_scored.test), holdout_images=len(holdout),
        ship=ship, ship_reason=reason, holdout_pairs=pairs, ptq_file=shipped_ptq.name if ship == "ptq" else None,
        ptq_origin=ptq_origin, kept_float=keep.layers, float_outputs=keep.float_outputs)
    say(f"wrote {record.write(out)}")
    return record


def _stamp_int8(path: Path, student: Student, origin: dict, flavour: Int8Flavour, quantization: dict,
                how: str) -> None:
    """The ``distill.*`` metadata of ``distill export``'s int8 files, ``quantization`` added to the flavour's."""
    stamp(path, build_metadata(student.spec, "int8", origin, ["logits"],
                               {"int8_flavour": flavour.name, "target_runtime": flavour.target_runtime,
                                "quantization": {**flavour.describe(), **quantization}}),
          doc=f"distill student {student.spec.arch} (int8, {flavour.name} flavour, {how})")


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{d} {v:.2f}" for d, v in values.items())


def plain_ptq(fp32_path: Path, work: Path, calib: ImageSet, flavour: Int8Flavour) -> Path:
    """``distill export``'s int8 path without the fallback: MinMax ranges, quantize_static for ``flavour``."""
    prepared = prepare(fp32_path, work / "prepared.onnx")
    ranges = calibrate(prepared, ImageCalibrationReader(calib, INPUT_NAME), "minmax", work / "calibration.json")
    return quantize(prepared, work / f"ptq-{flavour.name}.onnx", flavour, ranges, "minmax")


@dataclass(frozen=True)
class _References:
    """The fp32 ONNX's logits [N, C] on each image set."""

    calibration: np.ndarray
    test: np.ndarray
    holdout: np.ndarray


@dataclass(frozen=True)
class _Scored:
    """What one int8 file's figures are made of, kept for the rule and the accuracies."""

    test: np.ndarray           # logits [N, C] on the test images
    holdout_flips: np.ndarray  # [N] bool: top-1 differs from fp32 on each hold-out image


def _disagreement(path: Path, refs: _References, data: ExportData,
                  holdout: ImageSet) -> tuple[Disagreement, _Scored]:
    """``path``'s disagreement with the fp32 logits, and its test logits and hold-out flips (scored once, reused)."""
    assert data.calib_images is not None
    session = ort_session(path)  # one session for all three image sets
    test, held = predict_onnx(session, data.eval_images), predict_onnx(session, holdout)
    return Disagreement(
        calibration=disagreement_by_domain(refs.calibration, predict_onnx(session, data.calib_images),
                                           data.calib_images),
        test=disagreement_by_domain(refs.test, test, data.eval_images),
        holdout=disagreement_by_domain(refs.holdout, held, holdout)), _Scored(
            test, refs.holdout.argmax(1) != held.argmax(1))


def _accuracy(data: ExportData, fp32: np.ndarray, ptq: np.ndarray, qad: np.ndarray) -> QADAccuracy | None:
    """Test accuracy per domain of fp32, PTQ and QAD from logits already computed (None: unlabeled images)."""
    if not data.labeled:
        return None
    images = data.eval_images
    return QADAccuracy(fp32=accuracy_by_domain(fp32, images), ptq=accuracy_by_domain(ptq, images),
                       qad=accuracy_by_domain(qad, images),
                       count={d: int((images.domains == d).sum()) for d in images.domain_names})


def _open_cache(path: str) -> TeacherCache:
    """The teacher cache ``--cache`` names (DistillError: not a complete cache)."""
    from distill.teacher.cache import TeacherCache  # lazy: only with --cache

    return TeacherCache.open(path)


def _cached_teacher_logits(cfg: QADConfig, cache: TeacherCache, ecfg: ExportConfig, data: ExportData,
                           student: Student, say: ExportLog) -> tuple[torch.Tensor, list[str]]:
    """[N, C] the cache's view-0 (clean) teacher logits of the calibration images, in the student's class
    order, and the domain of each row.

    Row i is the sample of calibration image i: ``data``'s calibration picks, in the order
    :func:`load_export_data` loaded them (the caller checks the domains line up, in case one failed to decode).
    """
    folder, picks = data.folder, data.calib_picks
    assert folder is not None and picks is not None, "cached teacher rows need load_export_data(keep_folder=True)"
    domains = cache.manifest.dataset.domains
    # a cache of every domain has the fingerprint load_export_data already took (a pass over every file: minutes
    # at 10^7 images); a cache of some domains is fingerprinted over those
    whole = data.info.get("fingerprint") if set(domains) == set(folder.domains) else None
    if cache.manifest.dataset.fingerprint != (whole or folder.fingerprint(domains)):
        raise DistillError(f"{cfg.cache}: the cache was built from other data or another split than "
                           f"{ecfg.data_root}; pass the run's cache, or drop {option('cache')} (self-distillation)")
    order = {c: i for i, c in enumerate(cache.manifest.classes)}
    missing = [c for c in student.spec.class_names if c not in order]
    if missing:
        raise DistillError(f"{cfg.cache}: class(es) {missing[:5]} of the student are not in the cache's classes")
    samples = picks.samples()
    index = torch.tensor([s.index for s in samples], dtype=torch.long)
    logits = cache.lookup(index, torch.zeros_like(index))["logits"].float()
    say(f"QAD teacher: fp32 student and the cache {cfg.cache} (weight {cfg.cache_weight})")
    return logits[:, [order[c] for c in student.spec.class_names]], [s.domain for s in samples]
