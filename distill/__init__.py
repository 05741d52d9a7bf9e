"""distill: turn open_clip vision-language teachers into small, fast timm students.

Stages (one subpackage each): ``data`` -> ``teacher`` (frozen open_clip + on-disk cache)
-> ``strategies`` + ``student`` (training) -> ``export`` (ONNX / TensorRT) -> ``bench``.
"""
from __future__ import annotations

__version__ = "0.1.0"
