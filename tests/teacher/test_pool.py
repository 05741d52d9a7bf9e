"""The pool guard: a cache build or a training run refuses a split rule that would move the stand-in
teacher's pretraining images into the students' splits."""
from __future__ import annotations

from pathlib import Path

import pytest

from distill.config import load_train_config
from distill.data import DomainFolder
from distill.errors import DistillError
from distill.records import TeacherManifest, TeacherPool, TeacherTrainingData
from distill.teacher import Teacher
from distill.teacher.cache import CacheOptions, TeacherCache, build_cache
from distill.teacher.pool import check_teacher_pool, pool_of, teacher_pool
from distill.train import build
from tests.shapes import make_shapes_root
from tests.train.test_trainer import _config


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_shapes_root(tmp_path_factory.mktemp("pool"), ["red", "green", "blue"], per_class=10)


def _stand_in(folder: Path, dataset: DomainFolder) -> Path:
    """A checkpoint file with a teacher.json beside it naming ``dataset``'s pool (the guard reads only that)."""
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = folder / "open_clip_model.safetensors"
    ckpt.write_bytes(b"not read by the guard")
    TeacherManifest(
        format="distill-demo-teacher/1", arch="distill-demo-vit", checkpoint=ckpt.name, checkpoint_sha256="0" * 64,
        templates=["a photo of a {}."], classes=dataset.classes, domains=dataset.domains,
        dataset=TeacherTrainingData(root=str(dataset.root), fingerprint=dataset.fingerprint(), train_images=1,
                                    test_fraction=dataset.test_fraction, split_seed=dataset.split_seed,
                                    pretrain=pool_of(dataset)),
        training={}, model_config={}, loss_history=[1.0], zero_shot={"train": 0.5}, train_seconds=1.0,
        versions={}, run_key="k").write(folder)
    return ckpt


def test_the_pool_is_recorded_and_read_back(root, tmp_path):
    ds = DomainFolder(root, pretrain_fraction=0.3)
    ckpt = _stand_in(tmp_path / "t", ds)
    pool, manifest = teacher_pool(ckpt)
    assert pool == TeacherPool(fraction=0.3, split_seed=0, test_fraction=0.3, val_fraction=0.1,
                               images=len(ds.select(split="pretrain")))
    assert pool.images > 0 and manifest == tmp_path / "t" / "teacher.json"
    assert teacher_pool(None) is None and teacher_pool("ViT-B-32") is None  # a downloaded CLIP names no pool
    with pytest.raises(DistillError, match="pass --pretrain-fraction"):
        pool_of(DomainFolder(root))


def test_the_same_pool_passes_and_another_is_refused_naming_the_fields(root, tmp_path):
    ckpt = _stand_in(tmp_path / "t", DomainFolder(root, pretrain_fraction=0.3))
    check_teacher_pool(ckpt, DomainFolder(root, pretrain_fraction=0.3, test_fraction=0.2), "a cache")  # test/val: free
    with pytest.raises(DistillError) as err:
        check_teacher_pool(ckpt, DomainFolder(root), "a cache")
    text = str(err.value)
    assert text.startswith("the teacher was pretrained on 30% of each domain") and "\n" not in text
    assert "a cache with pretrain_fraction 0 " in text and "students' train/test" in text
    assert "use the teacher's pretrain_fraction 0.3 and split_seed 0" in text and "and split_seed 0 would" not in text
    with pytest.raises(DistillError, match=r"a cache with split_seed 1 would put"):
        check_teacher_pool(ckpt, DomainFolder(root, pretrain_fraction=0.3, split_seed=1), "a cache")


def test_a_cache_build_refuses_another_pool(root, tmp_path):
    ckpt = _stand_in(tmp_path / "t", DomainFolder(root, pretrain_fraction=0.3))
    teacher = Teacher("distill-demo-vit", None, DomainFolder(root).classes, ["a photo of a {}."])
    teacher.pretrained = str(ckpt)  # the stand-in's checkpoint path, as a loaded teacher holds it
    with pytest.raises(DistillError, match="a cache with pretrain_fraction 0 would put its pretraining images"):
        build_cache(DomainFolder(root), teacher, tmp_path / "c", CacheOptions(), num_workers=0, progress=False)
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir()), "refused before anything is written"


def test_a_cache_never_holds_pool_rows_and_records_the_fraction(root, tmp_path):
    ds = DomainFolder(root, pretrain_fraction=0.3)
    teacher = Teacher("distill-demo-vit", None, ds.classes, ["a photo of a {}."])
    cache = build_cache(ds, teacher, tmp_path / "c", CacheOptions(shard_size=64), num_workers=0, progress=False)
    opened = TeacherCache.open(cache)
    assert opened.manifest.dataset.pretrain_fraction == 0.3
    pool = {s.index for s in ds.select(split="pretrain")}
    assert pool and len(opened) == len(ds.select()) and not pool & set(opened.rows["sample_index"].tolist())


def test_a_training_run_naming_the_stand_in_refuses_another_pool(root, tmp_path):
    ckpt = _stand_in(tmp_path / "t", DomainFolder(root, pretrain_fraction=0.3))
    cfg = _config(root, None, tmp_path / "run")
    cfg["teacher"] = {"arch": "distill-demo-vit", "pretrained": str(ckpt)}
    cfg["data"]["pretrain_fraction"] = 0.0  # unset, a run without a cache takes the teacher's pool (review 2, M1)
    with pytest.raises(DistillError, match="this run with pretrain_fraction 0 would put its pretraining images"):
        build(load_train_config(None, base=cfg))
