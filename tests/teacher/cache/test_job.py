"""The one build entry, ``run_cache_build(CacheBuildConfig)``: the bytes of the lower-level builder, with
a teacher it makes or one it is given (benchmarks that time the bare teacher hold theirs)."""
from __future__ import annotations

import shutil

import pytest

from distill.errors import DistillError
from distill.teacher.cache import CacheBuildConfig, PixelOptions, run_cache_build
from distill.teacher.cache.pixels import build_pixel_store, pixel_dir_name
from tests.teacher.cache.common import SETTINGS, assert_same_cache, demo_teacher


def _config(tree, out, **kw) -> CacheBuildConfig:
    return CacheBuildConfig(data=tree, out=out, arch="distill-demo-vit", pretrained="none", options=SETTINGS,
                            workers=0, progress=False, device="cpu", **kw)


def test_the_entry_writes_the_builders_bytes(tree, reference, tmp_path):
    """A pure move (benchmarks build through the entry now): the same shards, text head and manifest."""
    manifest = run_cache_build(_config(tree, tmp_path / "c"))
    assert manifest is not None and manifest.rows == 2 * 30
    assert_same_cache(reference, tmp_path / "c")


def test_the_entry_takes_an_already_loaded_teacher(tree, dataset, reference, tmp_path):
    teacher = demo_teacher(dataset.classes)
    run_cache_build(_config(tree, tmp_path / "c"), teacher=teacher)
    assert_same_cache(reference, tmp_path / "c")
    # the store the entry adds to a complete cache is the lower-level builder's, byte for byte
    run_cache_build(_config(tree, tmp_path / "c", pixels=PixelOptions(((16, 16),))), teacher=teacher)
    own = tmp_path / "own"
    shutil.copytree(reference, own, ignore=shutil.ignore_patterns("pixels-*"))
    build_pixel_store(dataset, own, (16, 16), "bicubic", num_workers=0, progress=False)
    name = pixel_dir_name((16, 16), "bicubic")
    shards = sorted((own / name).glob("shard-*.safetensors"))
    assert shards
    for shard in shards:
        assert shard.read_bytes() == (tmp_path / "c" / name / shard.name).read_bytes()


def test_the_entry_refuses_a_teacher_the_config_does_not_name(tree, dataset, tmp_path):
    with pytest.raises(DistillError, match="the teacher given is distill-demo-vit / None, the config names "
                                           "ViT-B-32 / None") as e:
        run_cache_build(CacheBuildConfig(data=tree, out=tmp_path / "c", arch="ViT-B-32", pretrained="none",
                                         progress=False), teacher=demo_teacher(dataset.classes))
    assert "\n" not in str(e.value) and not (tmp_path / "c").exists()
