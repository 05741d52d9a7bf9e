"""What QAD moved in the int8 model: the share of integer weight values that training changed.

QAD trains a few dozen small steps; a latent float weight changes its int8 value only when it crosses a rounding
boundary of its channel's grid (max |w| / 127). On the 9 edge students 0.01-0.14 % of the values moved
(benchmarks/RESULTS.md, "What QAD moves, and where int8's error comes from"): the rest of QAD's effect is in the
biases (int32) and activation ranges.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.ao.quantization import FakeQuantize


def int8_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Module name -> its weight's integer values on the grid its fake-quant holds now (observers must be off, so
    reading does not move the grid). Layers whose weight is not fake-quantized (float) are left out."""
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            fq = getattr(module, "weight_fake_quant", None)
            if not isinstance(fq, FakeQuantize) or not fq.fake_quant_enabled[0]:
                continue
            shape = [-1 if d == fq.ch_axis else 1 for d in range(module.weight.dim())] if fq.is_per_channel else [1]
            scale, zero = fq.scale.reshape(shape), fq.zero_point.reshape(shape)
            out[name] = torch.round(fq(module.weight) / scale) + zero
    return out


def changed_share(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> float:
    """Percent of the integer weight values (layers in both) that differ."""
    names = [n for n in before if n in after]
    total = sum(before[n].numel() for n in names)
    moved = sum(int((before[n] != after[n]).sum()) for n in names)
    return 100.0 * moved / total if total else 0.0
