"""Attacks in pixel space: PGD, its default step, and the teacher's differentiable logits.

Everything here works on **pixels** ``[B, 3, H, W]`` in [0, 1]; a model is always reached
through its own normalization (:class:`distill.student.transforms.Normalizer` with the
student's mean/std, or the teacher's preprocessing), so an ``epsilon`` is a budget in image
space — the same number whatever the network's input statistics are (an attack on normalized
tensors would silently scale the budget by 1/std per channel).

:func:`pgd` (Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial
Attacks") is used by the adversarial strategies, the adversarial cache views and the robust
evaluation. Epsilons written as ``2/255`` are parsed by :func:`distill.config.parse_eps`.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.utils.runtime import full_precision


# ---------------------------------------------------------------------------- PGD
def pgd(pixels: Tensor, loss_fn: Callable[[Tensor], Tensor], epsilon: float, step_size: float, steps: int,
        random_start: bool = True, generator: torch.Generator | None = None, init: Tensor | None = None) -> Tensor:
    """Projected gradient ascent on ``loss_fn`` inside the L∞ ball of radius ``epsilon``.

    Each step moves by ``step_size · sign(∇)`` and projects back onto
    ``[pixels − ε, pixels + ε] ∩ [0, 1]``, so the result is always a valid image within ε of
    the input. Gradients are taken w.r.t. the input only (``torch.autograd.grad``): no
    gradient accumulates in any model parameter.

    Args:
        pixels: clean images [B, 3, H, W] in [0, 1].
        loss_fn: adversarial pixels [B, 3, H, W] -> per-sample loss [B] (or a scalar) to maximise;
            it must normalize the pixels itself (see module docstring).
        epsilon: L∞ radius in pixel units (8/255 ≈ 0.031).
        step_size: per-step move in pixel units.
        steps: number of ascent steps (0 returns the random start, or the input).
        random_start: start from a uniform point of the ball (Madry et al.) instead of the input.
        generator: CPU generator for the random start (default: the global RNG).
        init: explicit starting point [B, 3, H, W] (projected onto the ball; overrides ``random_start``).

    Returns:
        Adversarial pixels [B, 3, H, W], detached.
    """
    x0 = pixels.detach()
    if epsilon <= 0:
        return x0.clone()
    lo, hi = (x0 - epsilon).clamp(min=0), (x0 + epsilon).clamp(max=1)
    if init is not None:
        x = torch.max(torch.min(init.detach().to(x0), hi), lo)
    elif random_start:
        # drawn on the host (the CPU generator's stream), pinned on CUDA so that the copy waits for nothing
        noise = torch.rand(x0.shape, generator=generator, dtype=torch.float32, pin_memory=x0.device.type == "cuda")
        x = (x0 + (noise.to(x0.device, x0.dtype, non_blocking=True) * 2 - 1) * epsilon).clamp(0, 1)
    else:
        x = x0.clone()
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(x)
            (grad,) = torch.autograd.grad(loss.sum(), x)
        x = torch.max(torch.min(x.detach() + step_size * grad.sign(), hi), lo)
    return x.detach()


def default_step_size(epsilon: float, steps: int) -> float:
    """Madry et al.'s rule of thumb: 2.5 · ε / steps (lets PGD reach the boundary and move along it)."""
    return 2.5 * epsilon / max(steps, 1)


def teacher_logits_with_grad(teacher: Any, teacher_input: Callable[[Tensor], Tensor], pixels: Tensor) -> Tensor:
    """The teacher's zero-shot logits [B, C] on pixels [B, 3, H, W], differentiable w.r.t. the pixels.

    ``Teacher.forward`` runs under ``no_grad``; an attack through the teacher needs the input
    gradient, so this calls the (frozen) image tower directly and applies the same rule:
    ``logit_scale · normalize(encode_image(x)) · Tᵀ``.
    """
    with getattr(teacher, "autocast", nullcontext)():  # the teacher's own inference precision
        feats = teacher.model.encode_image(teacher_input(pixels))
    with full_precision(feats):
        emb = F.normalize(feats.float(), dim=-1)
        return teacher.logit_scale * emb @ teacher.text_embeddings.float().T


__all__ = ["default_step_size", "pgd", "teacher_logits_with_grad"]
