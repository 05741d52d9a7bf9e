"""A stand-in teacher's pool binds only the data it was drawn from (QA I, 3): reused on other data (none of
its domain folders), a cache build holds no image out and says so; on its own data the pool is applied and named."""
from __future__ import annotations

from pathlib import Path

import pytest

from distill.data import DomainFolder
from distill.teacher.cache.job import CacheBuildConfig, cache_dataset
from distill.teacher.pool import check_teacher_pool
from tests.shapes import make_shapes_root
from tests.teacher.test_pool import _stand_in


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("pooldata")
    return (make_shapes_root(base / "teachers", ["red", "green"], per_class=10),
            make_shapes_root(base / "other", ["blue"], per_class=10))


def _config(data: Path, ckpt: Path, tmp: Path) -> CacheBuildConfig:
    return CacheBuildConfig(data=data, out=tmp / "c", arch="distill-demo-vit", pretrained=str(ckpt))


def test_a_pool_from_other_data_holds_nothing_out(roots, tmp_path):
    own, other = roots
    ckpt = _stand_in(tmp_path / "t", DomainFolder(own, pretrain_fraction=0.3))
    dataset = cache_dataset(_config(other, ckpt, tmp_path))
    assert dataset.pretrain_fraction == 0.0 and not dataset.select(split="pretrain")
    check_teacher_pool(ckpt, DomainFolder(other), "a cache")  # not refused: the pool is not this data's


def test_the_pool_of_the_teachers_own_data_still_applies(roots, tmp_path):
    own, _ = roots
    ckpt = _stand_in(tmp_path / "t", DomainFolder(own, pretrain_fraction=0.3))
    dataset = cache_dataset(_config(own, ckpt, tmp_path))
    assert dataset.pretrain_fraction == 0.3 and dataset.select(split="pretrain")


def test_the_cache_build_names_the_pool_or_says_it_is_from_other_data(roots, tmp_path):
    from distill.teacher.pool import pool_line  # the line each cache build prints

    own, other = roots
    ckpt = _stand_in(tmp_path / "t", DomainFolder(own, pretrain_fraction=0.3))
    mine = DomainFolder(own, pretrain_fraction=0.3)
    held = len(mine.select(split="pretrain"))
    line = pool_line(ckpt, mine)
    assert line is not None and line.startswith(f"teacher pool: {held} image(s) held out") and "0.3" in line
    line = pool_line(ckpt, DomainFolder(other))
    assert line is not None and line.startswith("teacher pool: not applied") and "from other data" in line
    assert pool_line(None, mine) is None


def test_cache_inspect_names_the_pool(roots, tmp_path, capsys):
    from distill.cli import main as cli  # lazy: as the CLI loads
    from distill.teacher import Teacher
    from distill.teacher.cache import CacheOptions, build_cache

    own, _ = roots
    ds = DomainFolder(own, pretrain_fraction=0.3)
    teacher = Teacher("distill-demo-vit", None, ds.classes, ["a photo of a {}."])
    cache = build_cache(ds, teacher, tmp_path / "c", CacheOptions(shard_size=64), num_workers=0, progress=False)
    capsys.readouterr()
    assert cli(["cache", "inspect", str(cache)]) == 0
    assert ("split     test_fraction 0.3, val_fraction 0.1, split_seed 0; teacher pool: pretrain_fraction 0.3 of "
            "each domain held out, never cached") in capsys.readouterr().out


def test_the_teachers_images_under_renamed_domain_folders_get_a_warning(roots, tmp_path):
    """Review 5 #1: the pool is matched by domain folder name; the teacher's own data with renamed domain folders
    (same classes) would pass as "other data" and its pool would land in the students' splits: the line warns."""
    import shutil

    from distill.teacher.pool import pool_line

    own, other = roots
    ckpt = _stand_in(tmp_path / "t", DomainFolder(own, pretrain_fraction=0.3))
    renamed = tmp_path / "renamed"
    shutil.copytree(own, renamed)
    for name in ("red", "green"):
        (renamed / name).rename(renamed / name.capitalize())
    line = pool_line(ckpt, DomainFolder(renamed))
    assert line is not None and line.startswith("teacher pool: not applied")
    assert "the data has the teacher's classes but none of its pool's domains (" in line and "rename them back" in line
