"""``run.select_on: teacher_agreement``: the best epoch is the one whose student agrees most with the cached
teacher on the unlabeled pool, measured without reading a label.

- Driven by scripted evaluators, selection keeps the agreement-best epoch (not the validation-best one),
  metrics.csv gets a ``teacher_agreement`` column and summary.json says ``selected_on: teacher_agreement``.
- The agreement is the cache's view-0 top-1 against the student's: a constant predictor agrees exactly as
  often as the cache's view-0 logits name its class; the pixel store and the decode path give the same
  pixels; the ranks' shares add up to the whole pool, and two gloo ranks return one process's counts.
- No label is read: with every sample's label raising on access and the cache's label column scrambled,
  the counts are identical.
- A run without a pool keeps source validation (and no new column); asking for agreement without a pool,
  an unknown value and resuming under another ``select_on`` are one-line errors.
"""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from distill.config import load_train_config
from distill.data import DomainFolder
from distill.data.folder import Sample
from distill.data.sample_table import SPLITS, SampleColumns, SampleTable
from distill.errors import DistillError
from distill.evaluate import DomainEvaluator
from distill.student.model import Student, default_spec
from distill.teacher import Teacher
from distill.teacher.cache import CacheOptions, PixelOptions, build_cache
from distill.train import Trainer, build, train
from distill.train.agreement import PoolAgreement
from distill.train.data import TrainImages
from distill.train.selection import Selection, make_selection
from distill.utils.runtime import Dist
from tests.gloo import free_port
from tests.shapes import CLASSES, make_shapes_root

SOURCE, TARGET = ["red"], ["green", "blue"]
SIZE = 16


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(data root, cache of every domain with 2 views and a raw pixel store at the student's size)."""
    root = make_shapes_root(tmp_path_factory.mktemp("agree_data"), SOURCE + TARGET, per_class=6)
    ds = DomainFolder(root, test_fraction=0.3, val_fraction=0.2)
    torch.manual_seed(0)
    teacher = Teacher("distill-demo-vit", None, ds.classes, ["a photo of a {}."])
    interp = default_spec("test_resnet", CLASSES, SIZE).interpolation
    cache = build_cache(ds, teacher, tmp_path_factory.mktemp("agree_cache") / "c", CacheOptions(views=2, seed=3),
                        pixels=PixelOptions(sizes=((SIZE, SIZE),), interpolation=interp), num_workers=0,
                        progress=False)
    return root, cache


def _cfg(world, out: Path, pool: bool = True, select_on: str | None = "teacher_agreement", epochs: int = 3,
         **run) -> dict:
    root, cache = world
    data = {"root": str(root), "source": SOURCE, "target": TARGET, "test_fraction": 0.3, "val_fraction": 0.2}
    if pool:
        data["unlabeled"] = TARGET
    return {"data": data, "cache": str(cache), "student": {"arch": "test_resnet", "input_size": SIZE},
            "strategy": {"name": "kd"}, "optim": {"epochs": epochs, "batch_size": 4, "warmup_epochs": 0},
            "run": {"out": str(out), "workers": 0, "progress": False,
                    **({"select_on": select_on} if select_on else {}), **run}}


def _scripted(monkeypatch, val: list[float], agreement: list[float]) -> dict[str, list]:
    """Evaluators that return ``val[e]`` / ``agreement[e]`` at epoch e (0.5 on test); records their calls."""
    calls: dict[str, list] = {"val": [], "test": [], "agreement": []}

    def accuracy(self, predict, device="cpu"):
        calls[self.split].append(len(calls["val"]))
        value = val[len(calls["val"]) - 1] if self.split == "val" else 0.5
        return {d: value for d in self.present}

    def agree(self, predict, device="cpu"):
        calls["agreement"].append(len(calls["agreement"]))
        return agreement[len(calls["agreement"]) - 1]

    monkeypatch.setattr(DomainEvaluator, "accuracy", accuracy)
    monkeypatch.setattr(PoolAgreement, "__call__", agree)
    return calls


def _rows(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "metrics.csv").open()))


def test_selects_the_epoch_the_student_agrees_most_with_the_teacher(world, tmp_path, monkeypatch):
    # validation is best at epoch 1, agreement at epoch 2 (ties keep the first: epoch 4 does not replace it)
    calls = _scripted(monkeypatch, val=[0.9, 0.1, 0.5, 0.2], agreement=[0.2, 0.8, 0.5, 0.8])
    summary = train(load_train_config(None, base=_cfg(world, tmp_path / "run", epochs=4, eval_every=3)))
    assert summary.best_epoch == 2 and summary.selected_on == "teacher_agreement"
    assert summary.selected_value == 0.8 and summary.teacher_agreement == 0.8
    assert summary.source_val_acc == 0.1, "the selected epoch's source validation accuracy, still reported"
    assert calls["test"] == [1, 2, 3, 4], "test runs on each new agreement best (1, 2), periodically (3), last (4)"
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["selected_on"] == "teacher_agreement" and written["teacher_agreement"] == 0.8
    prov = json.loads((tmp_path / "run" / "checkpoints" / "best" / "student.json").read_text())["provenance"]
    assert prov["epoch"] == 2
    rows = _rows(tmp_path / "run")
    assert [float(r["teacher_agreement"]) for r in rows] == [0.2, 0.8, 0.5, 0.8]
    assert [float(r["source_val_acc"]) for r in rows] == [0.9, 0.1, 0.5, 0.2]


def test_a_run_without_a_pool_keeps_source_validation(world, tmp_path, monkeypatch):
    calls = _scripted(monkeypatch, val=[0.2, 0.9, 0.5], agreement=[])
    summary = train(load_train_config(None, base=_cfg(world, tmp_path / "run", pool=False, select_on=None)))
    assert summary.best_epoch == 2 and summary.selected_on == "source_val" and summary.selected_value == 0.9
    assert summary.teacher_agreement is None and calls["agreement"] == []
    assert "teacher_agreement" not in _rows(tmp_path / "run")[0]
    assert "teacher_agreement" not in json.loads((tmp_path / "run" / "summary.json").read_text())


def test_a_pool_run_selects_on_source_validation_unless_asked(world, tmp_path, monkeypatch):
    calls = _scripted(monkeypatch, val=[0.2, 0.9, 0.5], agreement=[0.9, 0.1, 0.1])
    summary = train(load_train_config(None, base=_cfg(world, tmp_path / "run", select_on=None)))
    assert summary.best_epoch == 2 and summary.selected_on == "source_val" and calls["agreement"] == []


def _agreement(world, tmp_path, **run) -> PoolAgreement:
    trainer = Trainer(build(load_train_config(None, base=_cfg(world, tmp_path / "run", **run))))
    assert trainer.agreement is not None and len(trainer.agreement) == len(trainer.setup.unlabeled) > 0
    return trainer.agreement


def _student():
    """A fixed random student (its predictions are what the agreement counts)."""
    torch.manual_seed(0)
    return Student(default_spec("test_resnet", CLASSES, SIZE)).eval()


class _Teacher:
    """A cache whose view-v logits of sample i name class (i + v) % C; other columns pass through."""

    def __init__(self, cache):
        self.cache, self.views = cache, []

    def lookup(self, sample_index, view, outputs=True):
        self.views += view.tolist()
        rows = dict(self.cache.lookup(sample_index, view, outputs))
        rows["logits"] = torch.nn.functional.one_hot((sample_index + view) % len(CLASSES), len(CLASSES)).float()
        return rows


def test_agreement_is_top1_against_the_caches_view_0(world, tmp_path):
    agreement = _agreement(world, tmp_path)
    pool = torch.tensor([int(i) for i in agreement.images.items.sample])
    teacher = _Teacher(agreement.cache)
    agreement.cache = teacher
    for k in range(len(CLASSES)):  # a student that always says class k agrees where view 0 says k
        constant = lambda x, k=k: torch.nn.functional.one_hot(torch.full((len(x),), k), len(CLASSES)).float()  # noqa: E731
        assert agreement.counts(constant) == (int((pool % len(CLASSES) == k).sum()), len(pool))
        assert agreement(constant) == pytest.approx(float((pool % len(CLASSES) == k).float().mean()))
    assert set(teacher.views) == {0}


def test_withheld_classes_compare_the_students_columns_only(world, tmp_path):
    """data.withhold_classes: the teacher's top-1 is taken over the student's columns (here classes 0 and 2)."""
    from distill.data.classes import ClassColumns

    agreement = _agreement(world, tmp_path)
    agreement.cache, agreement.columns = _Teacher(agreement.cache), ClassColumns([0, 2], len(CLASSES))
    pool = torch.tensor([int(i) for i in agreement.images.items.sample]) % len(CLASSES)
    for k, teacher_says in ((0, (pool == 0) | (pool == 1)), (1, pool == 2)):  # class 1's one-hot ties: column 0
        def constant(x, k=k):
            return torch.nn.functional.one_hot(torch.full((len(x),), k), 2).float()
        assert agreement.counts(constant) == (int(teacher_says.sum()), len(pool))


def test_the_pixel_store_and_the_decode_path_agree(world, tmp_path):
    stored = _agreement(world, tmp_path / "a")
    assert stored.images.pixels is not None
    d = stored.images  # the same items, decoded from the image files
    plain = TrainImages(d.dataset, d.items, d.size, d.interpolation, d.view_cfg, d.view_seed, uint8=True)
    assert all(torch.equal(plain[i][0], d[i][0]) for i in range(len(d))), "the store holds the decoded view 0"
    decoding = PoolAgreement(plain, stored.cache, stored.columns, stored.mean, stored.std)
    assert decoding.counts(_student()) == stored.counts(_student())


def test_the_ranks_shares_add_up_to_the_pool(world, tmp_path, monkeypatch):
    import distill.train.agreement as mod

    agreement = _agreement(world, tmp_path)
    monkeypatch.setattr(mod, "all_reduce_sum", lambda t, d: t)  # each rank's own count
    for student in _predictors():
        whole = agreement.counts(student)
        parts = [PoolAgreement(agreement.images, agreement.cache, agreement.columns, agreement.mean, agreement.std,
                               batch_size=3, dist=Dist(rank=r, world=2)).counts(student) for r in range(2)]
        assert sum(p[0] for p in parts) == whole[0] and all(p[1] == whole[1] for p in parts)


class _Poisoned(Sample):
    """A sample whose label may not be read."""

    @property
    def label(self):
        raise AssertionError("the agreement read a label")


def _poison(sample: Sample) -> Sample:
    out = object.__new__(_Poisoned)
    for f in dataclasses.fields(Sample):
        if f.name != "label":
            object.__setattr__(out, f.name, getattr(sample, f.name))
    return out


class _PoisonedColumns(SampleColumns):
    """Sample columns whose label column, and every sample's label, may not be read."""

    @property
    def label(self):
        raise AssertionError("the agreement read a label column")

    @label.setter
    def label(self, value):
        self._label = value

    def sample(self, p: int) -> Sample:
        return _poison(Sample(int(self.index[p]), self.relpath(p), self.domain_names[self.domain[p]],
                              self.class_names[self.klass[p]], -1, SPLITS[self.split[p]], int(self.size[p])))


def test_no_label_is_read(world, tmp_path):
    """Every sample's label raises when read, and the cache's label column is scrambled: same counts,
    from a trainer built on the poisoned data (construction reads no label either)."""
    cfg = load_train_config(None, base=_cfg(world, tmp_path / "clean"))
    clean = Trainer(build(cfg)).agreement
    expected = [clean.counts(p) for p in _predictors()]
    assert any(agree for agree, _ in expected), "some student must agree with the teacher somewhere"

    setup = build(load_train_config(None, base=_cfg(world, tmp_path / "poisoned")))
    trainer = Trainer(setup)  # labelled images need their labels for training: poison after construction
    c = setup.dataset.samples.columns
    poisoned = _PoisonedColumns(c.index, c.text, c.offsets, c.domain, c.domain_names, c.klass, c.class_names, c.label,
                                c.split, c.size)
    setup.dataset.samples = SampleTable(poisoned)
    setup.unlabeled = SampleTable(poisoned, setup.unlabeled.rows())
    cache = setup.caches[0]
    g = torch.Generator().manual_seed(0)
    cache.index["label"] = torch.randint(0, len(CLASSES), cache.index["label"].shape, generator=g).to(
        cache.index["label"].dtype)
    _, rebuilt = make_selection(setup, trainer.strategy, trainer.pixel_store)  # built from the poisoned pool
    assert [rebuilt.counts(p) for p in _predictors()] == expected
    _, decoded = make_selection(setup, trainer.strategy, lambda: (None, ""))  # decoding the poisoned images
    assert [decoded.counts(p) for p in _predictors()] == expected


def test_agreement_without_a_pool_is_one_line(world, tmp_path):
    with pytest.raises(DistillError, match=r"^run.select_on=teacher_agreement: the run has no unlabeled pool") as e:
        Trainer(build(load_train_config(None, base=_cfg(world, tmp_path / "run", pool=False))))
    assert "\n" not in str(e.value)


def test_an_unknown_select_on_is_one_line(world, tmp_path):
    with pytest.raises(DistillError, match=r"run.select_on") as e:
        load_train_config(None, base=_cfg(world, tmp_path / "run", select_on="target_acc"))
    assert "\n" not in str(e.value) and "target_acc" in str(e.value)
    with pytest.raises(DistillError, match=r"^--set run.select_on=best: 'run.select_on'"):
        load_train_config(None, ["run.select_on=best"], base=_cfg(world, tmp_path / "run", select_on=None))


def test_resuming_under_another_select_on_is_refused():
    selection = Selection("teacher_agreement")
    with pytest.raises(DistillError, match="selected on source_val; resume with run.select_on=source_val"):
        selection.restore({"best": 0.5})  # a checkpoint from before select_on: source validation
    selection.restore({"best": 0.25, "select_on": "teacher_agreement"})
    assert selection.best == 0.25 and selection.state() == {"best": 0.25, "select_on": "teacher_agreement"}


def _pool_agreement(root: str, cache_dir: str, dist: Dist | None = None) -> PoolAgreement:
    from distill.data.classes import ClassColumns
    from distill.teacher.cache import TeacherCache
    from distill.train.agreement import pool_view0

    ds = DomainFolder(root, test_fraction=0.3, val_fraction=0.2)
    cache = TeacherCache.open(cache_dir)
    spec = default_spec("test_resnet", CLASSES, SIZE)
    images = pool_view0(ds, ds.select(TARGET, "train"), cache, spec.input_size, spec.interpolation)
    return PoolAgreement(images, cache, ClassColumns(None, len(CLASSES)), spec.mean, spec.std, batch_size=4,
                         dist=dist)


def _predictors() -> list:
    """The random student and one constant student per class (the teacher's class agrees on every image)."""
    def constant(k):
        return lambda x: torch.nn.functional.one_hot(torch.full((len(x),), k), len(CLASSES)).float()

    return [_student(), *(constant(k) for k in range(len(CLASSES)))]


def _two_rank_worker(rank: int, root: str, cache_dir: str, port: int, out: str) -> None:
    import torch.distributed as tdist
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        agreement = _pool_agreement(root, cache_dir, Dist(rank, 2))
        torch.save([agreement.counts(p) for p in _predictors()], f"{out}.{rank}")
    finally:
        tdist.destroy_process_group()


def test_two_gloo_ranks_count_what_one_process_counts(world, tmp_path):
    import torch.multiprocessing as mp
    port = free_port()
    mp.spawn(_two_rank_worker, args=(str(world[0]), str(world[1]), port, str(tmp_path / "counts")), nprocs=2)
    agreement = _pool_agreement(str(world[0]), str(world[1]))
    single = [agreement.counts(p) for p in _predictors()]
    assert sum(agree for agree, _ in single[1:]) == single[0][1] > 0  # each image agrees with one constant
    for rank in (0, 1):
        assert torch.load(tmp_path / f"counts.{rank}") == single  # every rank returns the summed counts
