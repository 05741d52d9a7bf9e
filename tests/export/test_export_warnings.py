"""The warnings an export shows: torch's expected notices while distill runs its exporters and fx quantization are
filtered by category, message and module (distill/export/onnx.py TORCH_NOTICES); any other warning of those calls
gets through (a blanket `simplefilter("ignore")` hid them all, the student's own included)."""
from __future__ import annotations

import warnings

import pytest
import torch

from distill.export.fakequant import export_qdq, fake_quant_model
from distill.export.fq_state import set_observers
from distill.export.onnx import export_onnx
from distill.export.quantize import FLAVOURS
from distill.student.model import Student, default_spec


class StudentWarns(UserWarning):
    pass


def _warning_student() -> Student:
    torch.manual_seed(0)
    student = Student(default_spec("test_resnet", ["a", "b", "c"], input_size=32)).eval()
    features = student.features

    def features_that_warn(x):
        warnings.warn("the student's own warning", StudentWarns)
        return features(x)
    student.features = features_that_warn  # type: ignore[method-assign]
    return student


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_export_shows_other_warnings_and_not_torchs_expected_notices(exporter, tmp_path):
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        export_onnx(_warning_student(), tmp_path / "m.onnx", exporter=exporter)
    assert {type(w.message) for w in shown} == {StudentWarns}, [f"{w.category.__name__}: {w.message}" for w in shown]


def test_qdq_export_shows_no_torch_notice(tmp_path):
    """fx quantization and the QDQ export: the deprecation notices and fake-quant's tracer notes stay quiet."""
    torch.manual_seed(0)
    student = Student(default_spec("test_resnet", ["a", "b", "c"], input_size=32)).eval()
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        model = fake_quant_model(student, FLAVOURS["ort-cpu"])
        with torch.no_grad():
            model(torch.randn(4, 3, 32, 32))
        set_observers(model, False)
        export_qdq(model, tmp_path / "q.onnx", (32, 32), FLAVOURS["ort-cpu"])
    assert shown == [], [f"{w.category.__name__}: {w.message}" for w in shown]
