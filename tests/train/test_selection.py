"""Model selection reads the source domains' validation split, never test: a run whose test-best epoch
differs from its val-best epoch keeps the val-best one, and metrics.csv reports both (as fractions)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from distill.config import load_train_config
from distill.evaluate import DomainEvaluator
from distill.records import RunSummary
from distill.train import train
from tests.shapes import make_shapes_root


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_shapes_root(tmp_path_factory.mktemp("sel"), ["red", "green", "blue"], per_class=8)


def test_best_checkpoint_is_chosen_on_source_validation_not_test(root, tmp_path, monkeypatch):
    # scripted accuracies (fractions) per epoch: test is best at epoch 1, validation at epoch 2
    script = {"test": [0.9, 0.1, 0.5], "val": [0.1, 0.9, 0.5]}
    seen = {"test": 0, "val": 0}

    def scripted(self, predict, device="cpu"):
        k = self.split
        value = script[k][seen[k]]
        seen[k] += 1
        return {d: value for d in self.present}

    monkeypatch.setattr(DomainEvaluator, "accuracy", scripted)  # the trainer reads top-1 and top-5 in one pass
    cfg = {"data": {"root": str(root), "source": ["red", "green"], "test_fraction": 0.3, "val_fraction": 0.2},
           "student": {"arch": "test_resnet", "input_size": 16}, "strategy": {"name": "erm"},
           "optim": {"epochs": 3, "batch_size": 8}, "run": {"out": str(tmp_path / "run"), "workers": 0,
                                                             "progress": False}}
    summary = train(load_train_config(None, base=cfg))
    assert seen == {"test": 3, "val": 3}
    assert summary.best_epoch == 2 and summary.selected_on == "source_val" and summary.selected_value == 0.9
    assert summary.source_val_acc == 0.9 and summary.val_acc == {"red": 0.9, "green": 0.9}
    assert summary.source_acc == 0.1, "test accuracy is reported for the selected epoch, not maximised"
    assert RunSummary.read(tmp_path / "run") == summary
    prov = json.loads((tmp_path / "run" / "checkpoints" / "best" / "student.json").read_text())["provenance"]
    assert prov["epoch"] == 2
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [float(r["source_val_acc"]) for r in rows] == [0.1, 0.9, 0.5]
    assert [float(r["source_acc"]) for r in rows] == [0.9, 0.1, 0.5]
    assert {"val/red", "val/green"} <= set(rows[0]) and "val/blue" not in rows[0], "only source domains validate"


def test_eval_every_tests_periodically_at_the_end_and_on_every_new_best(root, tmp_path, monkeypatch):
    """run.eval_every 3 over 7 epochs: test runs at epochs 3 and 6 (periodic), 7 (last) and wherever
    validation improves (epochs 1 and 4 here), so the selected epoch always has its test numbers."""
    val = [0.2, 0.1, 0.1, 0.6, 0.5, 0.5, 0.4]  # new best at epochs 1 and 4 (1-based)
    calls = {"test": [], "val": []}

    def scripted(self, predict, device="cpu"):
        calls[self.split].append(len(calls["val"]))  # for test: the number of epochs validated so far
        value = val[len(calls["val"]) - 1] if self.split == "val" else 0.5
        return {d: value for d in self.present}

    monkeypatch.setattr(DomainEvaluator, "accuracy", scripted)  # the trainer reads top-1 and top-5 in one pass
    cfg = {"data": {"root": str(root), "source": ["red", "green"], "test_fraction": 0.3, "val_fraction": 0.2},
           "student": {"arch": "test_resnet", "input_size": 16}, "strategy": {"name": "erm"},
           "optim": {"epochs": 7, "batch_size": 8},
           "run": {"out": str(tmp_path / "run"), "workers": 0, "progress": False, "eval_every": 3}}
    summary = train(load_train_config(None, base=cfg))
    assert len(calls["val"]) == 7
    assert calls["test"] == [1, 3, 4, 6, 7]  # epochs whose test split was evaluated
    assert summary.best_epoch == 4 and summary.target_acc == pytest.approx(0.5)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [r["epoch"] for r in rows if r.get("acc/blue")] == ["1", "3", "4", "6", "7"]
