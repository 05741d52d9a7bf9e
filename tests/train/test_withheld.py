"""data.withhold_classes: the student's classes are the others; withheld images train with label -1
(distillation only), the teacher's logits and text embeddings are cut to the student's columns, and
evaluation scores seen-class images only, with remapped labels."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from distill import strategies
from distill.config import load_train_config
from distill.errors import DistillError
from distill.evaluate import DomainEvaluator
from distill.strategies import Needs, Strategy
from distill.student.model import load_student
from distill.teacher.cache import TeacherCache
from distill.train import build
from distill.train.trainer import Trainer
from tests.train.test_trainer import _config

WITHHELD = "square"  # tests.shapes.CLASSES = circle, square, stripes


class _SeenKL(Strategy):
    """KL on the teacher's (sliced) logits + CE on labelled rows only: what the contract asks of every CE."""

    name = "_seen_kl"
    needs = Needs(cached_logits=True)
    seen: list = []

    def forward(self, batch):
        logits = self.student(batch.images)
        assert logits.shape == batch.teacher_logits.shape, "teacher logits are cut to the student's columns"
        kl = F.kl_div(F.log_softmax(logits, -1), F.softmax(batch.teacher_logits, -1), reduction="batchmean")
        keep = batch.labels >= 0
        ce = F.cross_entropy(logits[keep], batch.labels[keep]) if bool(keep.any()) else logits.sum() * 0
        type(self).seen.append((batch.sample_index.cpu(), batch.labels.cpu(), batch.teacher_logits.cpu(),
                                batch.view.cpu()))
        return {"loss": kl + ce, "kl": kl.detach(), "logits": logits.detach()}


@pytest.fixture
def seen_kl(monkeypatch):
    monkeypatch.setitem(strategies._REGISTRY, _SeenKL.name, _SeenKL)
    _SeenKL.seen = []
    return _SeenKL


def _withheld_config(tiny_root, tiny_cache, out, **over):
    cfg = _config(tiny_root, tiny_cache, out, optim__epochs=1, data__withhold_classes=[WITHHELD], **over)
    cfg["strategy"] = {"name": "_seen_kl"}
    return cfg


def test_an_epoch_labels_withheld_images_minus_one_and_slices_the_teacher(tmp_path, tiny_root, tiny_cache, seen_kl):
    cfg = _withheld_config(tiny_root, tiny_cache, tmp_path / "run")
    cfg["robust"] = {"pgd_eps": [], "corruptions": [], "max_images": 6}
    setup = build(load_train_config(None, base=cfg))
    classes = setup.dataset.classes
    assert setup.class_columns == [classes.index("circle"), classes.index("stripes")]
    ctx = setup.strategy.ctx
    cache = TeacherCache.open(tiny_cache)
    assert ctx.class_names == ["circle", "stripes"] and ctx.num_classes == 2
    assert torch.equal(ctx.text_embeddings.cpu(), cache.text_embeddings[setup.class_columns])
    assert torch.equal(ctx.all_text_embeddings.cpu(), cache.text_embeddings), "every name, the withheld one too"
    assert setup.strategy.student.spec.class_names == ["circle", "stripes"]

    summary = Trainer(setup).fit()
    label_of = {s.index: s.label for s in setup.dataset.select(None, None)}
    withheld_rows = 0
    for index, labels, teacher_logits, view in seen_kl.seen:
        for i, y in zip(index.tolist(), labels.tolist()):
            dataset_label = label_of[i]
            if classes[dataset_label] == WITHHELD:
                assert y == -1
                withheld_rows += 1
            else:
                assert ctx.class_names[y] == classes[dataset_label]
        full = cache.lookup(index, view)["logits"]
        assert torch.equal(teacher_logits, full[:, setup.class_columns])
    assert withheld_rows > 0, "withheld images stay in the training set"

    assert summary.withheld_classes == [WITHHELD]
    for domain, robust in summary.robust.domains.items():  # seen-class images only, as the evaluator scores
        first = setup.dataset.select([domain], "test")[:6]
        assert robust.n == sum(classes[s.label] != WITHHELD for s in first)
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["withheld_classes"] == [WITHHELD]
    best = load_student(tmp_path / "run" / "checkpoints" / "best")
    assert best.spec.class_names == ["circle", "stripes"]
    assert best.spec.provenance["withheld_classes"] == [WITHHELD]


def test_a_text_head_student_starts_from_and_keeps_the_teachers_seen_class_text(tmp_path, tiny_root, tiny_cache,
                                                                              seen_kl):
    cfg = _withheld_config(tiny_root, tiny_cache, tmp_path / "run", student__head="text")
    setup = build(load_train_config(None, base=cfg))
    cache = TeacherCache.open(tiny_cache)
    Trainer(setup).fit()
    best = load_student(tmp_path / "run" / "checkpoints" / "best")
    assert best.spec.head == "text"
    assert best.spec.logit_scale == pytest.approx(cache.manifest.teacher.logit_scale)
    assert torch.equal(best.text_head, cache.text_embeddings[setup.class_columns].float()), "a buffer: never trained"
    assert best.spec.provenance["templates"] == list(cache.manifest.templates)


def test_without_withheld_classes_nothing_changes(tmp_path, tiny_root, tiny_cache):
    cfg = _config(tiny_root, tiny_cache, tmp_path / "run", optim__epochs=1)
    setup = build(load_train_config(None, base=cfg))
    assert setup.class_columns is None and setup.strategy.ctx.num_classes == 3
    Trainer(setup).fit()
    assert "withheld_classes" not in json.loads((tmp_path / "run" / "summary.json").read_text())
    spec = json.loads((tmp_path / "run" / "checkpoints" / "best" / "student.json").read_text())
    assert "head" not in spec and "withheld_classes" not in spec["provenance"] and "templates" not in spec["provenance"]


def test_an_unknown_withheld_class_is_one_line_naming_it(tmp_path, tiny_root, tiny_cache):
    cfg = _config(tiny_root, tiny_cache, tmp_path / "run", data__withhold_classes=["hexagon"])
    with pytest.raises(DistillError, match="'hexagon' is not a class") as e:
        build(load_train_config(None, base=cfg))
    assert "\n" not in str(e.value)


def test_a_text_head_without_a_cache_is_refused(tmp_path, tiny_root):
    cfg = _config(tiny_root, None, tmp_path / "run", student__head="text")
    cfg["strategy"] = {"name": "erm"}
    with pytest.raises(DistillError, match="student.head=text needs"):
        build(load_train_config(None, base=cfg))


def test_the_evaluator_scores_seen_classes_with_remapped_labels(tiny_root):
    from distill.data import DomainFolder

    dataset = DomainFolder(tiny_root, test_fraction=0.3)
    columns = [dataset.classes.index("circle"), dataset.classes.index("stripes")]
    evaluator = DomainEvaluator(dataset, ["red"], lambda img: torch.zeros(3, 4, 4), class_columns=columns)
    test = dataset.select(["red"], "test")
    seen = [s for s in test if s.label in columns]
    circles = sum(dataset.classes[s.label] == "circle" for s in seen)
    always_first = evaluator(lambda x: torch.tensor([[1.0, 0.0]]).expand(len(x), 2))  # predicts column 0 = circle
    assert always_first["red"] == pytest.approx(circles / len(seen))
    always_second = evaluator(lambda x: torch.tensor([[0.0, 1.0]]).expand(len(x), 2))  # column 1 = stripes
    assert always_second["red"] == pytest.approx((len(seen) - circles) / len(seen))
    assert 0 < circles < len(seen) < len(test)
