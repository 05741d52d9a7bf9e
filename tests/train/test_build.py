"""build(): each cache opened once, one teacher, identity checked, views and provenance taken from the cache."""
from __future__ import annotations

import json
from importlib import import_module

import pytest
import torch

from distill.config import load_train_config
from distill.data import DomainFolder
from distill.errors import DistillError
from distill.teacher import Teacher
from distill.teacher.cache import CacheOptions, TeacherCache, build_cache
from distill.train import build
from tests.shapes import make_shapes_root
from tests.train.test_trainer import _config

TEACHER = {"arch": "distill-demo-vit", "pretrained": None}


def test_each_cache_is_opened_once_and_the_teacher_made_once(tmp_path, tiny_root, tiny_cache, monkeypatch):
    opened, made = [], []
    real_open, real_init = TeacherCache.open.__func__, Teacher.__init__

    def counting_open(cls, path, *a, **k):
        opened.append(str(path))
        return real_open(cls, path, *a, **k)

    def counting_init(self, *a, **k):
        made.append(a[0])
        real_init(self, *a, **k)

    monkeypatch.setattr(TeacherCache, "open", classmethod(counting_open))
    monkeypatch.setattr(Teacher, "__init__", counting_init)
    cfg = _config(tiny_root, tiny_cache, tmp_path / "run")
    cfg["cache"] = [str(tiny_cache), str(tiny_cache)]  # two teachers' caches (here the same one twice)
    cfg["teacher"] = dict(TEACHER)  # named: its identity is checked against both caches
    setup = build(load_train_config(None, base=cfg))
    assert opened == [str(tiny_cache)] * 2 and made == ["distill-demo-vit"]
    assert len(setup.caches) == 2


def test_views_and_provenance_come_from_the_cache(tmp_path, tiny_root, tiny_cache):
    setup = build(load_train_config(None, base=_config(tiny_root, tiny_cache, tmp_path / "run")))
    manifest = json.loads((tiny_cache / "manifest.json").read_text())
    assert (setup.views.count, setup.views.seed) == (2, 3) == (manifest["views"]["count"], manifest["views"]["seed"])
    assert setup.provenance["teacher"] == manifest["teacher"]
    assert setup.provenance["teacher_flops"] == manifest.get("teacher_flops_per_image")
    zero_shot = TeacherCache.open(tiny_cache).zero_shot_accuracy()
    assert setup.teacher_zero_shot == {d: pytest.approx(a["test"], abs=1e-6) for d, a in zero_shot.items()}
    assert all(0.0 <= v <= 1.0 for v in setup.teacher_zero_shot.values()), "fractions"


def test_caches_with_different_views_are_refused(tmp_path, tiny_root, tiny_cache):
    torch.manual_seed(0)
    ds = DomainFolder(tiny_root, test_fraction=0.3)
    teacher = Teacher("distill-demo-vit", None, ds.classes, ["a photo of a {}."])
    one_view = build_cache(ds, teacher, tmp_path / "one", CacheOptions(views=1, seed=3, shard_size=64), num_workers=0,
                           progress=False)
    cfg = _config(tiny_root, tiny_cache, tmp_path / "run")
    cfg["cache"] = [str(tiny_cache), str(one_view)]
    with pytest.raises(DistillError, match=r"its views differ from the first cache's \(views.count: 1 vs 2"):
        build(load_train_config(None, base=cfg))


def test_a_missing_source_checkpoint_is_named(tmp_path, tiny_root, tiny_cache):
    cfg = _config(tiny_root, tiny_cache, tmp_path / "run", strategy__name="teacher_pl")
    cfg["strategy"] = {"name": "teacher_pl"}
    with pytest.raises(DistillError, match="set 'source_checkpoint'"):
        build(load_train_config(None, base=cfg))


def test_function_matching_on_a_crop_only_cache_is_refused_naming_the_policy(tmp_path, tiny_root, tiny_cache):
    """fm on crop-only views would silently be kd: refused, saying how to build the cache it needs."""
    cfg = _config(tiny_root, tiny_cache, tmp_path / "run", strategy__name="fm")
    del cfg["strategy"]["temperature"]
    with pytest.raises(DistillError, match=r"strategy 'fm'.*crop-only.*--policy fm") as err:
        build(load_train_config(None, base=cfg))
    assert "\n" not in str(err.value)


def test_a_pool_domain_the_cache_lacks_is_refused(tmp_path, tiny_root, tiny_cache, monkeypatch):
    setup = build(load_train_config(None, base=_config(tiny_root, tiny_cache, tmp_path / "ok",
                                                       data__source=["red"], data__unlabeled=["blue"])))
    assert {x.domain for x in setup.unlabeled} == {"blue"} and {x.split for x in setup.unlabeled} == {"train"}
    assert len(setup.unlabeled) == len(setup.dataset.select(["blue"], "train"))
    cache = TeacherCache.open(tiny_cache)
    monkeypatch.setattr(TeacherCache, "open", classmethod(lambda cls, path: cache))
    monkeypatch.setattr(type(cache), "domains", property(lambda self: ["red", "green"]))  # a cache without blue
    monkeypatch.setattr(import_module("distill.train.build"), "_check_cache", lambda *a: None)  # (its identity)
    with pytest.raises(DistillError, match=r"data\.unlabeled: domain 'blue' is not in cache"):
        build(load_train_config(None, base=_config(tiny_root, tiny_cache, tmp_path / "no",
                                                   data__source=["red"], data__unlabeled=["blue"])))


def test_a_domain_added_before_the_cached_ones_is_refused_naming_both_index_ranges(tmp_path):
    """Sample indices count every domain under data.root, the cache's identity only its own: a domain added that
    sorts first moves every cached index while the identity still matches, and each row would be read for another
    image. A domain added after them moves nothing and is accepted."""
    root = make_shapes_root(tmp_path / "data", ["green", "red"], per_class=4)
    torch.manual_seed(0)
    built_on = DomainFolder(root, test_fraction=0.3)
    teacher = Teacher("distill-demo-vit", None, built_on.classes, ["a photo of a {}."])
    cache = build_cache(built_on, teacher, tmp_path / "c", CacheOptions(views=1, seed=3, shard_size=64),
                        num_workers=0, progress=False)
    make_shapes_root(root, ["blue"], per_class=4)  # sorts before green and red
    grown = DomainFolder(root, test_fraction=0.3)
    assert grown.fingerprint(["green", "red"]) == built_on.fingerprint(["green", "red"])  # the identity matches...
    green = grown.select(["green"])[0]
    row = TeacherCache.open(cache).lookup(torch.tensor([green.index]), torch.tensor([0]))
    assert TeacherCache.open(cache).domains[int(row["domain"])] == "red"  # ...but green's index now names a red row
    with pytest.raises(DistillError, match=r"domain 'green' at sample indices 0\.\.11, but .* now numbers its images "
                                           r"12\.\.23: the data root gained or lost domains before 'green'.*rebuild "
                                           r"the cache, or move the new domain out") as err:
        build(load_train_config(None, base=_config(root, cache, tmp_path / "run", data__source=["green", "red"])))
    assert str(cache) in str(err.value) and "\n" not in str(err.value)

    (root / "blue").rename(tmp_path / "blue")  # out again: the cache matches
    (tmp_path / "blue").rename(root / "zebra")  # a domain after the cached ones moves no index
    setup = build(load_train_config(None, base=_config(root, cache, tmp_path / "ok", data__source=["green", "red"])))
    assert setup.dataset.domains == ["green", "red", "zebra"] and setup.target == ["zebra"]
