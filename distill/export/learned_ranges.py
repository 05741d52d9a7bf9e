"""Activation ranges that QAD learns instead of observing (LSQ: Esser et al., "Learned Step Size Quantization", 2020).

After calibration each activation range is MinMax over the calibration images, so one outlier activation widens
it and coarsens the grid every other image is rounded on (benchmarks/RESULTS.md, "More QAD images make it worse").
:func:`learn_scales` makes the scale of each per-tensor activation fake-quant a trained parameter: the forward pass
runs ``torch._fake_quantize_learnable_per_tensor_affine`` (the op torch.ao's ``_LearnableFakeQuantize`` runs), whose
backward gives the scale LSQ's gradient, multiplied by LSQ's ``1 / sqrt(elements per image x quant_max)``;
the zero point stays where calibration put it (ort-cpu's uint8 zero point; TensorRT's symmetric ranges keep 0).
torch.ao's ``_LearnableFakeQuantize`` itself is not a ``FakeQuantize`` (the helpers of :mod:`~distill.export.fakequant`
and its ONNX export read those), so the calibrated modules are switched in place and switched back by
:func:`freeze_scales` before export, which writes the learned scales as plain QuantizeLinear scales.
Weights keep their per-channel max |w| / 127 scales (what onnxruntime's PTQ computes from the same weights).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.ao.quantization import FakeQuantize

from distill.export.fq_state import activation_fake_quants

MIN_SCALE = 1e-8  # a step below this would be no range at all; the forward pass clamps to it


class LearnedScaleFakeQuantize(FakeQuantize):
    """A calibrated per-tensor activation ``FakeQuantize`` whose ``scale`` is an ``nn.Parameter``; its observer is
    not consulted (the range is trained, not observed)."""

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        if self.fake_quant_enabled[0] == 0:
            return X
        grad_factor = 1.0 / math.sqrt(X[0].numel() * self.quant_max)
        return torch._fake_quantize_learnable_per_tensor_affine(
            X, self.scale.clamp_min(MIN_SCALE), self.zero_point.detach().float(), self.quant_min, self.quant_max,
            grad_factor)


def learn_scales(model: nn.Module) -> list[nn.Parameter]:
    """Make every activation scale of the calibrated ``model`` a parameter, in place; returns them (their own
    optimizer group: their step is not the weights')."""
    params = []
    for fq in activation_fake_quants(model):
        fq.scale = nn.Parameter(fq.scale.detach().clone().reshape(fq.scale.shape))  # replaces the buffer
        fq.__class__ = LearnedScaleFakeQuantize
        params.append(fq.scale)
    return params


def freeze_scales(model: nn.Module) -> int:
    """Turn learned scales back into plain ``FakeQuantize`` buffers (clamped as the forward pass used them), in place,
    so the model exports as before; returns how many."""
    n = 0
    for fq in [m for m in model.modules() if isinstance(m, LearnedScaleFakeQuantize)]:
        value = fq.scale.detach().clamp_min(MIN_SCALE).clone()
        del fq._parameters["scale"]
        fq.register_buffer("scale", value)
        module: nn.Module = fq  # retyped in place: no longer a LearnedScaleFakeQuantize
        module.__class__ = FakeQuantize
        n += 1
    return n
