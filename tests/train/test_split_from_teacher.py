"""A run without a cache takes the pool of its teacher section's ``teacher.json`` (review 2, M1).

Before: the built-in recipes leave the split rule to the cache; with no cache (``strategy.name=kd_online`` with a
bootstrapped teacher, the README's "same KD with the teacher run every batch") the rule fell back to
``pretrain_fraction`` 0 and the run was refused by the pool guard, without naming the key to set.
"""
from __future__ import annotations

import pytest
import yaml

from distill import api
from distill.errors import DistillError
from distill.recipes import load_recipe
from distill.records import RUN_CONFIG
from distill.train import train
from distill.train.build import with_split_rule
from tests.shapes import make_shapes_root


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """A shapes tree and a stand-in teacher bootstrapped on its 30% pool, one quick epoch."""
    root = make_shapes_root(tmp_path_factory.mktemp("data"), ["red", "green"], per_class=8)
    out = tmp_path_factory.mktemp("teacher")
    manifest = api.bootstrap_teacher(root, out, pretrain_fraction=0.3, seed=0, quick=True, epochs=1, batch_size=4,
                                     max_per_domain=0, threads=1, progress=False)
    assert manifest.dataset.pretrain is not None and manifest.dataset.pretrain.fraction == 0.3
    return root, out / manifest.checkpoint, manifest.arch


def _online(root, ckpt, arch, out, **more):
    return load_recipe("kd", {"data.root": root, "data.source": "red", "cache": None, "strategy.name": "kd_online",
                              "teacher": {"arch": arch, "pretrained": str(ckpt)}, "run.out": out,
                              "student.arch": "test_resnet", "student.input_size": 16, "optim.epochs": 1,
                              "optim.batch_size": 4, "run.workers": 0, "run.progress": False, "run.device": "cpu",
                              **more})


def test_kd_online_without_a_cache_trains_on_the_teachers_pool_rule(stand_in, tmp_path):
    root, ckpt, arch = stand_in
    summary = train(_online(root, ckpt, arch, tmp_path / "r"))
    assert summary is not None and summary.strategy == "kd_online"
    saved = yaml.safe_load((tmp_path / "r" / RUN_CONFIG).read_text())["data"]  # the rule the run used
    assert (saved["pretrain_fraction"], saved["split_seed"], saved["test_fraction"]) == (0.3, 0, 0.3)


def test_an_explicit_rule_still_wins_and_the_refusal_names_the_key(stand_in, tmp_path):
    root, ckpt, arch = stand_in
    cfg = _online(root, ckpt, arch, tmp_path / "r", **{"data.pretrain_fraction": 0.2})
    assert with_split_rule(cfg).data.pretrain_fraction == 0.2
    with pytest.raises(DistillError, match=r"; set data\.pretrain_fraction=0\.3 and data\.split_seed=0$"):
        train(cfg)


def test_a_run_with_neither_cache_nor_teacher_keeps_the_defaults(stand_in, tmp_path):
    root, _, _ = stand_in
    cfg = load_recipe("erm", {"data.root": root, "data.source": "red", "cache": None, "run.out": tmp_path / "r"})
    assert cfg.teacher is None
    data = with_split_rule(cfg).data
    assert (data.pretrain_fraction, data.split_seed, data.test_fraction, data.val_fraction) == (0.0, 0, 0.3, 0.1)


def test_a_cache_not_built_yet_is_named_not_the_teachers_pool(stand_in, tmp_path):
    """A mistyped or unbuilt cache path with a pooled teacher: the split rule is the teacher's pool, so the error is
    the missing cache (review 3: the pool guard refused first, asking for data.pretrain_fraction)."""
    root, ckpt, arch = stand_in
    missing = tmp_path / "no_cache_here"
    cfg = _online(root, ckpt, arch, tmp_path / "r", **{"strategy.name": "kd", "cache": str(missing)})
    with pytest.raises(DistillError) as e:
        train(cfg)
    assert str(missing) in str(e.value) and "pretrain_fraction" not in str(e.value), str(e.value)


def test_the_pools_split_seed_comes_through_too(stand_in, tmp_path):
    """A pool recorded with split_seed 3 (bootstrap records 0, the default: review 3 found the seed untested)."""
    import json
    import shutil

    root, ckpt, arch = stand_in
    teacher = tmp_path / "teacher"
    shutil.copytree(ckpt.parent, teacher)
    record = json.loads((teacher / "teacher.json").read_text())
    record["dataset"]["pretrain"]["split_seed"] = 3
    (teacher / "teacher.json").write_text(json.dumps(record))
    data = with_split_rule(_online(root, teacher / ckpt.name, arch, tmp_path / "r")).data
    assert (data.pretrain_fraction, data.split_seed) == (0.3, 3)
