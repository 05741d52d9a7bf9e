"""Each strategy builds its own batch extras (``Strategy.batch_extras``); the trainer knows no strategy's data.

Before: ``Trainer.make_batch`` built adv_cached's adversarial views itself and ``Batch`` carried
three ``adv_*`` fields, so adding a strategy with inputs of its own meant editing the trainer.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from distill.config import load_train_config
from distill.strategies import Batch, BatchSource, list_strategies
from tests.shapes import make_shapes_root


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_shapes_root(tmp_path_factory.mktemp("extras"), ["red", "green"], per_class=8)


def _trainer(root, out):
    from distill.train import Trainer, build

    return Trainer(build(load_train_config(None, base={
        "data": {"root": str(root), "source": ["red"], "test_fraction": 0.25}, "strategy": {"name": "erm"},
        "student": {"arch": "test_resnet", "input_size": 16}, "optim": {"epochs": 1, "batch_size": 4},
        "run": {"out": str(out), "workers": 0, "progress": False, "device": "cpu"}})))


def test_the_strategy_hook_fills_batch_extras(root, tmp_path):
    trainer = _trainer(root, tmp_path / "run")
    pixels, labels, domain, index, view = next(iter(trainer.loader(0, 0)))
    assert trainer.make_batch(pixels, labels, domain, index, view).extras == {}  # the default hook adds nothing

    seen: list[BatchSource] = []

    def batch_extras(source: BatchSource) -> dict[str, torch.Tensor]:
        seen.append(source)
        return {"doubled_index": source.sample_index.to(source.device) * 2}

    trainer.strategy.batch_extras = batch_extras  # a strategy with inputs of its own, as adv_cached has
    trainer.epoch = 3
    batch = trainer.make_batch(pixels, labels, domain, index, view)
    assert torch.equal(batch.extras["doubled_index"], index * 2)
    (source,) = seen
    assert torch.equal(source.sample_index, index) and torch.equal(source.view, view)
    assert (source.epoch, source.seed, source.device) == (3, trainer.setup.cfg.run.seed, trainer.setup.device)
    assert source.memory_format == trainer.memory_format and source.adversarial is None


def test_batch_carries_no_strategy_specific_fields():
    names = {f.name for f in dataclasses.fields(Batch)}
    assert not {n for n in names if n.startswith("adv_")}, "one strategy's inputs belong in Batch.extras"
    assert "adv_cached" in list_strategies()  # the strategy whose fields these were still exists
