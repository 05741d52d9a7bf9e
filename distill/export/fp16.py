"""fp32 ONNX -> fp16 weights and compute, fp32 input and output (``keep_io_types``).

Uses onnxruntime's maintained converter (``onnxruntime.transformers.float16``, the same code
as onnxconverter-common's), then a topological sort: the converter appends the boundary Casts
at the end of the node list, which ``onnx.checker`` rejects.
"""
from __future__ import annotations

from pathlib import Path

import onnx
from onnxruntime.transformers.float16 import convert_float_to_float16
from onnxruntime.transformers.onnx_model import OnnxModel


def convert_fp16(src: str | Path, dst: str | Path) -> Path:
    """Write the fp16 version of ``src`` to ``dst``; inputs/outputs stay float32."""
    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    om = OnnxModel(model)
    om.topological_sort()
    onnx.save(om.model, str(dst))
    return Path(dst)
