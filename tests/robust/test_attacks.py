"""distill.robust.attacks: PGD stays in the ε-ball and raises the loss; its start and default step."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distill.robust.attacks import default_step_size, pgd
from distill.student.transforms import Normalizer


def test_pgd_stays_in_the_ball_and_raises_the_loss():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    norm = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    x = torch.rand(16, 3, 8, 8)
    y = torch.randint(0, 4, (16,))

    def loss(px):
        return F.cross_entropy(model(norm(px)), y, reduction="none")

    eps = 4 / 255
    for random_start in (True, False):
        xa = pgd(x, loss, eps, eps / 4, 10, random_start=random_start)
        assert (xa - x).abs().max() <= eps + 1e-6, "left the L-inf ball"
        assert xa.min() >= 0 and xa.max() <= 1, "left the image range"
        assert loss(xa).mean() > loss(x).mean() + 1e-3, "PGD did not raise the loss"
        assert not any(p.grad is not None for p in model.parameters()), "the attack leaked gradients into the model"
    # untouched at eps 0; clamped at the image range (a white image cannot get whiter)
    assert torch.equal(pgd(x, loss, 0.0, 0.01, 5), x)
    white = torch.ones(2, 3, 8, 8)
    assert pgd(white, lambda px: F.cross_entropy(model(norm(px)), y[:2], reduction="none"), eps, eps, 3).max() <= 1


def test_pgd_from_init_is_projected_and_default_step_is_madrys_rule():
    x = torch.full((1, 3, 4, 4), 0.5)
    far = torch.ones_like(x)  # 0.5 outside the ball: projected back to x + eps
    eps = 8 / 255
    out = pgd(x, lambda px: px.sum(), eps, 0.0, 0, init=far)
    assert torch.allclose(out, x + eps)
    assert default_step_size(8 / 255, 10) == pytest.approx(2.5 * 8 / 255 / 10)
    assert default_step_size(0.1, 0) == pytest.approx(0.25), "0 steps must not divide by zero"
