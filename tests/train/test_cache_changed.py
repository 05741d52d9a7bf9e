"""A cache refused because the images of its own folder changed says so and which domain's count changed,
instead of naming the same folder twice as if the roots differed (QA I, 5)."""
from __future__ import annotations

import shutil

import pytest
import torch

from distill.data import DomainFolder
from distill.errors import DistillError
from distill.teacher import Teacher
from distill.teacher.cache import CacheOptions, build_cache
from distill.train import train
from tests.shapes import make_shapes_root
from tests.train.test_split_from_cache import _recipe


def test_an_image_added_to_the_cached_folder_names_the_domain_and_counts(tmp_path):
    root = make_shapes_root(tmp_path / "data", ["red", "green"], per_class=6)
    torch.manual_seed(0)
    ds = DomainFolder(root)
    teacher = Teacher("distill-demo-vit", None, ds.classes, ["a photo of a {}."])
    cache = build_cache(ds, teacher, tmp_path / "c", CacheOptions(shard_size=16), num_workers=0, progress=False)
    first = sorted((root / "green").rglob("*.png"))[0]
    shutil.copy(first, first.with_name("added.png"))
    green = len(list((root / "green").rglob("*.png")))
    with pytest.raises(DistillError) as e:
        train(_recipe(root, cache, tmp_path / "run"))
    message = str(e.value)
    assert f"the cache was built from this run's data.root ({root}); its images changed since " in message, message
    assert f"(green: {green} image(s) now, {green - 1} when cached)" in message, message
    assert "this run's data.root is" not in message and "\n" not in message


def test_a_differing_split_key_on_the_cached_folder_names_the_folder_once_and_the_key(tmp_path):
    """Review 5 #5: the cache built at test_fraction 0.3 and a run at 0.5 on the same root named that root twice,
    as if the data were elsewhere; it names it once, and the differing split key."""
    root = make_shapes_root(tmp_path / "data", ["red", "green"], per_class=6)
    torch.manual_seed(0)
    ds = DomainFolder(root)
    teacher = Teacher("distill-demo-vit", None, ds.classes, ["a photo of a {}."])
    cache = build_cache(ds, teacher, tmp_path / "c", CacheOptions(shard_size=16), num_workers=0, progress=False)
    with pytest.raises(DistillError) as e:
        train(_recipe(root, cache, tmp_path / "run", test_fraction=0.5))
    message = str(e.value)
    assert f"the cache was built from this run's data.root ({root}); the split rule differs (test_fraction)" \
        in message, message
    assert "this run's data.root is" not in message and "data.test_fraction=0.3" in message, message
