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
from distill.data.split import SPLIT_KEYS
from distill.errors import DistillError
from distill.recipes import list_recipes, load_recipe
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


# ---------------------------------------------------------------- the built-in recipes leave the rule to the cache
def test_built_in_recipes_with_a_cache_leave_the_split_rule_to_it():
    """A recipe that set ``pretrain_fraction: 0.3`` (the demo teacher's pool) refused every cache of a real
    teacher (which records 0) with "rebuild it", which cannot help (QA G, F16)."""
    for name in list_recipes():
        cfg = load_recipe(name)
        if cfg.caches():
            assert {k: getattr(cfg.data, k) for k in SPLIT_KEYS} == dict.fromkeys(SPLIT_KEYS), name


@pytest.fixture(scope="module")
def plain_cache(pool_cache, tmp_path_factory):
    """A cache of a teacher with no pool (pretrain_fraction 0), built with test_fraction 0.5."""
    root, _ = pool_cache
    torch.manual_seed(0)
    ds = DomainFolder(root, test_fraction=0.5)
    teacher = Teacher("distill-demo-vit", None, ds.classes, ["a photo of a {}."])
    out = tmp_path_factory.mktemp("plain") / "c"
    return build_cache(ds, teacher, out, CacheOptions(shard_size=16), num_workers=0, progress=False)


def test_the_kd_recipe_trains_on_a_cache_of_a_teacher_without_a_pool(pool_cache, plain_cache, tmp_path):
    root, _ = pool_cache
    cfg = load_recipe("kd", {"data.root": root, "data.source": "red", "cache": plain_cache, "run.out": tmp_path / "r",
                             "student.arch": "test_resnet", "student.input_size": 16, "optim.epochs": 1,
                             "optim.batch_size": 4, "run.workers": 0, "run.progress": False, "run.device": "cpu"})
    assert train(cfg) is not None
    saved = yaml.safe_load((tmp_path / "r" / RUN_CONFIG).read_text())["data"]
    assert (saved["test_fraction"], saved["pretrain_fraction"]) == (0.5, 0.0)


def test_a_split_key_set_otherwise_is_refused_with_the_key_that_fits(pool_cache, tmp_path):
    root, cache = pool_cache
    with pytest.raises(DistillError) as e:
        train(_recipe(root, cache, tmp_path / "run", pretrain_fraction=0.0, test_fraction=0.4))
    message = str(e.value)
    assert "set data.test_fraction=0.3, data.pretrain_fraction=0.3 (or leave them unset" in message, message
    assert "rebuild" not in message and "\n" not in message


def test_a_cache_of_the_same_domains_elsewhere_names_both_roots(pool_cache, tmp_path):
    """Another data set with the cache's domain names ("v2 of my data in another folder") named the roots only when
    the domain names differed (QA G, F11)."""
    root, cache = pool_cache
    other = make_shapes_root(tmp_path / "other", ["red", "green"], per_class=10)
    with pytest.raises(DistillError) as e:
        train(_recipe(other, cache, tmp_path / "run"))
    assert f"the cache was built from {root}; this run's data.root is {other}" in str(e.value)
