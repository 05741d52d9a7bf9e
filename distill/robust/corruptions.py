"""Common corruptions of RGB pixel batches at five severities.

Hendrycks & Dietterich 2019, "Benchmarking Neural Network Robustness to Common Corruptions
and Perturbations"; CIFAR-10-C parameters, which suit small images. The MNIST-C functions of
:mod:`distill.data.builtin` are not reused: they take one 32x32 grayscale array each and
hard-code that size, while evaluation must handle any RGB input size in batches.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.errors import DistillError


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (device-independent noise)."""
    return torch.Generator().manual_seed(int(seed))


def _gaussian_noise(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    sigma = (0.04, 0.06, 0.08, 0.09, 0.10)[severity - 1]
    return x + sigma * torch.randn(x.shape, generator=g).to(x)


def _shot_noise(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    lam = (500.0, 250.0, 100.0, 75.0, 50.0)[severity - 1]
    return torch.poisson((x * lam).cpu().float(), generator=g).to(x) / lam


def _gaussian_blur(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    from kornia.filters import gaussian_blur2d  # lazy: kornia (~1 s) loads only when this corruption runs

    sigma = (0.4, 0.6, 0.7, 0.8, 1.0)[severity - 1]
    k = 2 * math.ceil(3 * sigma) + 1
    return gaussian_blur2d(x, (k, k), (sigma, sigma), border_type="reflect")


def _contrast(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    c = (0.75, 0.5, 0.4, 0.3, 0.15)[severity - 1]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * c + mean


def _jpeg(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    from kornia.enhance import jpeg_codec_differentiable  # lazy: kornia (~1 s) loads only when this corruption runs

    quality = (80.0, 65.0, 58.0, 50.0, 40.0)[severity - 1]
    h, w = x.shape[-2:]
    ph, pw = (-h) % 16, (-w) % 16  # the codec works on whole 16x16 macroblocks
    xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
    out = jpeg_codec_differentiable(xp.clamp(0, 1), torch.tensor([quality], device=x.device, dtype=x.dtype))
    return out[..., :h, :w]


#: name -> fn(pixels [B, 3, H, W] in [0, 1], severity 1..5, generator) -> corrupted pixels (clamped by the caller)
CORRUPTIONS: dict[str, Callable[[Tensor, int, torch.Generator], Tensor]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "gaussian_blur": _gaussian_blur,
    "contrast": _contrast,
    "jpeg": _jpeg,
}


def corrupt(pixels: Tensor, name: str, severity: int = 3, seed: int = 0) -> Tensor:
    """Apply corruption ``name`` at ``severity`` (1..5) to pixels [B, 3, H, W]; deterministic given ``seed``."""
    if name not in CORRUPTIONS:
        raise DistillError(f"unknown corruption '{name}' (known: {', '.join(CORRUPTIONS)})")
    if not 1 <= severity <= 5:
        raise DistillError(f"corruption severity must be 1..5, got {severity}")
    with torch.no_grad():
        return CORRUPTIONS[name](pixels, severity, seeded_generator(seed)).clamp(0, 1)


def check_corruptions(names: Sequence[str]) -> list[str]:
    """Validate corruption names (``all`` expands to every one)."""
    names = list(names)
    if names == ["all"]:
        return list(CORRUPTIONS)
    for n in names:
        if n not in CORRUPTIONS:
            raise DistillError(f"unknown corruption '{n}' (known: {', '.join(CORRUPTIONS)}, or 'all')")
    return names


__all__ = ["CORRUPTIONS", "check_corruptions", "corrupt", "seeded_generator"]
