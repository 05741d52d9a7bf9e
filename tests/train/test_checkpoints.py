"""Checkpoints: the pointer names the newest complete step folder; best is replaced whole; selection rules."""
from __future__ import annotations

import json
import math

import pytest
import torch

from distill.strategies import StrategyContext, create_strategy
from distill.student.model import Student, default_spec
from distill.train.checkpoints import Checkpoints, best_epoch, improves


@pytest.fixture
def strategy():
    torch.manual_seed(0)
    student = Student(default_spec("test_resnet", ["a", "b"], 16))
    return create_strategy("erm", student, {}, StrategyContext(2, ["a", "b"]))


def test_save_publishes_a_step_and_removes_the_previous_one(tmp_path, strategy):
    ckpts = Checkpoints(tmp_path)
    assert ckpts.last() is None
    first = ckpts.save(3, strategy, {"epoch": 0, "history": [{"epoch": 1, "x": 0.5}]})
    assert ckpts.last() == first and json.loads((tmp_path / "checkpoints" / "last.json").read_text())["step"] == 3
    second = ckpts.save(7, strategy, {"epoch": 1})
    assert ckpts.last() == second and not first.exists()
    state = Checkpoints.load(second)
    assert state["epoch"] == 1 and set(state["strategy"]) == set(strategy.state_dict())
    assert all(torch.equal(state["strategy"][k], v) for k, v in strategy.state_dict().items())


def test_a_pointer_to_an_incomplete_folder_is_no_checkpoint(tmp_path, strategy):
    ckpts = Checkpoints(tmp_path)
    path = ckpts.save(1, strategy, {})
    (path / "train_state.json").unlink()  # killed before the state's JSON (written last) landed
    assert ckpts.last() is None


def test_save_best_replaces_the_folder_and_records_provenance(tmp_path, strategy):
    ckpts = Checkpoints(tmp_path)
    ckpts.save_best(strategy, {"epoch": 1})
    (ckpts.best / "stale").write_text("x")
    ckpts.save_best(strategy, {"epoch": 2})
    assert not (ckpts.best / "stale").exists() and not (tmp_path / "checkpoints" / "best.tmp").exists()
    assert json.loads((ckpts.best / "student.json").read_text())["provenance"]["epoch"] == 2


def test_selection_first_best_validation_else_last_epoch():
    rows = [{"epoch": 1, "source_val_acc": 0.5}, {"epoch": 2, "source_val_acc": 0.9},
            {"epoch": 3, "source_val_acc": 0.9}]
    assert best_epoch(rows) == 2, "ties keep the first"
    nan = [{"epoch": e, "source_val_acc": math.nan} for e in (1, 2, 3)]
    assert best_epoch(nan) == 3
    assert improves(0.6, 0.5) and not improves(0.5, 0.5) and improves(math.nan, 0.9)
