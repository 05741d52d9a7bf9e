"""Mixed precision that does not diverge: losses compute in fp32 whatever dtype the logits arrive in.

Under bf16/fp16 autocast a student's logits are half precision. A bf16 log-softmax of logits in
the hundreds (CLIP teachers' logit scale is ~100) is off by whole units, and CPU autocast keeps
softmax in bf16; on AVX-512-bf16 CPUs this produced ``loss is nan at epoch 1 step 3``. These
tests feed bf16 inputs straight into the loss functions and compare with a float64 reference on
the very same (bf16-rounded) values, so any half-precision arithmetic inside shows up.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distill.config import load_train_config
from distill.errors import DistillError
from distill.strategies.losses import (
    information_maximization,
    kl_div_with_temperature,
    kl_per_sample,
    soft_cross_entropy,
)


def _close_logits(seed: int = 0, scale: float = 100.0, n: int = 64, c: int = 10):
    """Teacher and student logits in the hundreds, close to each other (a small true KL): bf16."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(n, c, generator=g) * scale
    s = t + 3 * torch.randn(n, c, generator=g)
    return s.bfloat16(), t.bfloat16()


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_loss_on_bf16_logits_is_fp32_exact(temperature):
    s, t = _close_logits()
    got = kl_div_with_temperature(s, t, temperature)
    T = temperature
    ref = F.kl_div(F.log_softmax(s.double() / T, -1), F.softmax(t.double() / T, -1), reduction="batchmean") * T * T
    assert got.dtype == torch.float32 and torch.isfinite(got)
    assert abs(float(got) - float(ref)) <= 1e-5 * float(ref), (float(got), float(ref))  # bf16 math: ~2% off


def test_kl_per_sample_on_bf16_is_fp32_exact_and_nonnegative():
    s, t = _close_logits(1)
    got = kl_per_sample(t, s)
    lp, lq = F.log_softmax(t.double(), -1), F.log_softmax(s.double(), -1)
    ref = (lp.exp() * (lp - lq)).sum(-1)
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), ref, rtol=1e-4, atol=1e-6)  # bf16 math: negative KLs, 1e-6 abs errors
    assert bool((got >= -1e-6).all())


def test_entropy_and_soft_ce_on_bf16_are_fp32():
    g = torch.Generator().manual_seed(2)
    logits = (torch.randn(32, 10, generator=g) * 50).bfloat16()
    im, ent, div = information_maximization(logits, 1.0)
    p = logits.double().softmax(-1)
    ref_ent = -(p * logits.double().log_softmax(-1)).sum(-1).mean()
    assert ent.dtype == torch.float32 and abs(float(ent) - float(ref_ent)) <= 1e-5 * float(ref_ent)
    target = torch.softmax(torch.randn(32, 10, generator=g), -1)
    ce = soft_cross_entropy(logits, target)
    ref_ce = -(target.double() * logits.double().log_softmax(-1)).sum(-1).mean()
    assert ce.dtype == torch.float32 and abs(float(ce) - float(ref_ce)) <= 1e-5 * abs(float(ref_ce))


def test_every_strategy_loss_is_finite_fp32_under_bf16_autocast():
    """Each registered strategy's loss under CPU bf16 autocast, with CLIP-scale teacher logits x 10."""
    from distill.strategies import create_strategy, list_strategies
    from tests.strategies.test_strategies import make_inputs

    for name in list_strategies():
        student, ctx, batch = make_inputs(name)
        if batch.teacher_logits is not None:
            batch.teacher_logits = batch.teacher_logits * 10
        strategy = create_strategy(name, student, None, ctx).train()
        strategy.on_epoch_start(0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = strategy(batch)
        loss = out["loss"]
        assert loss.dtype == torch.float32, (name, loss.dtype)
        assert torch.isfinite(loss), (name, loss)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in strategy.parameters() if p.grad is not None), name


# ---------------------------------------------------------------------------- config
def _base(tmp_path, **optim):
    return {"data": {"root": str(tmp_path), "source": ["a"]}, "strategy": {"name": "erm"},
            "optim": optim, "run": {"out": str(tmp_path / "run")}}


def test_precision_key_and_bf16_alias(tmp_path):
    assert load_train_config(None, base=_base(tmp_path)).optim.precision == "fp32"
    assert load_train_config(None, base=_base(tmp_path, precision="fp16")).optim.precision == "fp16"
    cfg = load_train_config(None, base=_base(tmp_path, bf16=True))  # the old key still works
    assert cfg.optim.precision == "bf16" and "bf16" not in cfg.optim.model_dump()
    assert load_train_config(None, base=_base(tmp_path, bf16=False)).optim.precision == "fp32"
    with pytest.raises(DistillError, match="'optim.precision'"):
        load_train_config(None, base=_base(tmp_path, precision="fp64"))
    with pytest.raises(DistillError, match="contradicts precision: fp16"):
        load_train_config(None, base=_base(tmp_path, bf16=True, precision="fp16"))
    with pytest.raises(DistillError, match="'run.log_every'"):
        load_train_config(None, base={**_base(tmp_path), "run": {"out": str(tmp_path), "log_every": 0}})


def test_fp16_training_on_cpu_is_one_line(tmp_path, capsys):
    import yaml

    from distill.cli import main
    from tests.shapes import make_shapes_root

    root = make_shapes_root(tmp_path / "data", ["red", "green"], per_class=2)
    cfg = {"data": {"root": str(root), "source": ["red"]}, "strategy": {"name": "erm"},
           "student": {"arch": "test_resnet", "input_size": 16}, "optim": {"precision": "fp16"},
           "run": {"out": str(tmp_path / "run"), "device": "cpu", "workers": 0}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "-c", str(tmp_path / "c.yaml")]) == 1
    err = capsys.readouterr().err.strip()
    assert "optim.precision fp16 needs a CUDA GPU" in err and len(err.splitlines()) == 1
