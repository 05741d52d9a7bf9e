"""Export students to ONNX (fp32 / fp16 / int8 QDQ) and TensorRT, with parity and accuracy checks.

>>> from distill.export import ExportConfig, export_checkpoint
>>> report = export_checkpoint("runs/kd/checkpoints/best", "exports/kd",
...                            ExportConfig(precisions=("fp32", "fp16", "int8"), data_root="data/digits"))

Modules: :mod:`~distill.export.onnx` (torch -> ONNX, metadata), :mod:`~distill.export.fp16`,
:mod:`~distill.export.quantize` (int8 flavours), :mod:`~distill.export.fallback` (layers kept in
float), :mod:`~distill.export.tensorrt`, :mod:`~distill.export.pipeline` (all of it + export.json).
"""
from __future__ import annotations

from distill.export.onnx import export_onnx, read_metadata
from distill.export.pipeline import PRECISIONS, ExportConfig, export_checkpoint

__all__ = ["ExportConfig", "PRECISIONS", "export_checkpoint", "export_onnx", "read_metadata"]
