"""distill qad on a small data set (QA session 26, F4): the default calibration count (256) must leave the no-harm
rule's hold-out some train images, and when nothing is left the error gives the real numbers and a count that works."""
from __future__ import annotations

from pathlib import Path

import pytest

from distill.data.folder import DomainFolder
from distill.errors import DistillError
from distill.export.config import ExportConfig
from distill.export.qad import qad
from distill.export.qad_config import QADConfig


def test_the_default_calibration_count_leaves_the_holdout_some_of_a_small_train_split(run_ckpt: Path,
                                                                                      tmp_path: Path) -> None:
    """The tiny tree has ~67 train images per calibration domain (clean, dark), fewer than 128 + 128: calibration and
    hold-out share them (half each) instead of QAD stopping with 'no train-split image is left for the hold-out'."""
    lines: list[str] = []
    record = qad(QADConfig(checkpoint=str(run_ckpt), out_dir=str(tmp_path / "q"), epochs=1, eval_count=4),
                 log=lines.append)
    said = [line for line in lines if "not 256" in line]
    assert len(said) == 1 and "(calib_count sets it)" in said[0], lines  # QADConfig's key: a Python call
    count = record.config["calib_count"]
    assert count < 256 and record.calibration_images == count, (count, record.calibration_images)
    assert record.holdout_images >= count - 2  # the rest of each domain's train images (about as many)


def test_fitted_count_changes_nothing_where_the_images_are_there() -> None:
    from distill.export.data import fitted_count

    assert fitted_count(256, 256, {"clean": 10_000, "dark": 256}) == 256  # 128 + 128 fit each
    assert fitted_count(256, 256, {"clean": 84}) == 42  # QA's data set: half each
    assert fitted_count(256, 64, {"clean": 84}) == 67  # 256 : 64 of 84
    # review 4 M2: one small domain beside large ones shrank every domain's share (to 84, 11, 63): the large ones
    # leave the hold-out images, so the count stays (the small domain gives all its images to calibration)
    assert fitted_count(256, 256, {"clean": 84, "noisy": 10_000}) == 256
    assert fitted_count(256, 256, {"a": 1000, "b": 10}) == 256
    assert fitted_count(256, 256, {"a": 5000, "b": 5000, "c": 5000, "d": 30}) == 256
    assert fitted_count(256, 256, {"a": 40, "b": 44}) == 40  # every image taken at 256: half of the smaller each


@pytest.mark.parametrize("exported", [None, "export/kd"])
def test_no_holdout_left_names_the_real_numbers_and_a_count_that_works(run_ckpt: Path, tiny_root: Path,
                                                                       exported: str | None) -> None:
    """--calib-count 256 (given, or an export's) takes every train image of the tiny tree: the line must say how many
    there were and taken (not 'the 256 calibration images'), and the count to use instead."""
    from distill.export.data import load_export_data, load_holdout_images
    from distill.export.log import ExportLog
    from distill.student.model import load_student

    spec = load_student(run_ckpt).spec
    cfg = ExportConfig(precisions=("fp32", "int8"), data_root=str(tiny_root), calib_domains=("clean",),
                       calib_count=256, eval_count=2, test_fraction=0.3)
    data = load_export_data(cfg, spec, [], ExportLog(lambda s: None), keep_folder=True)
    train = len(DomainFolder(tiny_root, cfg.split_rule()).select(["clean"], "train"))
    with pytest.raises(DistillError) as e:
        load_holdout_images(cfg, spec, data, 256, exported=exported)
    message = str(e.value)
    assert "\n" not in message and f"clean {train} of {train}" in message, message
    assert f"calib_count={train // 2}" in message or f"to {train // 2}" in message, message
    if exported:
        assert "re-export export/kd" in message and "drop export_dir" in message, message
