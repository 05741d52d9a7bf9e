"""Loss formulas against numbers worked out by hand (plain ``math``, no torch loss function).

Each input is chosen so the terms have closed forms (logits ln 3 and 0 give probabilities 3/4
and 1/4; temperature 2 halves them), and so that the usual mistakes give other numbers:
KL in the other direction, a missing T², a sum instead of a batch mean, an unnormalized
cosine, a missing square. The expected values are written out in the comments.
"""
from __future__ import annotations

import math

import pytest
import torch

from distill.strategies import Batch, StrategyContext, create_strategy
from distill.strategies.losses import (
    cosine_distance,
    information_maximization,
    kl_div_with_temperature,
    kl_per_sample,
    kl_to_soft_target,
    label_cross_entropy,
    soft_cross_entropy,
    squared_l2_distance,
    top1_margin_hinge,
    weighted_cross_entropy,
)
from distill.student.model import Student, default_spec

LN3 = math.log(3)


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def _softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


# ---------------------------------------------------------------------------- KD
def test_kd_is_t_squared_kl_teacher_to_student_batch_mean():
    T = 2.0
    # row 0: teacher logits [2 ln3, 0] / T = [ln3, 0] -> p = [3/4, 1/4]; student [0, 0] -> q = [1/2, 1/2]
    # row 1: teacher = student = [0, 0] -> KL 0 (it only makes the batch mean differ from a sum)
    teacher = torch.tensor([[2 * LN3, 0.0], [0.0, 0.0]], dtype=torch.float64)
    student = torch.tensor([[0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    kl0 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # KL(p || q) = 0.130812...
    want = T * T * (kl0 + 0.0) / 2  # T² · batch mean = 0.261624...
    assert want == pytest.approx(0.2616240, abs=1e-6)
    got = float(kl_div_with_temperature(student, teacher, T))
    assert got == pytest.approx(want, rel=1e-6)  # losses compute in fp32 by design (bf16-safe): fp32 precision
    # what the usual mistakes would give (so the check above can tell them apart)
    reverse = T * T * _kl([0.5, 0.5], [0.75, 0.25]) / 2  # KL(q || p): 0.287682...
    no_t2, summed = want / (T * T), 2 * want
    assert min(abs(got - reverse), abs(got - no_t2), abs(got - summed)) > 1e-2


def test_kd_strategy_mixes_kd_and_ce_with_alpha(monkeypatch):
    """kd: alpha · T² KL + (1 − alpha) · CE, on hand numbers."""
    classes = ["a", "b"]
    student = Student(default_spec("test_resnet", classes, 16))
    s = create_strategy("kd", student, {"temperature": 2.0, "alpha": 0.75}, StrategyContext(2, classes))
    logits = torch.tensor([[0.0, 0.0], [0.0, 2 * LN3]])
    monkeypatch.setattr(student, "forward", lambda x: logits)
    batch = Batch(torch.zeros(2, 3, 16, 16), torch.zeros(2, 3, 16, 16), labels=torch.tensor([0, 1]),
                  teacher_logits=torch.tensor([[2 * LN3, 0.0], [0.0, 0.0]]))
    out = s(batch)
    # KD (T = 2): row 0 KL([3/4, 1/4] || [1/2, 1/2]) = 0.130812; row 1 KL([1/2, 1/2] || [1/4, 3/4]) = 0.143841
    kd = 4 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5) + 0.5 * math.log(2) + 0.5 * math.log(2 / 3)) / 2
    ce = (-math.log(0.5) - math.log(0.9)) / 2  # softmax([0, 2 ln3]) = [1/10, 9/10]
    assert kd == pytest.approx(0.5493061, abs=1e-6)
    assert float(out["kd"]) == pytest.approx(kd, rel=1e-5)
    assert float(out["ce"]) == pytest.approx(ce, rel=1e-5)
    assert float(out["loss"]) == pytest.approx(0.75 * kd + 0.25 * ce, rel=1e-5)


# ---------------------------------------------------------------------------- feature terms (rise)
@pytest.mark.parametrize("distance", ["cosine", "l2"])
def test_feature_distance_on_hand_numbers(distance, monkeypatch):
    """rise: CE + lambda_kd · KD + lambda_feat · d(P f, t), with d = 1 − cos or ‖P f − t‖²."""
    classes = ["a", "b"]
    D = 4
    student = Student(default_spec("test_resnet", classes, 16, embed_dim=D))
    s = create_strategy("rise", student, {"distance": distance, "lambda_kd": 0.0, "lambda_feat": 2.0, "temperature": 1.0},
                        StrategyContext(2, classes, embed_dim=D))
    # row 0: P f = 3 e0, t = (e0 + e1)/√2: cos = 1/√2; ‖P f − t‖² = (3 − 1/√2)² + 1/2 = 9 − 3√2 + 1 = 5.757359...
    # row 1: P f = −2 e2, t = e2: cos = −1; ‖P f − t‖² = 9
    r = 1 / math.sqrt(2)
    emb = torch.tensor([[3.0, 0, 0, 0], [0, 0, -2.0, 0]])
    t = torch.tensor([[r, r, 0, 0], [0, 0, 1.0, 0]])
    logits = torch.zeros(2, 2)  # CE = ln 2
    monkeypatch.setattr(student, "forward_all", lambda x: {"logits": logits, "embedding": emb, "features": emb})
    batch = Batch(torch.zeros(2, 3, 16, 16), torch.zeros(2, 3, 16, 16), labels=torch.tensor([0, 1]),
                  teacher_logits=torch.zeros(2, 2), teacher_emb=t)
    out = s(batch)
    want = ((1 - r) + (1 - (-1))) / 2 if distance == "cosine" else (10 - 3 * math.sqrt(2) + 9) / 2
    assert want == pytest.approx(1.1464466 if distance == "cosine" else 7.3786797, abs=1e-6)
    assert float(out["feat"]) == pytest.approx(want, rel=1e-5)
    assert float(out["loss"]) == pytest.approx(math.log(2) + 2.0 * want, rel=1e-5)


# ---------------------------------------------------------------------------- SFDA terms
def test_information_maximization_on_hand_numbers():
    # p_0 = softmax([0, 0]) = [1/2, 1/2]; p_1 = softmax([ln3, 0]) = [3/4, 1/4]
    logits = torch.tensor([[0.0, 0.0], [LN3, 0.0]], dtype=torch.float64)
    h0 = math.log(2)
    h1 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    ent = (h0 + h1) / 2  # mean per-sample entropy = 0.627741...
    mean_p = [0.625, 0.375]
    div = math.log(2) + sum(m * math.log(m) for m in mean_p)  # log C − H(mean p) = 0.031584...
    loss, e, d = information_maximization(logits, diversity_weight=0.5)
    assert float(e) == pytest.approx(ent, rel=1e-6)
    assert float(d) == pytest.approx(div, abs=1e-7)  # the 1e-8 inside the log shifts it by < 1e-7
    assert float(loss) == pytest.approx(ent + 0.5 * div, rel=1e-6)
    assert ent == pytest.approx(0.6277412, abs=1e-6) and div == pytest.approx(0.0315839, abs=1e-6)


def test_soft_cross_entropy_on_hand_numbers():
    # softmax([0, ln3]) = [1/4, 3/4]; softmax([0, 0]) = [1/2, 1/2]
    logits = torch.tensor([[0.0, LN3], [0.0, 0.0]], dtype=torch.float64)
    target = torch.tensor([[0.5, 0.5], [1.0, 0.0]], dtype=torch.float64)
    ce0 = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))  # 0.836988...
    ce1 = -math.log(0.5)  # 0.693147...
    # losses compute in fp32 by design (bf16-safe): fp32 precision
    assert float(soft_cross_entropy(logits, target)) == pytest.approx((ce0 + ce1) / 2, rel=1e-6)
    w = torch.tensor([3.0, 1.0], dtype=torch.float64)
    assert float(soft_cross_entropy(logits, target, w)) == pytest.approx((3 * ce0 + ce1) / 4, rel=1e-6)  # fp32, as above
    assert (ce0 + ce1) / 2 == pytest.approx(0.7650678, abs=1e-6)


# ---------------------------------------------------------------------------- the other shared terms
def test_kl_per_sample_is_teacher_to_student_per_row():
    # row 0: p = softmax([ln3, 0]) = [3/4, 1/4], q = [1/2, 1/2]; row 1: T = 2 halves [2 ln3, 0] -> the same p
    p = torch.tensor([[LN3, 0.0], [2 * LN3, 0.0]])
    q = torch.zeros(2, 2)
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)  # 0.130812...
    # at T = 1 row 1 is softmax([2 ln3, 0]) = [9/10, 1/10]
    assert kl_per_sample(p, q).tolist() == pytest.approx([kl, _kl([0.9, 0.1], [0.5, 0.5])], rel=1e-5)
    assert kl_per_sample(p, q, temperature=2.0)[1].item() == pytest.approx(kl, rel=1e-5)
    assert kl_per_sample(q, p)[0].item() == pytest.approx(_kl([0.5, 0.5], [0.75, 0.25]), rel=1e-5)  # not symmetric


def test_kl_to_soft_target_and_weighted_cross_entropy_on_hand_numbers():
    logits = torch.tensor([[0.0, LN3], [0.0, 0.0]])  # softmax: [1/4, 3/4], [1/2, 1/2]
    target = torch.tensor([[0.5, 0.5], [1.0, 0.0]])  # the 0 entry contributes 0 (0 · log 0 := 0)
    want = (_kl([0.5, 0.5], [0.25, 0.75]) + math.log(2)) / 2  # 0.071... and log 2 = KL(one-hot || uniform)
    assert float(kl_to_soft_target(target, logits)) == pytest.approx(want, rel=1e-5)
    labels = torch.tensor([1, 0])
    ce0, ce1 = -math.log(0.75), -math.log(0.5)
    assert float(weighted_cross_entropy(logits, labels, torch.tensor([1.0, 0.0]))) == pytest.approx(ce0, rel=1e-5)
    assert float(weighted_cross_entropy(logits, labels, torch.tensor([3.0, 1.0]))) == pytest.approx(
        (3 * ce0 + ce1) / 4, rel=1e-5)
    assert float(weighted_cross_entropy(logits, labels, torch.zeros(2))) == 0.0, "all skipped: zero, not 0/0"


def test_feature_distances_on_hand_numbers():
    a = torch.tensor([[3.0, 0.0], [0.0, -2.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    r = 1 / math.sqrt(2)
    assert float(cosine_distance(a, b)) == pytest.approx(((1 - r) + 2) / 2, rel=1e-6)
    assert float(cosine_distance(10 * a, b)) == pytest.approx(float(cosine_distance(a, b)), rel=1e-6)  # scale-free
    assert float(squared_l2_distance(a, b)) == pytest.approx(((4 + 1) + 9) / 2, rel=1e-6)


# ---------------------------------------------------------------------------- label cross-entropy
# logits [ln 3, 0] give p = [3/4, 1/4]: CE(class 0) = ln(4/3), CE(class 1) = ln 4
_L = [[LN3, 0.0], [0.0, LN3], [LN3, 0.0], [0.0, 0.0]]
CE0, CE1, CE_HALF = math.log(4 / 3), math.log(4), math.log(2)


def test_label_cross_entropy_is_the_mean_over_labelled_rows_only():
    logits = torch.tensor(_L)
    # rows 1 and 3 have no label: (CE(row 0, class 1) + CE(row 2, class 0)) / 2 = (ln 4 + ln 4/3) / 2;
    # the mean over all 4 rows, or row 1 counted, gives other numbers
    got = label_cross_entropy(logits, torch.tensor([1, -1, 0, -1]))
    assert float(got) == pytest.approx((CE1 + CE0) / 2, rel=1e-6)
    labels = torch.tensor([0, 1, 1, 0])  # all labelled: exactly F.cross_entropy, bit for bit
    assert torch.equal(label_cross_entropy(logits, labels), torch.nn.functional.cross_entropy(logits, labels))


def test_label_cross_entropy_without_labelled_rows_is_a_zero_with_zero_gradient():
    logits = torch.tensor(_L, requires_grad=True)
    got = label_cross_entropy(logits, torch.full((4,), -1))
    assert float(got.detach()) == 0.0 and got.requires_grad
    got.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_label_cross_entropy_of_mixed_rows_weighs_own_and_partner_label():
    logits = torch.tensor(_L)
    labels = torch.tensor([0, 1, 0, -1])
    partner = torch.tensor([1, -1, 0, 1])
    lam = torch.tensor([0.25, 0.6, 1.0, 0.5])
    # row 0: 0.25 CE(0) + 0.75 CE(1) = 0.25 ln(4/3) + 0.75 ln 4; row 1 (logits favour class 1, its label):
    # partner without a label, so only its own part 0.6 ln(4/3); row 2 (lam 1): ln(4/3); row 3: no label, out
    want = (0.25 * CE0 + 0.75 * CE1 + 0.6 * CE0 + CE0) / 3
    got = label_cross_entropy(logits, labels, partner, lam)
    assert float(got) == pytest.approx(want, rel=1e-6)
    # unmixed (lam 1, no partners) equals the plain loss
    plain = label_cross_entropy(logits, labels)
    same = label_cross_entropy(logits, labels, torch.full((4,), -1), torch.ones(4))
    assert float(same) == pytest.approx(float(plain), rel=1e-6)
    assert float(plain) == pytest.approx((CE0 + CE0 + CE0) / 3, rel=1e-6)


def test_label_cross_entropy_passes_label_smoothing_on():
    logits = torch.tensor(_L)
    labels = torch.tensor([0, -1, -1, -1])
    # smoothing 0.5 over 2 classes: target [3/4, 1/4] -> 3/4 ln(4/3) + 1/4 ln 4
    got = label_cross_entropy(logits, labels, label_smoothing=0.5)
    assert float(got) == pytest.approx(0.75 * CE0 + 0.25 * CE1, rel=1e-6)


def test_top1_margin_hinge_is_the_shortfall_of_the_labels_lead():
    logits = torch.tensor([[2.0, 1.9, 0.0],    # label 0 leads by 0.1: shortfall 0.4
                           [0.0, 3.0, 1.0],    # label 0 trails the max (3.0) by 3: shortfall 3.5
                           [5.0, 0.0, 1.0]])   # label 0 leads by 4: no loss
    labels = torch.tensor([0, 0, 0])
    assert float(top1_margin_hinge(logits, labels, 0.5)) == pytest.approx((0.4 + 3.5 + 0.0) / 3)
    grad_logits = logits.clone().requires_grad_()
    top1_margin_hinge(grad_logits, labels, 0.5).backward()
    # the label's logit is pushed up and the runner-up down, only on rows short of the margin
    assert grad_logits.grad[0, 0] < 0 < grad_logits.grad[0, 1] and grad_logits.grad[1, 1] > 0
    assert torch.all(grad_logits.grad[2] == 0)
