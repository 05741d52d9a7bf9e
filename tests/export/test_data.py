"""distill.export.data: which images parity, accuracy and calibration run on."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distill.data.folder import DomainFolder
from distill.errors import DistillError
from distill.export import ExportConfig
from distill.export.data import load_export_data, relabel
from distill.export.images import load_images
from distill.export.log import ExportLog
from distill.student.model import default_spec


def _spec(classes: list[str]):
    spec = default_spec("test_resnet", classes, input_size=32)
    spec.interpolation = "bilinear"
    return spec


def test_without_data_parity_runs_on_noise_and_says_so() -> None:
    lines: list[str] = []
    data = load_export_data(ExportConfig(), _spec(["a", "b"]), [], ExportLog(lines.append))
    assert len(data.eval_images) == 32 and data.calib_images is None and not data.labeled
    assert lines == ["warning: no --data: fp32/fp16 parity is checked on 32 random-noise images and no accuracy "
                     "is measured"]


def test_calibration_is_spread_over_source_and_target_domains(tiny_root: Path) -> None:
    folder = DomainFolder(tiny_root)
    cfg = ExportConfig(precisions=("int8",), data_root=str(tiny_root), test_fraction=0.3, split_seed=0,
                       val_fraction=0.1, calib_count=7, eval_count=3, target_domains=("noisy", "clean"))
    data = load_export_data(cfg, _spec(folder.classes), ["clean", "dark", "elsewhere"], ExportLog(lambda s: None))
    info = data.info
    assert info["calib_domains"] == ["clean", "dark"]  # the run's sources that exist here
    assert info["target_domains"] == ["noisy"]  # a target already calibrated on is not added twice
    assert info["calib_per_domain"] == {"clean": 3, "dark": 2, "noisy": 2} and len(data.calib_images) == 7
    assert info["eval_count"] == {"clean": 3, "dark": 3, "noisy": 3} and data.labeled


def test_labels_follow_the_student_class_order(tiny_root: Path) -> None:
    folder = DomainFolder(tiny_root)
    images = load_images(folder, folder.select(["clean"], "test")[:8], _spec(folder.classes))
    before = images.labels.copy()
    reverse = folder.classes[::-1]
    relabel(images, folder.classes, reverse, str(tiny_root))
    assert np.array_equal(images.labels, len(reverse) - 1 - before)
    with pytest.raises(DistillError, match="not among the student's"):
        relabel(images, folder.classes, reverse[:-1], str(tiny_root))
