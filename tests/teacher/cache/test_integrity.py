"""Damaged pixel-store shards are refused in one line naming the shard and the rebuild command (issue "Scale" 8)."""
from __future__ import annotations

import os
import shutil

import pytest

from distill.errors import DistillError
from distill.teacher.cache import TeacherCache, find_pixel_store, pixel_dir_name, shard_name
from tests.teacher.cache.test_pixels import SIZE, built  # noqa: F401 (the module's fixture)


def _copy_with_damaged_pixels(out, tmp_path, damage):
    cache = tmp_path / "cache"
    shutil.copytree(out, cache)
    shard = cache / pixel_dir_name(SIZE, "bicubic") / shard_name(1)
    data = bytearray(shard.read_bytes())
    shard.write_bytes(damage(data))
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # a new file version whatever the clock's grain
    return cache, shard


def _flip(data: bytearray) -> bytes:
    data[-100] ^= 0xFF  # in the pixels: the header, and so the parse, are intact
    return bytes(data)


@pytest.mark.parametrize("damage", [_flip, lambda d: bytes(d[:len(d) // 3])], ids=["flipped", "truncated"])
def test_damaged_pixel_shard_is_refused(built, tmp_path, damage):  # noqa: F811
    """Flipped bytes used to train another model with rc 0; a truncated shard raised a raw SafetensorError."""
    _, out = built
    cache, shard = _copy_with_damaged_pixels(out, tmp_path, damage)
    with pytest.raises(DistillError) as e:
        find_pixel_store(TeacherCache.open(cache), SIZE, "bicubic")
    msg = str(e.value)
    assert "\n" not in msg and str(shard) in msg and "--store-pixels 20x24" in msg and "remove" in msg


def test_pixel_shards_are_hashed_once(built, tmp_path, monkeypatch):  # noqa: F811
    from distill.teacher.cache import mapped
    _, out = built
    cache = tmp_path / "cache"
    shutil.copytree(out, cache)
    hashed = []
    real = mapped._hash
    monkeypatch.setattr(mapped, "_hash", lambda p: hashed.append(p) or real(p))
    opened = TeacherCache.open(cache)
    for _ in range(3):
        assert find_pixel_store(opened, SIZE, "bicubic")[0] is not None
    assert len([p for p in hashed if p.parent.name.startswith("pixels-")]) == len(
        list((cache / pixel_dir_name(SIZE, "bicubic")).glob("shard-*")))
