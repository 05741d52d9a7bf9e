"""Learned activation ranges (LSQ) for QAD: gradients reach the scales, and the file holds the learned scales."""
from __future__ import annotations

import onnx
import pytest
import torch
from onnx import numpy_helper
from test_qad import _calibrated, _images, _ort

from distill.cli import main
from distill.export.fakequant import export_qdq
from distill.export.fq_state import fake_quants
from distill.export.learned_ranges import LearnedScaleFakeQuantize, freeze_scales, learn_scales
from distill.export.qad_config import QADConfig, QADRecord
from distill.export.quantize import FLAVOURS
from distill.student.model import load_student


def _activation_scales(path) -> list[float]:
    proto = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    return sorted(float(inits[n.input[1]]) for n in proto.graph.node
                  if n.op_type == "QuantizeLinear" and inits[n.input[1]].size == 1)


@pytest.mark.parametrize("flavour", ["ort-cpu", "tensorrt"])
def test_learned_scales_train_and_export_as_the_files_scales(run_ckpt, tiny_root, tmp_path, flavour):
    student = load_student(run_ckpt)
    x = torch.from_numpy(_images(tiny_root, student.spec))
    model = _calibrated(student, flavour, x.numpy())
    with torch.no_grad():
        before = model(x)
    scales = learn_scales(model)
    activations = [fq for fq in fake_quants(model) if isinstance(fq, LearnedScaleFakeQuantize)]
    assert len(scales) == len(activations) > 0 and all(fq.scale is p for fq, p in zip(activations, scales))
    zero_points = [fq.zero_point.clone() for fq in activations]
    out = model(x)
    assert torch.allclose(out, before, atol=1e-5)  # the same fake-quant as before, now differentiable in the scale
    out.logsumexp(1).mean().backward()
    grads = [p.grad for p in scales]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(float(g.abs()) > 0 for g in grads)
    with torch.no_grad():
        for p in scales:
            p.mul_(1.37)  # "learned": values calibration would not give, so only the trained ones can match
    learned = sorted(float(p.detach()) for p in scales)
    assert freeze_scales(model) == len(scales)
    assert not [fq for fq in fake_quants(model) if isinstance(fq, LearnedScaleFakeQuantize)]
    assert all("scale" in fq._buffers and "scale" not in fq._parameters for fq in fake_quants(model))
    assert all(torch.equal(fq.zero_point, z) for fq, z in zip(activations, zero_points))  # zero points untouched
    path = export_qdq(model, tmp_path / "q.onnx", student.spec.input_size, FLAVOURS[flavour])
    in_file = _activation_scales(path)
    assert in_file and all(min(abs(s - t) for t in learned) <= 1e-6 * max(1.0, s) for s in in_file)
    with torch.no_grad():
        torch_top1 = model(x).argmax(1)
    assert float((torch.from_numpy(_ort(path, x.numpy())).argmax(1) == torch_top1).float().mean()) >= 0.9


def test_learned_ranges_are_the_default_and_turn_the_observers_off():
    cfg = QADConfig(checkpoint="ck", out_dir="out", epochs=3)
    assert cfg.ranges == "learned" and cfg.range_epochs == 0
    assert QADConfig(checkpoint="ck", out_dir="out", epochs=3, ranges="observed").range_epochs == 2


def test_qad_with_learned_ranges_ships_the_learned_scales(run_ckpt, tmp_path, capsys):
    """The same QAD (one epoch: observed ranges are the calibrated ones throughout) with observed and learned
    ranges: only the learned run's file has activation scales calibration did not set."""
    files = {}
    for name, extra in (("observed", ["--ranges", "observed"]), ("learned", ["--range-lr", "0.5"])):
        out = tmp_path / name
        assert main(["qad", str(run_ckpt), "--out", str(out), "--epochs", "1", "--calib-count", "32",
                     "--eval-count", "8", "--quiet", *extra]) == 0
        record = QADRecord.read(out)
        assert record.torch_vs_onnx["top1_agreement"] >= 0.9
        files[name] = _activation_scales(out / record.qad_file)
    assert QADRecord.read(tmp_path / "learned").config["ranges"] == "learned"
    assert QADRecord.read(tmp_path / "learned").config["range_lr"] == 0.5
    assert len(files["observed"]) == len(files["learned"])
    moved = [abs(a - b) / a for a, b in zip(files["observed"], files["learned"])]
    assert max(moved) > 1e-6, moved  # unmoved: exactly 0
