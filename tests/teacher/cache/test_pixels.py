"""Pixel store: each cached view at the student's size, equal bit for bit to the trainer's decode path."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from torchvision.transforms.functional import to_tensor

from distill.data.folder import DomainFolder
from distill.data.images import load_rgb
from distill.data.views import apply_view
from distill.errors import DistillError
from distill.records import CACHE_BUILD_PLAN, CACHE_MANIFEST
from distill.teacher.cache import (
    CacheOptions,
    PixelOptions,
    PixelStore,
    TeacherCache,
    ViewConfig,
    build_cache,
    find_pixel_store,
    parse_sizes,
    pixel_dir_name,
    shard_name,
)
from distill.train import Item, TrainImages
from tests.teacher.cache.common import demo_teacher, make_tree

SIZE = (20, 24)  # not square: a swapped H/W shows
AUG = ViewConfig(scale=(0.3, 0.9), hflip=0.5)
OPTIONS = CacheOptions(views=3, seed=4, augment=AUG, batch_size=6, shard_size=4)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    data = make_tree(tmp_path_factory.mktemp("px") / "data")
    ds = DomainFolder(data)
    out = build_cache(ds, demo_teacher(ds.classes), tmp_path_factory.mktemp("pxc") / "cache", OPTIONS,
                      pixels=PixelOptions((SIZE,)), num_workers=0, progress=False)
    return ds, out


def test_stored_pixels_equal_the_trainers_decode_path(built):
    ds, out = built
    cache = TeacherCache.open(out)
    store, line = find_pixel_store(cache, SIZE, "bicubic")
    assert store is not None and pixel_dir_name(SIZE, "bicubic") in line and "no decoding" in line
    assert len(store) == len(cache) == 90
    r = cache.rows
    items = [Item(ds.samples[int(s)], 0, int(v), tuple(p)) for s, v, p in
             zip(r["sample_index"], r["view"], r["view_params"].tolist())]
    decode = TrainImages(ds, items, SIZE, "bicubic", AUG, 4)
    stored = TrainImages(ds, items, SIZE, "bicubic", AUG, 4, pixels=store)
    flips = set()
    for i, it in enumerate(items):
        a, b = decode[i][0], stored[i][0]
        assert a.shape == (3, *SIZE) and a.dtype == b.dtype == torch.float32
        assert torch.equal(a, b), (it.sample.relpath, it.view)
        # and equal to the trainer's code before the store existed: to_tensor(apply_view(...))
        assert torch.equal(b, to_tensor(apply_view(load_rgb(ds.path(it.sample)), it.params, SIZE, "bicubic")))
        flips.add(it.params[4])
    assert flips == {0.0, 1.0}
    # the stored bytes themselves are what the decode path makes, times 255
    u8 = store.get(items[7].sample.index, items[7].view)
    assert u8.dtype == torch.uint8 and torch.equal(u8.float() / 255, decode[7][0])


def test_trainer_falls_back_and_says_why(built):
    ds, out = built
    cache = TeacherCache.open(out)
    store, line = find_pixel_store(cache, (24, 24), "bicubic")
    assert store is None and "decoding images" in line and pixel_dir_name(SIZE, "bicubic") in line
    assert "--store-pixels 24x24" in line
    assert find_pixel_store(None, SIZE, "bicubic")[0] is None
    with pytest.raises(DistillError, match="sample 999 view 0"):
        PixelStore.open(out, cache.manifest, SIZE, "bicubic").get(999, 0)
    (out / "pixels-8x8-bicubic").mkdir()  # an interrupted store: decode, and say how to finish it
    (out / "pixels-8x8-bicubic" / CACHE_BUILD_PLAN).write_text("{}")
    store, line = find_pixel_store(cache, (8, 8), "bicubic")
    assert store is None and "unfinished" in line and "--store-pixels 8x8" in line
    shutil.rmtree(out / "pixels-8x8-bicubic")


def test_resume_keeps_shards_and_refuses_another_plan(built, tmp_path):
    ds, ref = built
    out = tmp_path / "cache"
    shutil.copytree(ref, out)
    px = out / pixel_dir_name(SIZE, "bicubic")
    (px / CACHE_MANIFEST).unlink()  # as if killed before the end: shard 2 and the manifest missing
    (px / shard_name(2)).unlink()
    mtime = (px / shard_name(0)).stat().st_mtime_ns
    build_cache(ds, demo_teacher(ds.classes), out, OPTIONS, pixels=PixelOptions((SIZE,)), num_workers=1,
                progress=False)
    assert (px / shard_name(0)).stat().st_mtime_ns == mtime
    for f in sorted((ref / px.name).glob("shard-*")):
        assert (px / f.name).read_bytes() == f.read_bytes()
    a, b = (json.loads((d / CACHE_MANIFEST).read_text()) for d in (ref / px.name, px))
    a.pop("created"), b.pop("created")
    assert a == b

    plan = json.loads((px / CACHE_BUILD_PLAN).read_text())
    plan["views"]["seed"] = 99
    (px / CACHE_BUILD_PLAN).write_text(json.dumps(plan))
    (px / CACHE_MANIFEST).unlink()
    with pytest.raises(DistillError, match=r"different plan.*views\.seed: 99 vs 4"):
        build_cache(ds, demo_teacher(ds.classes), out, OPTIONS, pixels=PixelOptions((SIZE,)), num_workers=0,
                    progress=False)


def test_parse_sizes():
    assert parse_sizes("224") == [(224, 224)]
    assert parse_sizes("224x192, 160") == [(224, 192), (160, 160)]
    for bad in ("big", "0", "224x"):
        with pytest.raises(DistillError, match="--store-pixels"):
            parse_sizes(bad)
