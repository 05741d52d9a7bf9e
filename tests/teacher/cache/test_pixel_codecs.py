"""Compressed pixel stores (``--pixel-codec jpeg|webp``): close to raw, smaller, refused in one line when damaged."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from distill.data.folder import DomainFolder
from distill.errors import DistillError
from distill.records import CACHE_BUILD_PLAN, CACHE_MANIFEST
from distill.teacher.cache import (
    CacheOptions,
    PixelOptions,
    TeacherCache,
    ViewConfig,
    build_cache,
    build_pixel_store,
    find_pixel_store,
    pixel_dir_name,
    shard_name,
)
from distill.teacher.cache.mapped import read_header
from distill.teacher.cache.pixel_codecs import check_codec
from tests.teacher.cache.common import demo_teacher

SIZE = (40, 48)  # not square: a swapped H/W shows
OPTIONS = CacheOptions(views=2, seed=1, augment=ViewConfig(scale=(0.4, 1.0), hflip=0.5), batch_size=8, shard_size=4)


def _smooth_tree(root):
    """12 photo-like PNGs (colour gradients + mild noise; pure noise is no image a codec is made for)."""
    rng = np.random.default_rng(0)
    for d in ("a", "b"):
        for c in ("x", "y"):
            (root / d / c).mkdir(parents=True)
            for i in range(3):
                h, w = (int(v) for v in rng.integers(56, 96, 2))
                yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
                f, ph = rng.uniform(0.02, 0.12, 3), rng.uniform(0, 6, 3)
                img = np.stack([np.sin(f[0] * xx + ph[0]), np.cos(f[1] * yy + ph[1]),
                                np.sin(f[2] * (xx + yy) + ph[2])], -1) * 90 + 128
                img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / d / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """One cache with its raw store, and a copy of it (no raw store) per compressed codec."""
    ds = DomainFolder(_smooth_tree(tmp_path_factory.mktemp("codec") / "data"))
    raw = build_cache(ds, demo_teacher(ds.classes), tmp_path_factory.mktemp("codec_raw") / "cache", OPTIONS,
                      pixels=PixelOptions((SIZE,)), num_workers=0, progress=False)
    out = {"raw": raw}
    for codec in ("jpeg", "webp"):
        c = tmp_path_factory.mktemp(f"codec_{codec}") / "cache"
        shutil.copytree(raw, c, ignore=shutil.ignore_patterns("pixels-*"))
        build_pixel_store(ds, c, SIZE, "bicubic", codec=codec, quality=90, num_workers=0, progress=False)
        out[codec] = c
    return ds, out


def _open(cache_dir):
    cache = TeacherCache.open(cache_dir)
    return cache, *find_pixel_store(cache, SIZE, "bicubic")


def _bytes(cache_dir) -> int:
    return sum(p.stat().st_size for p in (cache_dir / pixel_dir_name(SIZE, "bicubic")).glob("shard-*"))


@pytest.mark.parametrize("codec", ["jpeg", "webp"])
def test_compressed_store_decodes_close_to_raw_and_is_smaller(stores, codec):
    ds, dirs = stores
    cache, raw, _ = _open(dirs["raw"])
    _, store, line = _open(dirs[codec])
    assert store.codec == codec and store.quality == 90 and len(store) == len(raw) == len(cache) == 24
    assert f"{codec} q90" in line and "lossy" in line and "no decoding" not in line
    r = cache.rows
    errors = []
    for s, v in zip(r["sample_index"].tolist(), r["view"].tolist()):
        a, b = raw.get(s, v), store.get(s, v)
        assert b.dtype == torch.uint8 and b.shape == a.shape == (3, *SIZE)
        errors.append((a.float() - b.float()).abs().mean().item() / 255)
    # lossy, and close: q90 on these smooth images is ~1/255 off; 8/255 leaves libjpeg/libwebp builds room
    assert max(errors) < 8 / 255 and sum(errors) > 0
    assert _bytes(dirs[codec]) < _bytes(dirs["raw"])


def test_manifest_records_the_codec_and_raw_stays_as_before(stores):
    _, dirs = stores
    m = json.loads((dirs["jpeg"] / pixel_dir_name(SIZE, "bicubic") / CACHE_MANIFEST).read_text())
    assert (m["codec"], m["quality"], m["format_version"]) == ("jpeg", 90, 2)
    raw = json.loads((dirs["raw"] / pixel_dir_name(SIZE, "bicubic") / CACHE_MANIFEST).read_text())
    assert raw["format_version"] == 1 and "codec" not in raw and "quality" not in raw  # readable by older distill


def test_another_codec_in_the_folder_is_refused(stores, tmp_path):
    ds, dirs = stores
    c = tmp_path / "cache"
    shutil.copytree(dirs["jpeg"], c)
    for codec, quality, found in (("raw", None, "jpeg q90"), ("jpeg", 75, "jpeg q90"), ("webp", 90, "jpeg q90")):
        with pytest.raises(DistillError, match=f"a {found} pixel store is here") as e:
            build_pixel_store(ds, c, SIZE, "bicubic", codec=codec, quality=quality, num_workers=0, progress=False)
        assert "\n" not in str(e.value) and "remove that folder" in str(e.value)
    (c / pixel_dir_name(SIZE, "bicubic") / CACHE_MANIFEST).unlink()  # an unfinished one: refused too
    with pytest.raises(DistillError, match=f"{CACHE_BUILD_PLAN}: a jpeg q90 pixel store is here, this run asks for raw"):
        build_pixel_store(ds, c, SIZE, "bicubic", num_workers=0, progress=False)


def _copy(dirs, tmp_path):
    c = tmp_path / "cache"
    shutil.copytree(dirs["jpeg"], c)
    return c, c / pixel_dir_name(SIZE, "bicubic") / shard_name(1)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_jpeg_shard_is_one_line_naming_it(stores, tmp_path, damage):
    _, dirs = stores
    c, shard = _copy(dirs, tmp_path)
    data = bytearray(shard.read_bytes())
    if damage == "flip":
        data[-50] ^= 0xFF  # inside the last row's JPEG: the safetensors header still parses
    shard.write_bytes(bytes(data if damage == "flip" else data[: len(data) // 2]))
    with pytest.raises(DistillError) as e:
        _open(c)
    msg = str(e.value)
    assert "\n" not in msg and str(shard) in msg and "--pixel-codec jpeg --pixel-quality 90" in msg


def test_a_row_that_does_not_decode_is_one_line_naming_its_shard(stores, tmp_path):
    """Bytes changed behind the verify-once record (e.g. rot with the mtime kept): the decode names the shard."""
    _, dirs = stores
    c, shard = _copy(dirs, tmp_path)
    cache, store, _ = _open(c)  # verified and recorded
    start, header = read_header(shard, "")
    at = start + header["data"]["data_offsets"][0]  # row 0's first byte (offsets[0] == 0)
    data = bytearray(shard.read_bytes())
    assert data[at:at + 2] == b"\xff\xd8"  # the JPEG start-of-image marker
    data[at:at + 2] = b"\x00\x00"
    shard.write_bytes(bytes(data))
    store._handles.clear()  # a fresh map of the changed file, as a new worker would make
    r = cache.rows
    s, v = next((int(s), int(v)) for s, v in zip(r["sample_index"], r["view"])
                if int(store._shard[int(s) * 2 + int(v)]) == 1 and int(store._row[int(s) * 2 + int(v)]) == 0)
    with pytest.raises(DistillError) as e:
        store.get(s, v)
    msg = str(e.value)
    assert "\n" not in msg and str(shard) in msg and "row 0 does not decode as jpeg" in msg


def test_check_codec():
    assert check_codec("raw", None) == ("raw", None)
    assert check_codec("jpeg", None) == ("jpeg", 90) and check_codec("webp", 75) == ("webp", 75)
    for codec, q, match in (("png", None, "'png' is not one of raw, jpeg, webp"), ("jpeg", 0, "1..100"),
                            ("jpeg", 101, "1..100"), ("raw", 80, "not raw")):
        with pytest.raises(DistillError, match=match):
            check_codec(codec, q)
    assert PixelOptions(((8, 8),), codec="webp").quality == 90
    with pytest.raises(DistillError, match="--pixel-codec"):
        PixelOptions(((8, 8),), codec="gif")
