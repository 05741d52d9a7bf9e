"""``distill export``: checkpoint -> ONNX fp32/fp16/int8 (+ TensorRT) with checks, and export.json.

Every file written is checked before it is listed:

- fp32: ORT vs PyTorch logits on real test images; max |Δlogit| over ``fp32_rtol`` x
  max(1, max |logit|) raises :class:`DistillError` (export.json is still written, with the
  failure, so it can be inspected).
- fp16 and int8: top-1 agreement with PyTorch, max |Δlogit|, per-domain accuracy and the drop
  vs the fp32 ONNX in points.
- int8: label-free fallback of sensitive layers and an export-time latency check
  (:mod:`distill.export.int8_step`).

:class:`Exporter` carries the state of one export (the context every step reads, the report
being built); :func:`export_checkpoint` prepares it and runs the steps in order.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from distill.bench.edge_runner import library_versions
from distill.errors import DistillError
from distill.export.config import ExportConfig
from distill.export.context import ExportContext, Fp32Reference, mean_accuracy
from distill.export.data import load_export_data
from distill.export.evaluate import drop_p_values, drops_in_points, fp32_tolerance, parity, predict_onnx, predict_torch
from distill.export.fp16 import convert_fp16
from distill.export.images import ImageCalibrationReader
from distill.export.int8_step import Calibration, Int8Step, int8_file
from distill.export.log import ExportLog
from distill.export.onnx import INPUT_NAME, export_onnx, preprocess_metadata
from distill.export.out_dir import OutputFolder
from distill.export.quantize import Int8Flavour, calibrate, flavours_for, prepare, with_weight_range
from distill.export.recommend import recommend_for
from distill.export.retarget import retarget_to_classes_in
from distill.export.tensorrt import (
    TIMING_CACHE,
    build_engine,
    engine_source,
    tensorrt_available,
    tensorrt_major,
    tensorrt_version,
)
from distill.export.tensorrt_script import check_image_count, write_build_script, write_check_files
from distill.export.training_run import (
    TrainingRun,
    checkpoint_provenance,
    provenance,
    shipped_provenance,
    with_run_defaults,
)
from distill.records import EXPORT_CHECKPOINT, EXPORT_REPORT, STUDENT_SPEC, STUDENT_WEIGHTS, ExportedModel, ExportReport
from distill.records.base import relative_paths
from distill.student.model import load_student, save_student
from distill.utils.io import sha256_file

EXPORT_FORMAT = "distill.export/1"
FP32_FILE = "model.fp32.onnx"
FP16_FILE = "model.fp16.onnx"
FP16_NOTE = ("evaluated with onnxruntime CPU, which inserts fp32 casts around ops lacking fp16 kernels; "
             "GPU/TensorRT fp16 numbers can differ slightly")


class Exporter:
    """One export: the shared context, the report being built, and the steps that fill it.

    :meth:`fp32` must run first (it writes the parent file every other precision is compared
    with); :meth:`run` calls the steps in order.
    """

    def __init__(self, ctx: ExportContext, header: dict[str, Any]):
        self.ctx, self.log = ctx, ctx.log
        self.header = header  # format .. versions: known before any file is written
        self.models: list[ExportedModel] = []
        self.exporter_info: dict[str, Any] | None = None
        self.reference_info: dict[str, Any] | None = None
        self.tensorrt_info: dict[str, Any] | None = None

    def run(self) -> None:
        cfg = self.ctx.cfg
        reference = self.fp32()
        if "fp16" in cfg.precisions:
            self.fp16(reference)
        if "int8" in cfg.precisions:
            calibration = self.calibrate_int8(reference)
            for flavour in flavours_for(cfg.int8_flavour):
                self.int8(reference, flavour, calibration)
        self.tensorrt()

    # ------------------------------------------------------------------ steps
    def fp32(self) -> Fp32Reference:
        """Export to ONNX, stamp it, and check it against PyTorch (a mismatch raises, after writing the report)."""
        ctx, cfg, spec = self.ctx, self.ctx.cfg, self.ctx.spec
        self.log(f"exporting {spec.arch} to ONNX (opset {cfg.opset}, {cfg.exporter} exporter)")
        path = ctx.out_dir / FP32_FILE
        info = export_onnx(ctx.student, path, opset=cfg.opset, with_embedding=cfg.with_embedding, exporter=cfg.exporter)
        if info["fallback_reason"]:
            self.log.warn(f"dynamo exporter failed ({info['fallback_reason']}); used the torchscript exporter")
        self.exporter_info = info
        outputs = info["outputs"]
        ctx.stamp(path, "fp32", outputs)
        images = ctx.data.eval_images
        torch_logits = predict_torch(ctx.student, images)
        self.reference_info = {"runtime": f"torch {self.header['versions'].get('torch')} cpu fp32",
                               "accuracy": ctx.accuracy(torch_logits)}
        logits = predict_onnx(path, images)
        check = parity(torch_logits, logits)
        check["tolerance"] = fp32_tolerance(torch_logits, cfg.fp32_rtol)
        check["passed"] = check["max_abs_logit_diff"] <= check["tolerance"]
        accuracy = ctx.accuracy(logits)
        self.models.append(ExportedModel(**ctx.file_entry(path), precision="fp32", runtime="ort-cpu", parity=check,
                                         accuracy=accuracy, mean_accuracy=mean_accuracy(accuracy)))
        self.log(f"fp32: max |Δlogit| {check['max_abs_logit_diff']:.2e} (tolerance {check['tolerance']:.1e}), "
                 f"top-1 agreement {check['top1_agreement']:.4f} on {check['n']} images")
        if not check["passed"]:
            report = self.report("failed").write(ctx.out_dir)
            raise DistillError(f"{path}: fp32 ONNX differs from PyTorch by {check['max_abs_logit_diff']:.3g} "
                               f"(> {check['tolerance']:.1g}) in max |logit|; see {report}")
        return Fp32Reference(path, outputs, torch_logits, accuracy, logits)

    def fp16(self, reference: Fp32Reference) -> None:
        """fp16 weights and compute, fp32 I/O; agreement with PyTorch and drops vs fp32 are reported."""
        ctx = self.ctx
        path = convert_fp16(reference.path, ctx.out_dir / FP16_FILE)
        ctx.stamp(path, "fp16", reference.outputs)
        logits = predict_onnx(path, ctx.data.eval_images)
        accuracy = ctx.accuracy(logits)
        check = parity(reference.torch_logits, logits)
        # reference.accuracy is None exactly when accuracy is (the same eval images, labeled or not)
        drops = drops_in_points(reference.accuracy, accuracy) if accuracy and reference.accuracy is not None else None
        extra: dict[str, Any] = {"drops_pts": drops,
                                 "drops_p": self._drop_p(reference, logits) if accuracy else None, "note": FP16_NOTE}
        self.models.append(ExportedModel(**ctx.file_entry(path), precision="fp16", runtime="ort-cpu", parity=check,
                                         accuracy=accuracy, mean_accuracy=mean_accuracy(accuracy), **extra))
        self.log(f"fp16: top-1 agreement {check['top1_agreement']:.4f}, max |Δlogit| "
                 f"{check['max_abs_logit_diff']:.2e}")

    def _drop_p(self, reference: Fp32Reference, logits: np.ndarray) -> dict[str, float] | None:
        """McNemar's p per domain of the accuracy change vs the fp32 ONNX on the same test images."""
        return None if reference.logits is None else drop_p_values(reference.logits, logits, self.ctx.data.eval_images)

    def calibrate_int8(self, reference: Fp32Reference) -> Calibration:
        """Activation ranges on the calibration images, once for every int8 flavour and fallback variant."""
        ctx, method = self.ctx, self.ctx.cfg.calib_method
        calib_images = ctx.data.calib_images
        if calib_images is None:  # ExportConfig.check_data refuses int8 without data
            raise ValueError("int8 export without calibration images")
        prepared = prepare(reference.path, ctx.work_dir / "prepared.onnx")
        self.log(f"int8: calibrating on {len(calib_images)} images ({method})")
        ranges = calibrate(prepared, ImageCalibrationReader(calib_images, INPUT_NAME), method,
                           ctx.work_dir / f"calibration-{method}.json")
        return Calibration(prepared, ranges)

    def int8(self, reference: Fp32Reference, flavour: Int8Flavour, calibration: Calibration) -> None:
        """One int8 flavour, with the label-free fallback and the latency check (:class:`Int8Step`)."""
        flavour = with_weight_range(flavour, self.ctx.cfg.reduce_range)
        self.models.append(Int8Step(self.ctx, reference, flavour, calibration).run())

    def tensorrt(self) -> None:
        """build_engine.sh for the device (TensorRT 10 or 11, with its check against ONNX Runtime on the
        calibration images), and engines here if TensorRT is importable."""
        ctx, cfg = self.ctx, self.ctx.cfg
        chw = (3, *ctx.spec.input_size)
        has_trt_int8 = any(m.int8_flavour == "tensorrt" for m in self.models)
        engines = []  # onnx: TensorRT 10's source (precision flags); onnx_strongly_typed: 11's
        if "fp32" in cfg.precisions:
            engines.append({"onnx": FP32_FILE, "onnx_strongly_typed": FP32_FILE, "engine": "model.fp32.engine",
                            "precision": "fp32"})
        if "fp16" in cfg.precisions:
            engines.append({"onnx": FP32_FILE, "onnx_strongly_typed": FP16_FILE, "engine": "model.fp16.engine",
                            "precision": "fp16"})
        if has_trt_int8:
            engines.append({"onnx": int8_file("tensorrt"), "onnx_strongly_typed": int8_file("tensorrt"),
                            "engine": "model.int8.engine", "precision": "int8"})
        calib = ctx.data.calib_images
        check = write_check_files(ctx.out_dir, calib, INPUT_NAME, cfg.trt_batches) if calib is not None and engines else []
        script = write_build_script(ctx.out_dir, engines, INPUT_NAME, chw, cfg.trt_batches, cfg.trt_workspace_mib,
                                    reference=FP32_FILE if check else None,
                                    check_images=check_image_count(len(calib)) if check and calib is not None else None)
        info: dict[str, Any] = {"build_script": script.name, "engines": engines, "batches": list(cfg.trt_batches),
                                "built_here": False, "check_files": check}
        if "int8" in cfg.precisions and not has_trt_int8:
            info["note"] = "no TensorRT int8 engine: export with --int8-flavour tensorrt (or both) for one"
        major = self.tensorrt_here() if cfg.build_engines else None
        if major is not None:
            for e in engines:
                self.log(f"building TensorRT engine {e['engine']} ({e['precision']}, from {engine_source(e, major)})")
                build_engine(ctx.out_dir / engine_source(e, major), ctx.out_dir / e["engine"], e["precision"],
                             INPUT_NAME, chw, cfg.trt_batches, ctx.out_dir / TIMING_CACHE, cfg.trt_workspace_mib)
                e["sha256"] = sha256_file(ctx.out_dir / e["engine"])  # the report joins its bench records by it
            info.update({"built_here": True, "tensorrt_version": tensorrt_version(),
                         "note": "engines run only on this GPU model with this TensorRT version"})
        else:
            self.log(f"TensorRT not importable here: wrote {script} — run it on the target device")
        self.tensorrt_info = info

    def tensorrt_here(self) -> int | None:
        """The importable TensorRT's major version; None (with a warning when it is too old) when
        engines are not built here."""
        if not tensorrt_available():
            return None
        try:
            return tensorrt_major(tensorrt_version())
        except DistillError as e:  # the ONNX files and the script are still good: say so, build nothing here
            self.log.warn(f"not building engines here: {e}")
            return None

    # ------------------------------------------------------------------ the record
    def files(self) -> list[str]:
        """Every file the export wrote, in order (export.json last)."""
        trt = self.tensorrt_info
        assert trt is not None, "files() before tensorrt()"
        engines = [e["engine"] for e in trt["engines"]] + [TIMING_CACHE] if trt["built_here"] else []
        return [m.file for m in self.models] + [trt["build_script"], *trt["check_files"]] + engines + [EXPORT_REPORT]

    def report(self, status: Literal["running", "ok", "failed"], **end: Any) -> ExportReport:
        recommendation = recommend_for(self.models, self.ctx.cfg.max_drop, self.ctx.spec.arch) if status == "ok" else None
        return ExportReport(**self.header, status=status, models=self.models, warnings=self.log.warnings,
                            data=self.ctx.data.info, exporter=self.exporter_info, reference=self.reference_info,
                            tensorrt=self.tensorrt_info, recommendation=recommendation, **end)


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, config: ExportConfig | None = None,
                      log: Callable[[str], None] | None = None) -> ExportReport:
    """Export a student checkpoint folder to ``out_dir`` and write ``out_dir/export.json``.

    Args:
        checkpoint: ``RUN_DIR/checkpoints/best`` (``model.safetensors`` + ``student.json``).
        out_dir: output folder (created; an earlier export there is replaced: its export.json and the files
            it listed are set aside once the inputs are checked, deleted when this export finishes and put back
            if it fails, :mod:`distill.export.out_dir`).
        config: see :class:`ExportConfig`; the run's data settings fill what it leaves unset. With
            ``classes``, a text-head student is first re-targeted to that class file and saved as
            ``out_dir/checkpoint`` (:mod:`distill.export.retarget`); what ships is that student.
        log: progress sink (default: stderr).

    Returns:
        The export report (as written to export.json). What to ship is its ``recommendation``, which is not a
        progress line: ``distill export`` prints it, once, as the last line on stdout.

    Raises:
        DistillError: unreadable checkpoint, bad arguments, or fp32 parity failure.
    """
    out = OutputFolder(Path(out_dir))
    try:
        report = _export(Path(checkpoint), out, config, ExportLog(log))
    except BaseException:  # a failure or Ctrl-C: the earlier export comes back whole; no folder made is left
        if not out.done:  # once export.json is written this export is complete: kept
            out.restore()
            out.undo()
        raise
    return report


def _export(checkpoint: Path, out: OutputFolder, config: ExportConfig | None, say: ExportLog) -> ExportReport:
    out_dir = out.path
    out.check()
    if checkpoint.is_file():  # .../model.safetensors
        checkpoint = checkpoint.parent
    if not checkpoint.exists():
        raise DistillError(f"{checkpoint}: checkpoint not found (expected RUN_DIR/checkpoints/best with "
                           f"{STUDENT_WEIGHTS} and {STUDENT_SPEC})")
    student = load_student(checkpoint)
    spec = student.spec
    run = TrainingRun.of_checkpoint(checkpoint, say)
    cfg = with_run_defaults(config or ExportConfig(), run, say)
    cfg.check_data()
    weights = checkpoint / STUDENT_WEIGHTS
    out.source = {"checkpoint": str(checkpoint.resolve()),
                  "checkpoint_sha256": sha256_file(weights) if weights.is_file() else None}
    writes = [EXPORT_CHECKPOINT] if cfg.classes is not None else []
    out.check_writes(writes)  # a checkpoint/ of the user's where --classes writes its student: refused now
    out.make()
    if cfg.classes is not None:  # in memory: the data check below is against its classes
        retarget_to_classes_in(student, cfg.classes, say, cfg.teacher_arch, cfg.teacher_pretrained)
    prov = provenance(checkpoint, student, run)
    t_start = time.time()
    header = {
        "format": EXPORT_FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "checkpoint": str(checkpoint.resolve()), "student": spec.arch, "class_names": list(spec.class_names),
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, *spec.input_size], "dtype": "float32"},
        # the paths relative to the export folder (a moved tree still joins) inside provenance, an open dict: a file
        # an older distill reads (review 2, M3)
        "preprocess": preprocess_metadata(spec), "run_summary": run.summary,
        "provenance": {**prov, "relative": relative_paths(out_dir, checkpoint=checkpoint, run=run.folder)},
        "config": cfg.model_dump(mode="json"), "versions": library_versions(),
    }
    with tempfile.TemporaryDirectory(prefix=".work-", dir=out_dir, ignore_cleanup_errors=True) as work:  # NFS: .nfs* of a mapped spill file
        data = load_export_data(cfg, spec, list(prov.get("source_domains") or []), say, spill_dir=work)
        # the inputs are good: from here on this export replaces whatever export was there (its checkpoint/ too)
        out.clear_previous(say, replaces=writes)
        if cfg.classes is not None:  # in the scratch folder until the models are written: a killed export leaves none
            # no path of this machine in it (training_run.checkpoint_provenance), relative to where it is placed
            student.spec.provenance = checkpoint_provenance(student.spec.provenance, prov, out_dir / EXPORT_CHECKPOINT)
            save_student(student, Path(work) / EXPORT_CHECKPOINT)
        ctx = ExportContext(cfg, student, out_dir, Path(work), data, shipped_provenance(prov), say)
        exporter = Exporter(ctx, header)
        exporter.run()
        if cfg.classes is not None:  # marked as this export's: a kill before export.json is written is recoverable
            out.place(Path(work) / EXPORT_CHECKPOINT, EXPORT_CHECKPOINT)
    report = exporter.report("ok", files=exporter.files(), elapsed_s=round(time.time() - t_start, 1))
    path = out.finish(lambda: report.write(out_dir))  # complete from here: its markers go
    say(f"wrote {path}")  # the recommendation is a result, not progress: the caller prints it (the CLI on stdout)
    return report
