"""Fixtures shared by the training tests: a tiny three-domain data set and a teacher cache of it."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distill.data import DomainFolder
from distill.teacher import Teacher
from distill.teacher.cache import CacheOptions, build_cache
from tests.shapes import make_shapes_root


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return make_shapes_root(tmp_path_factory.mktemp("tiny"), ["red", "green", "blue"], per_class=10)


@pytest.fixture(scope="module")
def tiny_cache(tiny_root, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    ds = DomainFolder(tiny_root, test_fraction=0.3)
    teacher = Teacher("distill-demo-vit", None, ds.classes, ["a photo of a {}."])
    out = tmp_path_factory.mktemp("cache") / "c"
    return build_cache(ds, teacher, out, CacheOptions(views=2, seed=3, shard_size=16), num_workers=0, progress=False)
