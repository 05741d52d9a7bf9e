"""Calibration methods really differ, and int8 flavours are what their runtimes want."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnxruntime.quantization import load_tensors_data

from distill.export import quantize as q
from distill.export.images import ImageCalibrationReader, load_images, pick_per_domain
from distill.student.model import load_student


@pytest.fixture(scope="module")
def prepared(export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return q.prepare(export_dir / "model.fp32.onnx", tmp_path_factory.mktemp("q") / "prepared.onnx")


def test_entropy_and_percentile_are_not_minmax(prepared: Path, run_ckpt: Path, tiny_root: Path, tmp_path: Path) -> None:
    from distill.data.folder import DomainFolder

    folder = DomainFolder(tiny_root)
    imgs = load_images(folder, pick_per_domain(folder, ["clean", "dark"], "train", 8), load_student(run_ckpt).spec)
    ranges = {}
    for method in q.CALIBRATION_METHODS:
        cache = q.calibrate(prepared, ImageCalibrationReader(imgs, "input", 8), method, tmp_path / f"{method}.json")
        data = load_tensors_data(cache)
        ranges[method] = {k: (float(np.min(td.range_value[0])), float(np.max(td.range_value[1])))
                          for k, td in data.items()}
        out = q.quantize(prepared, tmp_path / f"{method}.onnx", q.FLAVOURS["ort-cpu"], cache, method)
        assert out.is_file()
    mm = ranges["minmax"]
    for method in ("entropy", "percentile"):
        r = ranges[method]
        assert set(r) == set(mm)
        # never wider than the data, and narrower somewhere (onnxruntime's defaults made entropy == minmax)
        assert all(mm[k][0] - 1e-6 <= r[k][0] and r[k][1] <= mm[k][1] + 1e-6 for k in r)
        assert any(r[k][1] < mm[k][1] - 1e-6 for k in r), method


def test_flavour_recipes() -> None:
    cpu, trt = q.FLAVOURS["ort-cpu"], q.FLAVOURS["tensorrt"]
    assert (cpu.activation_type, cpu.weight_type, cpu.activation_symmetric) == ("QUInt8", "QInt8", False)
    assert (trt.activation_type, trt.weight_type, trt.activation_symmetric) == ("QInt8", "QInt8", True)
    assert trt.extra_options["WeightSymmetric"] and trt.extra_options["QuantizeBias"] is False
    assert [f.name for f in q.flavours_for("both")] == ["ort-cpu", "tensorrt"]
