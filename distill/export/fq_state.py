"""The fake-quant modules of a fake-quantized model and their state: list them, tell activations from weights,
let their observers follow the data or not, and calibrate the activation ranges (the PTQ calibration) before
QAD trains or anything is measured. The model itself comes from :func:`distill.export.fakequant.fake_quant_model`.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.ao.quantization import (
    FakeQuantize,
    disable_fake_quant,
    disable_observer,
    enable_fake_quant,
    enable_observer,
)


def set_observers(model: nn.Module, on: bool, weights: bool | None = None) -> None:
    """Let the activation ranges follow the data (``on``) or freeze them; the weight observers (per
    channel max |w|) do as ``weights`` says (default: as the activations)."""
    weights = on if weights is None else weights
    activations = {id(fq) for fq in activation_fake_quants(model)}
    for fq in fake_quants(model):
        (enable_observer if (on if id(fq) in activations else weights) else disable_observer)(fq)


def activation_fake_quants(model: nn.Module) -> list[FakeQuantize]:
    """The per-tensor fake-quants that are not a weight's (a kept layer's per-tensor weight grid,
    :func:`distill.export.fakequant.ort_requantized_weight`, is a weight's)."""
    weight_fqs = {id(m.weight_fake_quant) for m in model.modules() if isinstance(getattr(m, "weight_fake_quant", None),
                                                                               FakeQuantize)}
    return [fq for fq in fake_quants(model) if not fq.is_per_channel and id(fq) not in weight_fqs]


def calibrate_ranges(model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """Set ``model``'s activation ranges from ``batches`` (float activations observed, fake-quant off: the PTQ
    calibration), then turn fake-quant on and every observer off; returns ``model``."""
    model.apply(disable_fake_quant)
    set_observers(model, True)
    with torch.no_grad():
        for x in batches:
            model(x)
    model.apply(enable_fake_quant)
    set_observers(model, False)
    return model


def fake_quants(model: nn.Module) -> list[FakeQuantize]:
    return [m for m in model.modules() if isinstance(m, FakeQuantize)]


def module_name(node: torch.fx.Node) -> str:
    """A ``call_module`` node's target: the qualified name of its module (torch.fx types targets str | callable)."""
    assert isinstance(node.target, str)  # invariant: torch.fx names a call_module node's module by its path
    return node.target
