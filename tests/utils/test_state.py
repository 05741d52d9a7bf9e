"""distill/utils/state.py: training state saved without pickle, restored so a resumed step equals the uninterrupted one."""
from __future__ import annotations

import copy

import pytest
import torch

from distill.utils.state import load_state, restore_optimizer, save_state


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor) -> None:
    opt.zero_grad()
    (model(x) ** 2).sum().backward()
    opt.step()


@pytest.mark.parametrize("fused", [True, None])
def test_a_resumed_channels_last_adamw_steps_exactly_like_the_uninterrupted_one(tmp_path, fused):
    """The fused kernel needs the moments laid out like their channels_last parameter (saved ones are
    contiguous): without the re-layout the CPU kernel drifted by ~2e-3 and the CUDA one refused to run."""
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    xs = [torch.randn(2, 3, 8, 8) for _ in range(3)]
    ref = copy.deepcopy(model)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=0.01, fused=fused)
    for x in xs:
        _step(ref, ref_opt, x)

    opt = torch.optim.AdamW(model.parameters(), lr=0.01, fused=fused)
    _step(model, opt, xs[0])
    save_state(tmp_path / "state", {"optimizer": opt.state_dict()})
    resumed = torch.optim.AdamW(model.parameters(), lr=0.01, fused=fused)
    restore_optimizer(resumed, load_state(tmp_path / "state")["optimizer"])
    for key in ("exp_avg", "exp_avg_sq"):
        assert resumed.state[model.weight][key].stride() == model.weight.stride(), key
    for x in xs[1:]:
        _step(model, resumed, x)
    assert torch.equal(model.weight, ref.weight) and torch.equal(model.bias, ref.bias)
