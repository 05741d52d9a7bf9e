"""distill.api.train and adapt leave the process as found (README "Python API"): torch's deterministic-algorithms
flags, cuDNN's flags and the global RNGs a run reseeds every step are put back, after a run and after an error."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from distill import api
from distill.config import TrainConfig, load_train_config
from distill.student.model import Student, default_spec, save_student
from tests.shapes import CLASSES


def _kd(root, cache, out) -> TrainConfig:
    return load_train_config(None, base={
        "data": {"root": str(root), "source": ["red", "green"], "target": ["blue"], "test_fraction": 0.3},
        "cache": str(cache), "student": {"arch": "test_resnet", "input_size": 16}, "strategy": {"name": "kd"},
        "optim": {"epochs": 1, "batch_size": 8, "lr": 0.01, "warmup_epochs": 0.5},
        "run": {"out": str(out), "workers": 0, "seed": 1, "device": "cpu", "progress": False}})


def _flags() -> tuple:
    return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)


def _seed() -> None:
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(4).tolist()


@pytest.fixture
def caller_state():
    """A caller's own flags (strict determinism, as train leaves it warn_only), put back after the test."""
    saved = _flags()
    torch.use_deterministic_algorithms(True, warn_only=False)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
    yield _flags()
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


def test_train_and_adapt_leave_flags_and_random_draws_as_a_caller_had_them(tiny_root, tiny_cache, tmp_path,
                                                                           caller_state):
    _seed()
    expected = _draws()  # a caller who did not train
    _seed()
    summary = api.train(_kd(tiny_root, tiny_cache, tmp_path / "kd"))
    assert summary is not None and _flags() == caller_state and _draws() == expected

    torch.manual_seed(0)
    ckpt = save_student(Student(default_spec("test_resnet", CLASSES, 16)), tmp_path / "src" / "best",
                        extra_provenance={"source_domains": ["red", "green"]})
    _seed()
    api.adapt(ckpt, "blue", tiny_root, cache=tiny_cache, strategy="teacher_pl", out=tmp_path / "pl",
              overrides={"optim.epochs": 1, "optim.batch_size": 4, "run.workers": 0, "run.device": "cpu", "run.progress": False})
    assert _flags() == caller_state and _draws() == expected


def test_train_puts_them_back_after_an_error_too(tiny_root, tiny_cache, tmp_path, caller_state, monkeypatch):
    from distill.train import Trainer

    def crash(self):
        torch.rand(3)  # past build(): determinism on, the RNGs seeded
        raise RuntimeError("crashed")

    monkeypatch.setattr(Trainer, "fit", crash)
    _seed()
    expected = _draws()
    _seed()
    with pytest.raises(RuntimeError, match="crashed"):
        api.train(_kd(tiny_root, tiny_cache, tmp_path / "kd"))
    assert _flags() == caller_state and _draws() == expected

