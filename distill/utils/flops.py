"""FLOP and parameter counts with torch's own FlopCounterMode (2 FLOPs per multiply-add)."""
from __future__ import annotations

import torch
from torch import nn


def count_flops(model: nn.Module, input_size: tuple[int, int], channels: int = 3) -> int:
    """FLOPs of one forward pass of one image of ``input_size`` (H, W)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, channels, *input_size, device=device))
    model.train(was_training)
    return int(counter.get_total_flops())


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
