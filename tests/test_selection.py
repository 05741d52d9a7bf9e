"""Model selection reads the source domains' validation split, never test: a run whose test-best epoch
differs from its val-best epoch keeps the val-best one, and metrics.csv reports both."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from distill.config import load_train_config
from tests.shapes import make_shapes_root


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_shapes_root(tmp_path_factory.mktemp("sel"), ["red", "green", "blue"], per_class=8)


def test_best_checkpoint_is_chosen_on_source_validation_not_test(root, tmp_path, monkeypatch):
    from distill.evaluate import DomainEvaluator
    from distill.train import run_training

    # scripted accuracies per epoch: test is best at epoch 1, validation at epoch 2
    script = {"test": [90.0, 10.0, 50.0], "val": [10.0, 90.0, 50.0]}
    seen = {"test": 0, "val": 0}

    def scripted(self, predict, device="cpu"):
        k = self.split
        value = script[k][seen[k]]
        seen[k] += 1
        return {d: value for d in self._data}

    monkeypatch.setattr(DomainEvaluator, "__call__", scripted)
    cfg = {"data": {"root": str(root), "source": ["red", "green"], "test_fraction": 0.3, "val_fraction": 0.2},
           "student": {"arch": "test_resnet", "input_size": 16}, "strategy": {"name": "erm"},
           "optim": {"epochs": 3, "batch_size": 8}, "run": {"out": str(tmp_path / "run"), "workers": 0,
                                                             "progress": False}}
    summary = run_training(load_train_config(None, base=cfg))
    assert seen == {"test": 3, "val": 3}
    assert summary["best_epoch"] == 2 and summary["selected_on"] == "source validation accuracy"
    assert summary["source_val_acc"] == 90.0 and summary["val_acc"] == {"red": 90.0, "green": 90.0}
    assert summary["source_acc"] == 10.0, "test accuracy is reported for the selected epoch, not maximised"
    prov = json.loads((tmp_path / "run" / "checkpoints" / "best" / "student.json").read_text())["provenance"]
    assert prov["epoch"] == 2
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [float(r["source_val_acc"]) for r in rows] == [10.0, 90.0, 50.0]
    assert [float(r["source_acc"]) for r in rows] == [90.0, 10.0, 50.0]
    assert {"val/red", "val/green"} <= set(rows[0]) and "val/blue" not in rows[0], "only source domains validate"
