"""The losses the strategies share, as plain functions (no registry, no state).

Every loss computes in fp32 whatever the autocast dtype of its inputs: under bf16/fp16 the
logits arrive in half precision, and a half-precision log-softmax of logits in the hundreds
(CLIP's logit scale is ~100) is off by whole units (CPU autocast also keeps softmax in bf16).

- Distillation: :func:`kl_div_with_temperature` (Hinton KD, batch mean),
  :func:`kl_div_to_probs_with_temperature` (the same term toward given softened probabilities: a teacher ensemble),
  :func:`kl_per_sample` (per-sample KL, the adversarial attacks' objective),
  :func:`kl_to_soft_target` (KL from fixed target probabilities).
- Agreement: :func:`top1_margin_hinge` (a student's top-1 must beat its runner-up by a margin: QAD's near-ties).
- Labels: :func:`label_cross_entropy` (every strategy's label loss: rows with a label only, mixed views).
- Soft / weighted labels: :func:`soft_cross_entropy`, :func:`weighted_cross_entropy`.
- Features: :func:`cosine_distance`, :func:`squared_l2_distance`.
- Embedding geometry (CLIP-KD-style, over the batch): :func:`embedding_contrastive` (student row i must pick
  teacher row i), :func:`embedding_relational` (the batch's student-student vs teacher-teacher similarities).
- Unlabeled data: :func:`information_maximization` (SHOT's IM).
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor


# ---------------------------------------------------------------------------- distillation
def kl_div_with_temperature(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Hinton KD term: T² · KL(softmax(t/T) || softmax(s/T)), batch mean: [B, C], [B, C] -> scalar."""
    t = temperature
    return kl_div_to_probs_with_temperature(student_logits, F.softmax(teacher_logits.float() / t, dim=-1), t)


def kl_div_to_probs_with_temperature(student_logits: Tensor, target: Tensor, temperature: float) -> Tensor:
    """T² · KL(target || softmax(s/T)), batch mean, for target probabilities already at temperature T (e.g. an
    ensemble of teachers' softened outputs): [B, C] logits, [B, C] probabilities (fp32) -> scalar."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits.float() / t, dim=-1), target, reduction="batchmean") * t * t


def top1_margin_hinge(logits: Tensor, labels: Tensor, margin: float) -> Tensor:
    """Batch mean of ``relu(margin - (z[label] - max_{j != label} z[j]))``: zero once the label's logit leads every
    other class by ``margin`` (raw logits); [B, C], [B] -> scalar. QAD uses it with the fp32 student's top-1 as the
    label, so the int8 student keeps fp32's class on near-ties, where a KL term hardly pulls."""
    z = logits.float()
    own = z.gather(1, labels[:, None]).squeeze(1)
    rest = z.scatter(1, labels[:, None], float("-inf")).amax(1)
    return F.relu(margin - (own - rest)).mean()


def kl_per_sample(p_logits: Tensor, q_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(softmax(p/T) || softmax(q/T)) per sample: [B, C], [B, C] -> [B]."""
    log_p = F.log_softmax(p_logits.float() / temperature, dim=-1)
    log_q = F.log_softmax(q_logits.float() / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def kl_to_soft_target(target: Tensor, logits: Tensor) -> Tensor:
    """Batch mean of KL(target || softmax(logits)): target probabilities [B, C] (fixed), logits [B, C] -> scalar."""
    log_q = logits.float().log_softmax(-1)
    return (target * (torch.log(target.clamp(min=1e-8)) - log_q)).sum(-1).mean()


# ---------------------------------------------------------------------------- labels
def label_cross_entropy(logits: Tensor, labels: Tensor, partner_labels: Tensor | None = None,
                        lam: Tensor | None = None, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy on the rows that have a label, the one label loss every strategy uses.

    Rows with label -1 (unlabeled pool images, withheld classes) add nothing: the loss is the
    mean over the labelled rows only, and 0 when there are none (a tensor still in the graph,
    whose gradient is 0, so a batch of pool rows alone is a valid step). So no label of a
    pool image can reach a student, whatever its dataset label says.

    Mixed views (``lam`` [B], ``partner_labels`` [B]; mixup/cutmix): a row's loss is
    ``lam * CE(y) + (1 - lam) * CE(y_partner)``. When the partner has no label (-1) only the
    own part ``lam * CE(y)`` counts: the partner's share of the image has no label to learn.
    Without mixing (either argument None) this is ``F.cross_entropy`` itself, bit for bit.

    Args:
        logits: [B, C] (computed in fp32).
        labels: [B] int64, -1 = no label.
        partner_labels: [B] int64, -1 = no partner label; None = unmixed.
        lam: [B] float, the own image's share (1.0 = unmixed); None = unmixed.
        label_smoothing: as in ``F.cross_entropy``.

    Returns:
        A scalar.
    """
    logits = logits.float()
    known = labels >= 0
    if partner_labels is None or lam is None:
        ce = F.cross_entropy(logits, labels, ignore_index=-1, label_smoothing=label_smoothing)
        # no labelled row: F's mean is 0/0; the where keeps the graph (its gradient is exactly 0)
        return torch.where(known.any(), ce, torch.zeros_like(ce))
    own = F.cross_entropy(logits, labels, ignore_index=-1, label_smoothing=label_smoothing, reduction="none")
    other = F.cross_entropy(logits, partner_labels, ignore_index=-1, label_smoothing=label_smoothing,
                            reduction="none")
    lam = lam.to(own.dtype)
    per_row = lam * own + torch.where(partner_labels >= 0, (1 - lam) * other, torch.zeros_like(other))
    per_row = torch.where(known, per_row, torch.zeros_like(per_row))
    return per_row.sum() / known.sum().clamp(min=1)


# ---------------------------------------------------------------------------- soft / weighted labels
def soft_cross_entropy(logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean over the batch of −Σ_c target_c · log softmax(logits)_c; optional per-sample weight [B]."""
    per = -(target.float() * logits.float().log_softmax(-1)).sum(-1)
    if weight is None:
        return per.mean()
    return (per * weight).sum() / weight.sum().clamp(min=1e-8)


def weighted_cross_entropy(logits: Tensor, labels: Tensor, weight: Tensor) -> Tensor:
    """Cross-entropy on hard labels [B] weighted per sample ([B], 0 = skipped), over the kept weight (at least 1).

    The denominator's floor of 1 makes a batch whose samples are all skipped a zero loss, not a 0/0.
    """
    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    return (ce * weight).sum() / weight.sum().clamp(min=1.0)


# ---------------------------------------------------------------------------- features
def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """Batch mean of 1 − cos between rows of ``a`` and ``b`` [B, D]: direction only, blind to feature scale."""
    return (1 - F.cosine_similarity(a.float(), b.float(), dim=-1)).mean()


def text_anchor_kl(embedding: Tensor, teacher_emb: Tensor, text: Tensor, logit_scale: float,
                   temperature: float = 1.0) -> Tensor:
    """T² · KL(teacher || student) of the zero-shot rule over the class names ``text`` [K, D]: each side's
    ``logit_scale · cos(embedding, text)``, batch mean. With ``text`` every class name (withheld ones
    included) it ties the student's embedding to the text directions re-targeting will use (CLIP-KD-style).
    ``embedding`` [B, D] (unnormalized), ``teacher_emb`` [B, D] -> scalar; zero when their directions agree."""
    t = F.normalize(text.float(), dim=-1)
    student = logit_scale * F.normalize(embedding.float(), dim=-1) @ t.T
    teacher = logit_scale * F.normalize(teacher_emb.float(), dim=-1) @ t.T
    return kl_div_with_temperature(student, teacher, temperature)


def embedding_contrastive(embedding: Tensor, teacher_emb: Tensor, temperature: float) -> Tensor:
    """InfoNCE of student row i against the batch's teacher embeddings, the positive being teacher row i.

    CLIP-KD's "interactive contrastive learning" (Yang et al., CVPR 2024) with the teacher's *image*
    embeddings as the keys (the student here has no text tower): cross-entropy of
    ``cos(s_i, t_j) / temperature`` over j with target i, batch mean; both sides L2-normalised. Unlike
    the cosine term it also pushes s_i *away* from the other images' teacher embeddings, so the student
    keeps the teacher's spacing, not only its directions. Needs no label (pool rows count as well).
    Under DDP the keys are every rank's teacher rows (gathered, no gradient needed), so 2 ranks x B/2
    compute what 1 process x B does. ``embedding`` [B, D] (any norm), ``teacher_emb`` [B, D] -> scalar;
    its minimum (all rows distinct) is when s_i = t_i."""
    s = F.normalize(embedding.float(), dim=-1)
    keys, offset = _gather_rows(F.normalize(teacher_emb.float(), dim=-1))
    target = torch.arange(s.shape[0], device=s.device) + offset
    return F.cross_entropy(s @ keys.T / temperature, target)


def embedding_relational(embedding: Tensor, teacher_emb: Tensor, temperature: float) -> Tensor:
    """KL(teacher || student) of each row's similarity distribution over the batch's *other* rows.

    The relational term (CLIP-KD's "CRD", contrastive relational distillation, here image-image: row i's
    ``softmax_j cos(e_i, e_j) / temperature``, j != i, on each side): the student's batch must be arranged
    as the teacher's is, a constraint on relations only (any rotation of the teacher's space is a
    minimum), where :func:`embedding_contrastive` pins the student to the teacher's coordinates.
    Batch mean over rows; needs B >= 2 (0 for a single row); no label needed. Under DDP the "other
    rows" are every rank's (a differentiable gather: 2 ranks x B/2 train as 1 process x B).
    ``embedding`` [B, D], ``teacher_emb`` [B, D] -> scalar; zero when the two batches' Gram matrices agree."""
    s = F.normalize(embedding.float(), dim=-1)
    t = F.normalize(teacher_emb.float(), dim=-1)
    s_all, offset = _gather_rows(s, differentiable=True)
    t_all, _ = _gather_rows(t)
    if s_all.shape[0] < 2:
        return (s * 0).sum()
    rows = torch.arange(s.shape[0], device=s.device)
    self_mask = torch.zeros(s.shape[0], s_all.shape[0], dtype=torch.bool, device=s.device)
    self_mask[rows, rows + offset] = True
    s_logits = (s @ s_all.T / temperature).masked_fill(self_mask, float("-inf"))
    t_logits = (t @ t_all.T / temperature).masked_fill(self_mask, float("-inf"))
    log_q, log_p = s_logits.log_softmax(-1), t_logits.log_softmax(-1)
    p = log_p.exp()  # the masked entry: p = 0, and 0 · (-inf - -inf) must read 0, not nan
    return torch.where(self_mask, torch.zeros_like(p), p * (log_p - log_q)).sum(-1).mean()


def _gather_rows(x: Tensor, differentiable: bool = False) -> tuple[Tensor, int]:
    """[B, D] -> (every rank's rows concatenated in rank order [W·B, D], this rank's first row in it).
    One process: (x, 0). ``differentiable``: gradients reach every rank's rows (torch.distributed.nn)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return x, 0
    if differentiable:
        from torch.distributed.nn.functional import all_gather  # lazy: exists only where torch.distributed does

        parts = list(all_gather(x))
    else:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts), dist.get_rank() * x.shape[0]


def squared_l2_distance(a: Tensor, b: Tensor) -> Tensor:
    """Batch mean of ‖a − b‖² over rows [B, D] (pins the norm as well as the direction)."""
    return (a.float() - b.float()).pow(2).sum(dim=-1).mean()


# ---------------------------------------------------------------------------- unlabeled data
def information_maximization(logits: Tensor, diversity_weight: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """SHOT's IM loss (Liang et al. 2020): mean per-sample entropy + diversity.

    ``diversity = log C − H(mean_b p_b)`` = KL(mean prediction || uniform) ≥ 0: zero when the
    batch's predictions cover the classes evenly. Under DDP the mean is over the global batch
    (all ranks), so the loss does not depend on how the batch is split. (SHOT writes −H(mean p); the constant log C
    only makes the loss non-negative.)

    Args:
        logits: [B, C].
        diversity_weight: weight of the diversity term.

    Returns:
        (loss, entropy, diversity), scalars.
    """
    logits = logits.float()  # entropy of near-one-hot rows needs the precision
    p = logits.softmax(-1)
    log_p = logits.log_softmax(-1)
    ent = -(p * log_p).sum(-1).mean()
    mean_p = _batch_mean(p)
    div = math.log(logits.shape[-1]) + (mean_p * torch.log(mean_p + 1e-8)).sum()
    return ent + diversity_weight * div, ent, div


def _batch_mean(p: Tensor) -> Tensor:
    """[B, C] -> [C] mean over the *global* batch: under DDP the ranks' means are averaged
    (differentiably: each rank's rows get the gradient of the global statistic), so 2 ranks x B/2
    train as 1 process x B does. Ranks hold equal batches (the trainer splits the global batch
    evenly and drops the last partial one)."""
    mean = p.mean(0)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from torch.distributed.nn.functional import all_reduce  # lazy: exists only where torch.distributed does

        mean = all_reduce(mean) / dist.get_world_size()
    return mean


__all__ = ["cosine_distance", "embedding_contrastive", "embedding_relational", "information_maximization",
           "kl_div_to_probs_with_temperature", "kl_div_with_temperature", "kl_per_sample", "kl_to_soft_target",
           "label_cross_entropy", "soft_cross_entropy", "squared_l2_distance", "weighted_cross_entropy"]
