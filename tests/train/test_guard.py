"""The non-finite gradient guard (distill/train/guard.py), tested by injecting NaN gradients on any CPU."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from distill.config import OptimConfig
from distill.errors import DistillError
from distill.train.guard import GradGuard


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def _backward(net: nn.Module, poison: bool) -> dict[str, torch.Tensor]:
    net.zero_grad(set_to_none=True)
    loss = net(torch.ones(2, 3)).sum()
    loss.backward()
    if poison:
        net[2].weight.grad[0, 0] = float("nan")
    return {"loss": loss.detach()}


def test_a_nan_gradient_is_skipped_counted_and_named(capsys):
    net = _net()
    guard = GradGuard(net, torch.device("cpu"), OptimConfig(epochs=2, max_skipped_steps=0.1), steps_per_epoch=10)
    out, take = guard.after_backward(0, 3, lambda p: pytest.fail("fp32 runs are not retried"), _backward(net, True))
    assert take is False and guard.counts() == {"skipped_steps": 1, "fp32_retried_steps": 0}
    err = capsys.readouterr().err
    assert "'2.weight' at epoch 1 step 3" in err and "fp32 on cpu" in err
    _, take = guard.after_backward(0, 4, lambda p: None, _backward(net, False))
    assert take is True and guard.skipped == 1


def test_too_many_skips_stop_with_precision_device_step_and_parameter():
    net = _net()
    guard = GradGuard(net, torch.device("cpu"), OptimConfig(epochs=1, max_skipped_steps=0.1), steps_per_epoch=20)
    guard.after_backward(0, 0, lambda p: None, _backward(net, True))
    guard.after_backward(0, 1, lambda p: None, _backward(net, True))  # budget: 2 of 20 steps
    with pytest.raises(DistillError, match=r"3 of the run's 20 steps.*'2.weight' at epoch 1 step 0 under fp32 on cpu"):
        guard.after_backward(0, 2, lambda p: None, _backward(net, True))


def test_cpu_bf16_retries_the_step_in_fp32():
    net = _net()
    guard = GradGuard(net, torch.device("cpu"), OptimConfig(precision="bf16"), steps_per_epoch=10)
    asked = []
    out, take = guard.after_backward(0, 0, lambda p: asked.append(p) or _backward(net, False), _backward(net, True))
    assert take is True and asked == ["fp32"] and guard.counts() == {"skipped_steps": 0, "fp32_retried_steps": 1}
    # still non-finite in fp32: skipped
    _, take = guard.after_backward(0, 1, lambda p: _backward(net, True), _backward(net, True))
    assert take is False and guard.counts() == {"skipped_steps": 1, "fp32_retried_steps": 2}


def test_fp16_is_left_to_its_grad_scaler():
    net = _net()
    guard = GradGuard(net, torch.device("cpu"), OptimConfig(precision="fp16"), steps_per_epoch=10)
    assert guard.after_backward(0, 0, lambda p: None, _backward(net, True))[1] is True


def test_a_run_skips_an_injected_nan_step_and_reports_it(tmp_path, tiny_root, tiny_cache, monkeypatch, capsys):
    """A NaN gradient injected into one step of a real run: no update is made from it, the run finishes,
    summary.json counts it; injected into every step, the run stops with the guard's message."""
    from distill.records import RunSummary
    from distill.train import train
    from distill.train.trainer import Trainer
    from tests.train.test_trainer import _config

    real = Trainer._backward
    poisoned: set[int] = {1}

    def backward(self, batch, precision):
        out = real(self, batch, precision)
        if self.global_step in poisoned or -1 in poisoned:
            next(p for p in self.strategy.parameters() if p.grad is not None).grad.view(-1)[0] = float("nan")
        return out

    monkeypatch.setattr(Trainer, "_backward", backward)
    cfg = _config(tiny_root, tiny_cache, tmp_path / "run", optim__epochs=1)
    summary = train(load(tmp_path, cfg))
    assert summary.nonfinite_steps == {"skipped_steps": 1, "fp32_retried_steps": 0}
    assert RunSummary.read(tmp_path / "run").nonfinite_steps["skipped_steps"] == 1
    assert "step skipped" in capsys.readouterr().err
    poisoned.add(-1)
    cfg = _config(tiny_root, tiny_cache, tmp_path / "run2", optim__epochs=1)
    with pytest.raises(DistillError, match="non-finite gradients.*under fp32 on cpu"):
        train(load(tmp_path, cfg))


def load(tmp_path, cfg):
    from distill.config import load_train_config
    from tests.train.test_trainer import _write
    return load_train_config(_write(tmp_path, cfg))


def test_the_guard_is_off_on_cuda_and_adds_no_host_sync_there():
    """On CUDA the per-step check would stall the GPU: the guard is off (the log-point loss check remains)."""
    guard = GradGuard(_net(), torch.device("cuda"), OptimConfig(precision="bf16"), steps_per_epoch=10)
    assert guard.enabled is False and guard.retry_fp32 is False
