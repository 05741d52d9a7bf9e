"""distill.utils.schedule: one warmup + cosine for the trainer (timm's, bit for bit) and the bootstrap."""
from __future__ import annotations

import math

import pytest
import torch
from timm.scheduler import CosineLRScheduler

from distill.utils.schedule import warmup_cosine_lr


def _bootstrap_before(step: int, total: int, base: float, warmup_fraction: float = 0.1) -> float:
    """The bootstrap's own schedule before it moved here (distill/teacher/demo.py ``_lr_at``)."""
    warm = max(1, int(warmup_fraction * total))
    if step < warm:
        return base * (step + 1) / warm
    return base * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


@pytest.mark.parametrize("total", [1, 7, 60, 600])
def test_equals_the_bootstraps_former_schedule_bit_for_bit(total):
    warm = max(1, int(0.1 * total))
    for step in range(total):
        got = warmup_cosine_lr(step, base_lr=2e-3, warmup_steps=warm, decay_steps=max(1, total - warm))
        assert got == _bootstrap_before(step, total, 2e-3), step


@pytest.mark.parametrize("warmup,total,min_lr", [(0, 50, 0.0), (10, 50, 1e-5), (3, 20, 1e-6)])
def test_equals_timms_cosine_with_warmup_prefix_bit_for_bit(warmup, total, min_lr):
    lr = 0.05
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = CosineLRScheduler(opt, t_initial=total, lr_min=min_lr, warmup_t=warmup, warmup_lr_init=lr * 0.01,
                              warmup_prefix=True, t_in_epochs=False)
    for step in range(total + warmup + 5):  # past the end: the floor
        sched.step_update(num_updates=step)
        want = opt.param_groups[0]["lr"]
        got = warmup_cosine_lr(step, base_lr=lr, warmup_steps=warmup, decay_steps=total, min_lr=min_lr,
                               warmup_start_lr=lr * 0.01)
        assert got == want, step


def test_shape_warms_up_peaks_and_decays_to_the_floor():
    lrs = [warmup_cosine_lr(s, base_lr=1.0, warmup_steps=4, decay_steps=10, min_lr=0.1) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0] and lrs[4] == 1.0
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:])) and lrs[14:] == [0.1] * 6
