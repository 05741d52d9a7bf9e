"""The student trainer's optimizer: timm's no-weight-decay rule, then AdamW (fused on CUDA) or SGD.

Weight decay pulls weights toward zero; on a BatchNorm/LayerNorm scale or a bias it only fights
the normalization (timm, DeiT, ConvNeXt and the CLIP recipes all exempt them). The rule is timm's
own :func:`timm.optim.param_groups_weight_decay`: every 1-d parameter (norm scales/shifts, biases)
and every name a timm backbone lists in its ``no_weight_decay()`` (a ViT's position embedding and
class token) go to a group with ``weight_decay=0``; the strategy's own trainable parts (projectors,
discriminators) are covered too, since the rule runs over the whole strategy module.
"""
from __future__ import annotations

import torch
from timm.optim import param_groups_weight_decay
from torch import nn

from distill.config import OptimConfig


def no_weight_decay_names(module: nn.Module) -> set[str]:
    """Full parameter names that submodules (timm models) exempt from decay through ``no_weight_decay()``."""
    names: set[str] = set()
    for prefix, sub in module.named_modules():
        listed = getattr(sub, "no_weight_decay", None)
        if callable(listed) and sub is not module:
            names |= {f"{prefix}.{n}" if prefix else n for n in listed()}
    return names


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """``[{params: no-decay, weight_decay: 0}, {params: decay, weight_decay}]`` (timm's rule, trainable only)."""
    return param_groups_weight_decay(module, weight_decay, no_weight_decay_list=no_weight_decay_names(module))


def build_optimizer(module: nn.Module, optim: OptimConfig, cuda: bool) -> torch.optim.Optimizer:
    """The optimizer of ``module``'s trainable parameters under ``optim`` (``optim.optimizer``: adamw | sgd)."""
    groups = param_groups(module, optim.weight_decay)
    if optim.optimizer == "adamw":  # fused on CUDA: one kernel, and no host sync under a GradScaler
        return torch.optim.AdamW(groups, lr=optim.lr, weight_decay=optim.weight_decay, fused=True if cuda else None)
    return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay,
                           nesterov=optim.momentum > 0)  # momentum 0: plain SGD
