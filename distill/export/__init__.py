"""Export students to ONNX (fp32 / fp16 / int8 QDQ) and TensorRT, with parity and accuracy checks.

>>> from distill.export import ExportConfig, export_checkpoint
>>> report = export_checkpoint("runs/kd/checkpoints/best", "exports/kd",
...                            ExportConfig(precisions=("fp32", "fp16", "int8"), data_root="data/digits"))
>>> [m.file for m in report.models]

Modules: :mod:`~distill.export.config` (what to export), :mod:`~distill.export.training_run`
(the run's defaults and provenance), :mod:`~distill.export.data` and
:mod:`~distill.export.images` (eval and calibration images), :mod:`~distill.export.onnx`
(torch -> ONNX, metadata), :mod:`~distill.export.timm_format` (timm's own checkpoint layout),
:mod:`~distill.export.fp16`, :mod:`~distill.export.quantize` (int8 flavours),
:mod:`~distill.export.int8_step` and :mod:`~distill.export.fallback` (one flavour, layers kept in float),
:mod:`~distill.export.tensorrt` (engines, TensorRT 10 or 11), :mod:`~distill.export.tensorrt_script`
(build_engine.sh) and :mod:`~distill.export.engine_check` (engine vs ONNX Runtime, standalone),
:mod:`~distill.export.pipeline` (the steps in order, export.json as :class:`distill.records.ExportReport`).
"""
from __future__ import annotations

from distill.export.config import PRECISIONS, ExportConfig
from distill.export.onnx import export_onnx, read_metadata
from distill.export.pipeline import export_checkpoint
from distill.export.timm_format import export_timm

__all__ = ["ExportConfig", "PRECISIONS", "export_checkpoint", "export_onnx", "export_timm", "read_metadata"]
