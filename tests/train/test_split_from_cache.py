"""A run takes the split rule from its cache where the recipe leaves it unset.

Before: a cache built with a bootstrapped teacher records ``pretrain_fraction: 0.3``, and every
recipe that did not restate it was refused with four mismatching fields.
"""
from __future__ import annotations

import pytest
import torch
import yaml

from distill.config import load_train_config
from distill.data import DomainFolder
from distill.errors import DistillError
from distill.records import RUN_CONFIG
from distill.teacher import Teacher
from distill.teacher.cache import CacheOptions, build_cache
from distill.train import train
from tests.shapes import make_shapes_root


@pytest.fixture(scope="module")
def pool_cache(tmp_path_factory):
    root = make_shapes_root(tmp_path_factory.mktemp("pooled"), ["red", "green"], per_class=12)
    torch.manual_seed(0)
    ds = DomainFolder(root, pretrain_fraction=0.3, val_fraction=0.2)  # as `distill cache build` does beside a stand-in
    teacher = Teacher("distill-demo-vit", None, ds.classes, ["a photo of a {}."])
    out = tmp_path_factory.mktemp("cache") / "c"
    return root, build_cache(ds, teacher, out, CacheOptions(shard_size=16), num_workers=0, progress=False)


def _recipe(root, cache, out, **data):
    return load_train_config(None, base={
        "data": {"root": str(root), "source": ["red"], **data}, "cache": str(cache), "strategy": {"name": "kd"},
        "student": {"arch": "test_resnet", "input_size": 16}, "optim": {"epochs": 1, "batch_size": 4},
        "run": {"out": str(out), "workers": 0, "progress": False, "device": "cpu"}})


def test_a_recipe_without_split_keys_trains_on_a_pool_cache(pool_cache, tmp_path):
    root, cache = pool_cache
    summary = train(_recipe(root, cache, tmp_path / "run"))
    assert summary is not None and summary.strategy == "kd"
    saved = yaml.safe_load((tmp_path / "run" / RUN_CONFIG).read_text())["data"]  # the rule the run used, for export
    assert (saved["test_fraction"], saved["split_seed"], saved["val_fraction"], saved["pretrain_fraction"]) == \
        (0.3, 0, 0.2, 0.3)


def test_a_recipe_that_sets_another_rule_is_still_refused(pool_cache, tmp_path):
    root, cache = pool_cache
    with pytest.raises(DistillError, match="pretrain_fraction"):
        train(_recipe(root, cache, tmp_path / "run", pretrain_fraction=0.0))
