"""The student's input pipeline, in one place: eval transform (PIL side) and mean/std normalization (tensor side).

Every consumer — per-domain evaluation, the robustness evaluation, the adversarial
strategies, the trainer — builds its preprocessing from a :class:`~distill.student.model.StudentSpec`
through these functions, so a change to the pipeline (interpolation, crop rule) has one home.

The PIL part is layered: :func:`crop_transform` (resize shorter side, center crop) ⊂
:func:`pixel_transform` (+ ``ToTensor``: pixels in [0, 1]) ⊂ :func:`eval_transform`
(+ ``Normalize``). Attacks and corruptions work on the pixels and reach the model through
:class:`Normalizer`, so an epsilon is a budget in image space.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
from torch import Tensor, nn
from torchvision import transforms as T

if TYPE_CHECKING:  # typing only: model.py imports this module
    from distill.student.model import StudentSpec


def crop_transform(spec: StudentSpec) -> T.Compose:
    """PIL -> PIL: resize the shorter side to ``min(spec.input_size)``, then center crop to ``input_size``."""
    mode = T.InterpolationMode(spec.interpolation)
    return T.Compose([T.Resize(min(spec.input_size), interpolation=mode), T.CenterCrop(spec.input_size)])


def pixel_transform(spec: StudentSpec) -> T.Compose:
    """The student's eval preprocessing without the normalization: PIL -> pixels [3, H, W] in [0, 1]."""
    return T.Compose([*crop_transform(spec).transforms, T.ToTensor()])


def eval_transform(spec: StudentSpec) -> T.Compose:
    """The student's eval preprocessing: PIL -> normalized input [3, H, W] (resize, center crop, normalize)."""
    return T.Compose([*pixel_transform(spec).transforms, T.Normalize(spec.mean, spec.std)])


def normalize(pixels: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``(pixels - mean) / std``, differentiable: pixels [B, 3, H, W], mean/std broadcastable ([1, 3, 1, 1])."""
    return (pixels - mean) / std


class Normalizer(nn.Module):
    """pixels [B, 3, H, W] in [0, 1] -> ``(pixels - mean) / std`` (differentiable; any device and dtype).

    The constants are non-persistent buffers: they follow ``.to(device)`` of the owner without
    entering its ``state_dict`` (checkpoints stay what they were), and are cast to the input's
    device and dtype when they differ (a no-op on the training path).
    """

    mean: Tensor  # [1, C, 1, 1] buffers (register_buffer leaves them typed Tensor | Module)
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, pixels: Tensor) -> Tensor:
        dev, dtype = pixels.device, pixels.dtype
        return normalize(pixels, self.mean.to(dev, dtype, non_blocking=True), self.std.to(dev, dtype, non_blocking=True))


__all__ = ["Normalizer", "crop_transform", "eval_transform", "normalize", "pixel_transform"]
