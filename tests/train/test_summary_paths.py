"""A real run, started from a relative run.out, interrupted after epoch 2 of 3, then resumed (QA G F2 and F5):
while unfinished, its checkpoint is named as the best so far with the resume command; finished, its summary.json
names its checkpoint absolute, which works from any working folder (the README's ``export(summary.checkpoint, ...)``
after a ``chdir``)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import distill.train.trainer as trainer_module
from distill.api import train
from distill.config import load_train_config
from distill.records import RunSummary
from distill.run_progress import unfinished_warning
from tests.shapes import make_shapes_root


def test_an_interrupted_then_resumed_run_names_its_checkpoint_from_anywhere(tmp_path, monkeypatch):
    root = make_shapes_root(tmp_path / "data", ["red", "green"], per_class=4)
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    cfg = load_train_config(None, base={
        "data": {"root": str(root), "source": ["red"], "test_fraction": 0.3, "val_fraction": 0.2},
        "student": {"arch": "test_resnet", "input_size": 16}, "strategy": {"name": "erm"},
        "optim": {"epochs": 3, "batch_size": 4}, "run": {"out": "runs/kd", "workers": 0, "progress": False}})
    line = trainer_module.epoch_line

    def stop_after_epoch_2(row, *args, **kwargs):
        if row["epoch"] == 2:
            raise KeyboardInterrupt  # as a Ctrl-C after epoch 2's evaluation
        return line(row, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "epoch_line", stop_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    assert unfinished_warning("runs/kd/checkpoints/best") == (
        "runs/kd is unfinished (epoch 2 of 3, no summary.json): this is its best checkpoint so far; resume with "
        "distill train --resume runs/kd")

    monkeypatch.setattr(trainer_module, "epoch_line", line)
    summary = train(resume="runs/kd")
    best = project / "runs" / "kd" / "checkpoints" / "best"
    assert summary is not None and summary.checkpoint == str(best)
    assert json.loads((best.parent.parent / "summary.json").read_text())["checkpoint"] == str(best)
    assert unfinished_warning("runs/kd/checkpoints/best") is None
    monkeypatch.chdir(tmp_path)  # another working folder
    assert Path(RunSummary.read(best.parent.parent).checkpoint).is_dir()
