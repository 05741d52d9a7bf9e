"""The student trainer's optimizer: timm's no-weight-decay rule over the whole strategy (student backbone, head,
projector and the strategy's own parts), and one-line refusal of an optimizer state with other groups."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from distill.config import OptimConfig, load_train_config
from distill.errors import DistillError
from distill.train.optim import build_optimizer
from distill.utils.state import restore_optimizer


def _no_decay_expected(module: nn.Module) -> dict[str, bool]:
    """name -> whether it must be exempt: every norm-layer parameter and every bias (by module type, not by shape)."""
    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    out = {}
    for mname, sub in module.named_modules():
        for pname, p in sub.named_parameters(recurse=False):
            if p.requires_grad:
                out[f"{mname}.{pname}" if mname else pname] = isinstance(sub, norms) or pname == "bias"
    return out


def _groups_by_name(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    return {n: decay_of[id(p)] for n, p in module.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_every_norm_and_bias_parameter_is_in_the_no_decay_group(tiny_root, tiny_cache, tmp_path, kind):
    """customkd on a student with a projector: backbone BatchNorms, biases of the head, the projector and the
    strategy's own MLP get weight_decay 0; every conv/linear weight gets optim.weight_decay."""
    from distill.train import Trainer, build

    cfg = load_train_config(None, base={
        "data": {"root": str(tiny_root), "source": ["red", "green"], "test_fraction": 0.3},
        "cache": str(tiny_cache), "student": {"arch": "test_resnet", "input_size": 16},
        "strategy": {"name": "customkd"},
        "optim": {"epochs": 1, "batch_size": 8, "weight_decay": 0.05, "optimizer": kind},
        "run": {"out": str(tmp_path / "run"), "workers": 0, "progress": False, "device": "cpu"}})
    trainer = Trainer(build(cfg))
    strategy = trainer.strategy
    decay = _groups_by_name(strategy, trainer.optimizer)
    expected = _no_decay_expected(strategy)
    assert decay.keys() == expected.keys()  # every trainable parameter is in exactly one group
    assert any(n.startswith("transform.") for n in decay)  # the strategy's own part is covered
    assert any(n.startswith("student.projector.") for n in decay)
    assert any(isinstance(m, nn.BatchNorm2d) for m in strategy.modules())
    wrong = {n: d for n, d in decay.items() if d != (0.0 if expected[n] else 0.05)}
    assert not wrong, f"parameters in the wrong weight-decay group: {wrong}"


def test_a_timm_models_own_no_weight_decay_list_is_honoured():
    """A ViT lists pos_embed / cls_token in no_weight_decay(): exempt under the strategy's prefix too."""
    import timm

    wrapper = nn.Module()
    wrapper.backbone = timm.create_model("test_vit", num_classes=0)
    opt = build_optimizer(wrapper, OptimConfig(weight_decay=0.1), cuda=False)
    decay = _groups_by_name(wrapper, opt)
    assert decay["backbone.pos_embed"] == 0.0 and decay["backbone.cls_token"] == 0.0
    assert decay["backbone.patch_embed.proj.weight"] == 0.1


def test_an_optimizer_state_with_another_group_count_is_refused_in_one_line():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    old = torch.optim.AdamW(model.parameters()).state_dict()  # one group: a run from before the split
    with pytest.raises(DistillError, match="1 parameter group.*this optimizer 2"):
        restore_optimizer(build_optimizer(model, OptimConfig(), cuda=False), old)
