"""``distill qad`` without calibration images says so in its own terms (review 2, L1).

Before: ``error: precisions=int8 needs calibration images ...``: the Python spelling of an option (``precisions``)
that qad does not have and the user never typed.
"""
from __future__ import annotations

import pytest

from distill import api
from distill.cli import main
from distill.errors import DistillError
from distill.student.model import Student, default_spec, save_student


@pytest.fixture
def loose_checkpoint(tmp_path):
    """A checkpoint outside any training run: no config.yaml names its data."""
    return save_student(Student(default_spec("test_resnet", ["a", "b"], 16)).eval(), tmp_path / "ckpt")


def test_the_command_names_its_data_flag(loose_checkpoint, tmp_path, capsys):
    assert main(["qad", str(loose_checkpoint), "--out", str(tmp_path / "q")]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert lines == ["error: QAD needs calibration images: pass --data ROOT (or use a checkpoint inside its "
                     "training run, whose config.yaml names the data)"]
    assert not (tmp_path / "q").exists()


def test_python_names_its_keyword(loose_checkpoint, tmp_path):
    with pytest.raises(DistillError, match=r"^QAD needs calibration images: pass data_root=ROOT \(or use"):
        api.qad(checkpoint=loose_checkpoint, out_dir=tmp_path / "q")
