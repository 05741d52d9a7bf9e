"""FLOP and parameter counts with torch's own FlopCounterMode (2 FLOPs per multiply-add).

Two blind spots of a plain ``FlopCounterMode`` are closed here, because both hide attention:

* ``nn.MultiheadAttention`` in eval mode under ``no_grad`` takes a fused "fast path"
  (``_native_multi_head_attention``) that the counter has no formula for, so a ViT's q/k/v
  projections and attention vanished from the count (ViT-B-32 read 5.89 GFLOPs instead of
  ~8.8). The count runs with that fast path switched off (``torch.backends.mha``), which
  computes the same function through ops the counter sees.
* On CPU, ``F.scaled_dot_product_attention`` dispatches to
  ``aten._scaled_dot_product_flash_attention_for_cpu``, which torch's registry also lacks;
  it gets torch's own SDPA formula (``sdpa_flop_count``: QK^T plus attention x V).

Counted are matrix products and convolutions only (as torch counts them); norms, softmax and
activations are not.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _sdpa_flops(query_shape: Sequence[int], key_shape: Sequence[int], value_shape: Sequence[int], *args: Any,
                out_shape: Sequence[int] | None = None, **kwargs: Any) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _custom_mapping() -> dict:
    aten = torch.ops.aten
    ops = [getattr(aten, name) for name in ("_scaled_dot_product_flash_attention_for_cpu",) if hasattr(aten, name)]
    return {op: _sdpa_flops for op in ops}


@contextmanager
def _unfused_attention() -> Iterator[None]:
    """Switch off nn.MultiheadAttention's fused eval fast path for the duration."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None:  # older torch: no switch; nothing to do
        yield
        return
    prev = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(prev)


def count_forward_flops(fn: Callable[[Tensor], object], x: Tensor) -> int:
    """FLOPs of ``fn(x)`` under no_grad, attention included (see the module docstring)."""
    with _unfused_attention(), FlopCounterMode(display=False, custom_mapping=_custom_mapping()) as counter, \
            torch.no_grad():
        fn(x)
    return int(counter.get_total_flops())


def count_flops(model: nn.Module, input_size: tuple[int, int], channels: int = 3) -> int:
    """FLOPs of one forward pass of one image of ``input_size`` (H, W), in eval mode."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        return count_forward_flops(model, torch.zeros(1, channels, *input_size, device=device))
    finally:
        model.train(was_training)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
