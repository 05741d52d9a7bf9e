"""``fm`` (function matching): its loss on hand numbers, its options, and what it declares it needs."""
from __future__ import annotations

import math

import pytest
import torch

from distill.errors import DistillError
from distill.strategies import Batch, StrategyContext, create_strategy, get_strategy
from distill.strategies._teachers import TeacherEnsemble
from distill.strategies.losses import text_anchor_kl
from distill.student.model import Student, default_spec

LN3 = math.log(3)
CLASSES = ["a", "b"]
# student logits [0, 0] and [0, 2 ln 3]; teacher [2 ln 3, 0] and [0, 0]
STUDENT = torch.tensor([[0.0, 0.0], [0.0, 2 * LN3]])
TEACHER = torch.tensor([[2 * LN3, 0.0], [0.0, 0.0]])
# T = 1: row 0 KL([9/10, 1/10] || [1/2, 1/2]), row 1 KL([1/2, 1/2] || [1/10, 9/10]); batch mean
KL_T1 = (0.9 * math.log(1.8) + 0.1 * math.log(0.2) + 0.5 * math.log(5) + 0.5 * math.log(5 / 9)) / 2
# T = 2: the kd test's numbers, times T² = 4
KL_T2 = 4 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5) + 0.5 * math.log(2) + 0.5 * math.log(2 / 3)) / 2


def _fm(options: dict | None, monkeypatch, embed_dim: int | None = None):
    student = Student(default_spec("test_resnet", CLASSES, 16, embed_dim=embed_dim))
    strategy = create_strategy("fm", student, options, StrategyContext(2, CLASSES, embed_dim=embed_dim))
    monkeypatch.setattr(student, "forward", lambda x: STUDENT)
    return strategy, student


def _batch(labels) -> Batch:
    return Batch(torch.zeros(2, 3, 16, 16), torch.zeros(2, 3, 16, 16), labels=torch.tensor(labels),
                 teacher_logits=TEACHER)


def test_fm_is_kl_teacher_to_student_on_the_view_and_ignores_labels_by_default(monkeypatch):
    fm, _ = _fm(None, monkeypatch)
    assert KL_T1 == pytest.approx(0.43944, abs=1e-5)  # (0.368064 + 0.510826) / 2
    out = fm(_batch([0, 1]))
    assert float(out["loss"]) == pytest.approx(KL_T1, rel=1e-5) and "ce" not in out
    assert torch.equal(fm(_batch([-1, -1]))["loss"], out["loss"])  # alpha = 1: no label enters


def test_fm_alpha_and_temperature_mix_in_label_cross_entropy(monkeypatch):
    fm, _ = _fm({"temperature": 2.0, "alpha": 0.25}, monkeypatch)
    out = fm(_batch([0, -1]))  # row 1 has no label: CE is row 0's, -ln(1/2)
    assert float(out["match"]) == pytest.approx(KL_T2, rel=1e-5)
    assert float(out["ce"]) == pytest.approx(math.log(2), rel=1e-5)
    assert float(out["loss"]) == pytest.approx(0.25 * KL_T2 + 0.75 * math.log(2), rel=1e-5)
    mixed = _batch([0, 1])
    mixed.partner_labels, mixed.mix_lam = torch.tensor([1, 0]), torch.tensor([0.5, 1.0])
    # row 0: 0.5 CE(0) + 0.5 CE(1) = ln 2; row 1: CE(1) = -ln(9/10)
    assert float(fm(mixed)["ce"]) == pytest.approx((math.log(2) - math.log(0.9)) / 2, rel=1e-5)


def test_fm_feature_term_matches_the_projected_features_to_the_teacher_embedding():
    torch.manual_seed(0)
    student = Student(default_spec("test_resnet", CLASSES, 16, embed_dim=8))
    fm = create_strategy("fm", student, {"feature_weight": 2.0}, StrategyContext(2, CLASSES, embed_dim=8))
    images = torch.rand(2, 3, 16, 16)
    emb = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    out = fm(Batch(images, images, labels=torch.tensor([0, 1]), teacher_logits=TEACHER, teacher_emb=emb))
    with torch.no_grad():
        got = student.forward_all(images)
    cos = torch.nn.functional.cosine_similarity(got["embedding"], emb, dim=-1)
    assert float(out["feat"]) == pytest.approx(float((1 - cos).mean()), rel=1e-5)
    assert float(out["loss"].detach()) == pytest.approx(float(out["match"]) + 2.0 * float(out["feat"]), rel=1e-5)
    out["loss"].backward()
    assert student.projector.weight.grad is not None and student.projector.weight.grad.abs().sum() > 0


def test_fm_projector_is_frozen_without_feature_term_and_required_with_it():
    with_projector = Student(default_spec("test_resnet", CLASSES, 16, embed_dim=8))
    create_strategy("fm", with_projector, None, StrategyContext(2, CLASSES, embed_dim=8))
    assert not any(p.requires_grad for p in with_projector.projector.parameters())
    bare = Student(default_spec("test_resnet", CLASSES, 16))
    with pytest.raises(DistillError, match="feature_weight"):
        create_strategy("fm", bare, {"feature_weight": 1.0}, StrategyContext(2, CLASSES))
    with pytest.raises(DistillError, match="strategy.alpha"):
        create_strategy("fm", bare, {"alpha": 1.5}, StrategyContext(2, CLASSES))


def test_fm_declares_cached_augmented_views_and_pool_rows():
    needs = get_strategy("fm").needs
    assert needs.cached_logits and needs.augmented_views and needs.unlabeled and not needs.online_teacher


# ---------------------------------------------------------------------------- text anchor (all class names)
ALL_TEXT = torch.nn.functional.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(1)), dim=-1)


def _anchored(options: dict, all_text: torch.Tensor | None = ALL_TEXT, logit_scale: float | None = 10.0):
    torch.manual_seed(0)
    student = Student(default_spec("test_resnet", CLASSES, 16, embed_dim=8))
    ctx = StrategyContext(2, CLASSES, embed_dim=8, all_text_embeddings=all_text, logit_scale=logit_scale)
    return create_strategy("fm", student, options, ctx), student


def _emb_batch(images: torch.Tensor, emb: torch.Tensor) -> Batch:
    return Batch(images, images, labels=torch.tensor([0, -1]), teacher_logits=TEACHER, teacher_emb=emb)


def test_text_anchor_is_zero_when_the_directions_agree_and_positive_otherwise():
    teacher = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    assert float(text_anchor_kl(3.0 * teacher, teacher, ALL_TEXT, 10.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(text_anchor_kl(torch.randn(4, 8), teacher, ALL_TEXT, 10.0)) > 1e-3


def test_fm_text_anchor_is_zero_on_the_students_own_embedding_and_trains_the_projector():
    fm, student = _anchored({"text_anchor_weight": 0.5})
    images = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        own = torch.nn.functional.normalize(student.forward_all(images)["embedding"], dim=-1)
    assert float(fm(_emb_batch(images, own))["anchor"]) == pytest.approx(0.0, abs=1e-5)
    other = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    out = fm(_emb_batch(images, other))
    assert float(out["anchor"]) > 1e-4 and "feat" not in out
    assert float(out["loss"].detach()) == pytest.approx(float(out["match"]) + 0.5 * float(out["anchor"]), rel=1e-5)
    out["loss"].backward()
    assert student.projector.weight.grad is not None and student.projector.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.backbone.parameters())


def test_fm_text_anchor_off_by_default_leaves_the_loss_bit_identical():
    images = torch.rand(2, 3, 16, 16)
    emb = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    plain, _ = _anchored({"feature_weight": 1.0}, all_text=None, logit_scale=None)
    off, _ = _anchored({"feature_weight": 1.0, "text_anchor_weight": 0.0})
    a, b = plain(_emb_batch(images, emb)), off(_emb_batch(images, emb))
    assert torch.equal(a["loss"], b["loss"]) and "anchor" not in b
    frozen, student = _anchored({})  # neither term: the projector stays frozen, as before
    assert not any(p.requires_grad for p in student.projector.parameters())


def test_fm_text_anchor_config_errors_are_one_line():
    with pytest.raises(DistillError, match="strategy.text_anchor_weight: must be >= 0"):
        _anchored({"text_anchor_weight": -1.0})
    with pytest.raises(DistillError, match="text_anchor_weight: needs the teacher's text embeddings"):
        _anchored({"text_anchor_weight": 1.0}, all_text=None)
    bare = Student(default_spec("test_resnet", CLASSES, 16))
    with pytest.raises(DistillError, match="text_anchor_weight > 0 .* no projector"):
        create_strategy("fm", bare, {"text_anchor_weight": 1.0},
                        StrategyContext(2, CLASSES, all_text_embeddings=ALL_TEXT, logit_scale=10.0))


def test_fm_teacher_temperature_sharpens_only_the_target(monkeypatch):
    fm, _ = _fm({"teacher_temperature": 0.5}, monkeypatch)
    # target rows softmax([4 ln 3, 0]) = [81/82, 1/82] and [1/2, 1/2]; the student's softmax at T = 1 as before
    sharp = (81 / 82 * math.log(162 / 82) + 1 / 82 * math.log(2 / 82) + 0.5 * math.log(5) + 0.5 * math.log(5 / 9)) / 2
    assert float(fm(_batch([0, 1]))["match"]) == pytest.approx(sharp, rel=1e-5)
    two = _batch([0, 1])
    two.teacher_logits_all = [TEACHER, TEACHER]  # the mean of two equal teachers: the same sharpened target
    assert float(TeacherEnsemble(combine="mean_probs").kl(STUDENT, two, 1.0, 0.5)) == pytest.approx(sharp, rel=1e-5)
    same, _ = _fm({"temperature": 2.0, "teacher_temperature": 2.0}, monkeypatch)
    assert float(same(_batch([0, 1]))["match"]) == pytest.approx(KL_T2, rel=1e-5)


def test_fm_teacher_temperature_must_be_positive(monkeypatch):
    with pytest.raises(DistillError, match=r"^strategy.teacher_temperature: must be > 0, got 0.0$"):
        _fm({"teacher_temperature": 0.0}, monkeypatch)
