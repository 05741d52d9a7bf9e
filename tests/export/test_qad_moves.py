"""What QAD moved: the share of int8 weight values that changed, counted on the fake-quant grid."""
from __future__ import annotations

import torch
from test_qad import _calibrated, _images

from distill.cli import main
from distill.export.qad_config import QADRecord
from distill.export.qad_moves import changed_share, int8_weights
from distill.student.model import load_student


def test_a_weight_counts_as_changed_only_when_its_int8_value_does(run_ckpt, tiny_root):
    student = load_student(run_ckpt)
    model = _calibrated(student, "ort-cpu", _images(tiny_root, student.spec))
    before = int8_weights(model)
    total = sum(v.numel() for v in before.values())
    assert before and total > 0 and changed_share(before, int8_weights(model)) == 0.0  # reading moves nothing
    name = next(iter(before))
    module = model.get_submodule(name)
    fq = module.weight_fake_quant
    step = float(fq.scale.flatten()[0])
    with torch.no_grad():
        w = module.weight.view(module.weight.shape[0], -1)
        w[0, 0] = before[name].view(w.shape)[0, 0] * step  # exactly on its grid value: +0.3 step cannot round away
        w[0, 0] += 0.3 * step
        assert changed_share(before, int8_weights(model)) == 0.0
        w[0, 1] = (before[name].view(w.shape)[0, 1] - 2) * step  # two steps down: a new int8 value
    assert changed_share(before, int8_weights(model)) == 100.0 / total


def test_qad_records_how_many_int8_weights_it_changed(run_ckpt, tmp_path, capsys):
    out = tmp_path / "qad"
    assert main(["qad", str(run_ckpt), "--out", str(out), "--epochs", "1", "--calib-count", "32", "--eval-count", "8",
                 "--lr", "0.5"]) == 0
    moved = QADRecord.read(out).weights_changed_pct
    # a huge step moves many values (the default moved 0.01-0.14 % on the edge students)
    assert moved is not None and moved > 1.0
    assert f"QAD changed {moved:.2f} % of the int8 weight values" in capsys.readouterr().err

