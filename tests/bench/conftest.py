"""Session fixtures: a small ONNX model and a small student checkpoint to time."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distill.export.onnx import build_metadata, export_onnx, stamp
from distill.student.model import Student, default_spec, save_student


@pytest.fixture(scope="session")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An fp32 test_resnet (random weights, 32 px) with distill metadata."""
    spec = default_spec("test_resnet", ["a", "b", "c"], input_size=32)
    path = tmp_path_factory.mktemp("onnx") / "small.fp32.onnx"
    info = export_onnx(Student(spec).eval(), path, exporter="torchscript")
    stamp(path, build_metadata(spec, "fp32", {"strategy": "test"}, info["outputs"]))
    return path


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test_resnet student checkpoint folder (random weights, 32 px), as `distill train` saves one."""
    torch.manual_seed(0)
    return save_student(Student(default_spec("test_resnet", ["a", "b", "c"], input_size=32)),
                        tmp_path_factory.mktemp("ckpt") / "best")
