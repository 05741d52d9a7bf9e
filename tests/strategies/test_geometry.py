"""fm's batch-geometry terms (CLIP-KD-style): the contrastive (ICL) and relational losses on hand numbers,
their gradients, their options in fm, and 2 gloo ranks x B/2 = 1 process x B."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distill.errors import DistillError
from distill.strategies import Batch, StrategyContext, create_strategy
from distill.strategies.losses import embedding_contrastive, embedding_relational
from distill.student.model import Student, default_spec
from tests.gloo import free_port

R2 = 1 / math.sqrt(2)
# three teacher embeddings: e0, e1 and their bisector (cosines 0, 1/√2, 1/√2)
TEACHER = torch.tensor([[1.0, 0.0], [0.0, 1.0], [R2, R2]])
SWAP02 = TEACHER[[2, 1, 0]]  # the student's rows 0 and 2 swapped: another Gram matrix


def _softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_contrastive_is_cross_entropy_of_row_i_picking_teacher_row_i():
    t = TEACHER[:2]
    # student = teacher (any scale): row i's logits [1/τ, 0] with target i: ln(1 + e^(-1/τ)), for τ = 1 and 0.5
    assert float(embedding_contrastive(3 * t, t, 1.0)) == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-5)
    assert float(embedding_contrastive(t, t, 0.5)) == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-5)
    # rows swapped: each row points at the other image's teacher: ln(1 + e^(1/τ)), larger
    assert float(embedding_contrastive(t[[1, 0]], t, 1.0)) == pytest.approx(math.log(1 + math.e), rel=1e-5)
    # three rows, student = teacher, τ = 1: row 0 [1, 0, r], row 1 [0, 1, r], row 2 [r, r, 1] (r = 1/√2)
    want = (-math.log(_softmax([1, 0, R2])[0]) - math.log(_softmax([0, 1, R2])[1])
            - math.log(_softmax([R2, R2, 1])[2])) / 3
    assert float(embedding_contrastive(TEACHER, TEACHER, 1.0)) == pytest.approx(want, rel=1e-5)
    assert float(embedding_contrastive(SWAP02, TEACHER, 1.0)) > want + 0.1


def test_relational_compares_each_rows_similarities_to_the_other_rows():
    tau = 0.5
    assert float(embedding_relational(2 * TEACHER, TEACHER, tau)) == pytest.approx(0.0, abs=1e-6)
    rot = torch.tensor([[0.6, -0.8], [0.8, 0.6]])  # a rotation: relations unchanged, coordinates not
    assert float(embedding_relational(TEACHER @ rot, TEACHER, tau)) == pytest.approx(0.0, abs=1e-6)
    assert float(embedding_contrastive(TEACHER @ rot, TEACHER, tau)) > float(embedding_contrastive(TEACHER, TEACHER,
                                                                                                   tau)) + 0.1
    # rows 0 and 2 swapped: per row i, KL(softmax_j≠i cos(t_i, t_j)/τ || softmax_j≠i cos(s_i, s_j)/τ), mean
    t, s = TEACHER.tolist(), SWAP02.tolist()
    rows = [[j for j in range(3) if j != i] for i in range(3)]
    want = sum(_kl(_softmax([_cos(t[i], t[j]) / tau for j in rows[i]]),
                   _softmax([_cos(s[i], s[j]) / tau for j in rows[i]])) for i in range(3)) / 3
    assert want > 0.05
    assert float(embedding_relational(SWAP02, TEACHER, tau)) == pytest.approx(want, rel=1e-5)


def test_relational_of_one_or_two_rows_is_zero_and_finite():
    # one other row: its distribution is a point mass on both sides, whatever the embeddings
    assert float(embedding_relational(torch.randn(2, 4), torch.randn(2, 4), 0.1)) == pytest.approx(0.0, abs=1e-7)
    one = torch.randn(1, 4, requires_grad=True)
    loss = embedding_relational(one, torch.randn(1, 4), 0.1)
    loss.backward()
    assert float(loss.detach()) == 0.0 and one.grad is not None and torch.isfinite(one.grad).all()


@pytest.mark.parametrize("loss", [embedding_contrastive, embedding_relational])
def test_geometry_terms_send_a_finite_gradient_to_the_student_only_where_it_is_off(loss):
    student = SWAP02.clone().requires_grad_(True)
    loss(student, TEACHER, 0.1).backward()
    assert student.grad is not None and torch.isfinite(student.grad).all() and student.grad.abs().sum() > 1e-3
    # at the teacher itself the relational gradient is zero (a minimum); contrastive still sharpens spacing
    exact = TEACHER.clone().requires_grad_(True)
    embedding_relational(exact, TEACHER, 0.1).backward()
    assert exact.grad is not None and float(exact.grad.abs().max()) < 1e-6


# ---------------------------------------------------------------------------- in fm
CLASSES = ["a", "b"]
LOGITS = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]])


def _fm(options: dict, logit_scale: float | None = 10.0, embed_dim: int | None = 8):
    torch.manual_seed(0)
    student = Student(default_spec("test_resnet", CLASSES, 16, embed_dim=embed_dim))
    ctx = StrategyContext(2, CLASSES, embed_dim=embed_dim, logit_scale=logit_scale)
    return create_strategy("fm", student, options, ctx), student


def _batch(images: torch.Tensor, emb: torch.Tensor) -> Batch:
    return Batch(images, images, labels=torch.tensor([0, -1, -1]), teacher_logits=LOGITS, teacher_emb=emb)


@pytest.mark.parametrize("key,part,loss", [("contrastive_weight", "icl", embedding_contrastive),
                                           ("relational_weight", "rel", embedding_relational)])
def test_fm_adds_the_term_at_1_over_logit_scale_by_default_and_trains_the_backbone(key, part, loss):
    images = torch.rand(3, 3, 16, 16)
    emb = F.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(2)), dim=-1)
    for options, tau in (({key: 0.5}, 1 / 10.0), ({key: 0.5, "geometry_temperature": 0.3}, 0.3)):
        fm, student = _fm(options)
        out = fm(_batch(images, emb))  # two of the three rows unlabeled: the term needs no label
        with torch.no_grad():
            own = student.forward_all(images)["embedding"]
        assert float(out[part]) == pytest.approx(float(loss(own, emb, tau)), rel=1e-5)
        assert float(out["loss"].detach()) == pytest.approx(float(out["match"]) + 0.5 * float(out[part]), rel=1e-5)
        assert "feat" not in out and "anchor" not in out
        out["loss"].backward()
        assert student.projector.weight.grad is not None and student.projector.weight.grad.abs().sum() > 0
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.backbone.parameters())


def test_fm_geometry_off_by_default_leaves_the_loss_bit_identical():
    images = torch.rand(3, 3, 16, 16)
    emb = F.normalize(torch.randn(3, 8), dim=-1)
    plain, _ = _fm({"feature_weight": 1.0})
    off, _ = _fm({"feature_weight": 1.0, "contrastive_weight": 0.0, "relational_weight": 0.0,
                  "geometry_temperature": 0.2})
    a, b = plain(_batch(images, emb)), off(_batch(images, emb))
    assert torch.equal(a["loss"], b["loss"]) and "icl" not in b and "rel" not in b
    _, student = _fm({})
    assert not any(p.requires_grad for p in student.projector.parameters())  # no term reads P f: frozen


def test_fm_geometry_config_errors_are_one_line():
    for key in ("contrastive_weight", "relational_weight"):
        with pytest.raises(DistillError, match=f"strategy.{key}: must be >= 0, got -1.0"):
            _fm({key: -1.0})
        with pytest.raises(DistillError, match=f"{key} > 0 .* no projector"):
            _fm({key: 1.0}, embed_dim=None)
    with pytest.raises(DistillError, match="strategy.geometry_temperature: must be > 0, got 0.0"):
        _fm({"contrastive_weight": 1.0, "geometry_temperature": 0.0})
    with pytest.raises(DistillError, match="geometry_temperature: unset and the cache has no teacher logit scale"):
        _fm({"relational_weight": 1.0}, logit_scale=None)
    fm, _ = _fm({"relational_weight": 1.0, "geometry_temperature": 0.07}, logit_scale=None)  # an explicit τ will do
    assert fm.geometry_temperature == 0.07


# ---------------------------------------------------------------------------- two ranks = one process
def _rank_worker(rank: int, port: int, student: torch.Tensor, teacher: torch.Tensor, out: str) -> None:
    import torch.distributed as tdist
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        half = student.shape[0] // 2
        got = []
        for loss in (embedding_contrastive, embedding_relational):
            mine = student[rank * half:(rank + 1) * half].clone().requires_grad_(True)
            value = loss(mine, teacher[rank * half:(rank + 1) * half], 0.2)
            value.backward()
            assert mine.grad is not None
            got.append((float(value.detach()), mine.grad / 2))  # DDP averages the ranks' gradients
        torch.save(got, f"{out}.{rank}")
    finally:
        tdist.destroy_process_group()


def test_two_gloo_ranks_of_half_the_batch_compute_the_single_process_loss_and_gradient(tmp_path):
    import torch.multiprocessing as mp
    gen = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(6, 5, generator=gen), F.normalize(torch.randn(6, 5, generator=gen), dim=-1)
    port = free_port()
    mp.spawn(_rank_worker, args=(port, student, teacher, str(tmp_path / "geo")), nprocs=2)
    ranks = [torch.load(tmp_path / f"geo.{r}", weights_only=False) for r in (0, 1)]
    for k, loss in enumerate((embedding_contrastive, embedding_relational)):
        whole = student.clone().requires_grad_(True)
        value = loss(whole, teacher, 0.2)
        value.backward()
        assert whole.grad is not None
        assert (ranks[0][k][0] + ranks[1][k][0]) / 2 == pytest.approx(float(value.detach()), rel=1e-5)
        assert torch.allclose(torch.cat([ranks[0][k][1], ranks[1][k][1]]), whole.grad, atol=1e-6)
