"""A strategy built or fed outside distill.train (the API: create_strategy, a hand-made Batch) that lacks what its
needs ask for is one line naming it, not a TypeError from deep in a loss (found by mypy on distill/strategies)."""
from __future__ import annotations

import pytest
import torch

from distill.errors import DistillError
from distill.strategies import Batch, StrategyContext, create_strategy
from distill.student.model import Student, default_spec

CLASSES = ["a", "b"]


def _student() -> Student:
    return Student(default_spec("test_resnet", CLASSES, 16))


def _batch(**fields: torch.Tensor) -> Batch:
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(2, 3, 16, 16, generator=g)
    return Batch(pixels=pixels, images=pixels, **fields)


def test_kd_online_without_a_teacher_is_one_line():
    with pytest.raises(DistillError, match=r"strategy 'kd_online' runs the teacher on every batch: set the 'teacher'"):
        create_strategy("kd_online", _student(), None, StrategyContext(2, CLASSES))


@pytest.mark.parametrize(("name", "fields", "missing"), [
    ("kd", {"teacher_logits": torch.zeros(2, 2)}, "labels"),
    ("erm", {}, "labels"),
    ("teacher_pl", {}, "teacher_logits"),
])
def test_a_batch_without_a_needed_field_is_one_line(name, fields, missing):
    strategy = create_strategy(name, _student(), None, StrategyContext(2, CLASSES))
    with pytest.raises(DistillError, match=rf"strategy '{name}' reads batch\.{missing}, but the batch has none") as e:
        strategy(_batch(**fields))
    assert "\n" not in str(e.value)
