"""``sfda``: adapt a source-trained student to unlabeled target domains with the VLM teacher's knowledge."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from distill.strategies import register_strategy
from distill.strategies._pseudo import (
    CHUNK,
    SampleTargets,
    collect,
    fuse_teachers,
    knn_labels,
    normalized_certainty,
    require_iterate,
)
from distill.strategies.base import Batch, Needs, Strategy, StrategyContext, strategy_config
from distill.strategies.losses import information_maximization, kl_to_soft_target, weighted_cross_entropy
from distill.utils.spool import RowSpool

if TYPE_CHECKING:  # for the annotation only
    from distill.student.model import Student


@strategy_config
class SFDAConfig:
    teacher_temperature: float = 1.0  # softmax temperature on cached teacher logits (they include CLIP's logit scale)
    teacher_weight: float = 0.7  # λ: prior weight of the teachers vs the current student in the fused prediction
    adaptive_weight: bool = True  # per sample, scale λ's odds by (teacher certainty / student certainty)^γ
    reliability_sharpness: float = 2.0  # γ of the per-sample multi-teacher reliability weights (0: plain mean)
    knn: int = 5  # memory-bank smoothing over this many feature-space neighbours (itself included; 1: off)
    confidence: float = 0.0  # also require the fused prediction to be at least this sure for the hard label
    lambda_im: float = 1.0  # weight of information maximization (entropy + diversity)
    lambda_kd: float = 1.0  # weight of KL(fused prediction || student)
    lambda_pl: float = 0.5  # weight of the trusted pseudo-label cross-entropy
    diversity_weight: float = 1.0  # weight of the diversity half of the IM term
    per_view: bool = True  # KD target uses the teachers' logits on the view shown (cached per view), not view 0's


@register_strategy("sfda")
class SFDA(Strategy):
    """Source-free domain adaptation with a frozen VLM, after DIFO (Tang et al., CVPR 2024,
    "Source-Free Domain Adaptation with Frozen Multimodal Foundation Model") and ProDe
    (Tang et al., ICLR 2025, "Proxy Denoising for Source-Free Domain Adaptation").

    Input: a source-trained student (``source_checkpoint``) and the target domains' unlabeled
    training images with the teachers' cached zero-shot logits; no source image is read.

    Every epoch (``on_epoch_start``) the pseudo-labels are rebuilt from one clean pass over
    the target images (``ctx.iterate_train``):

    1. teacher fusion: with several caches, per-sample reliability weights
       (:func:`~distill.strategies._pseudo.fuse_teachers`: agreement with the other teachers
       and the current student × the teacher's certainty) give p_T;
    2. fusion with the adapting model: p_F = λ(x) · p_T + (1 − λ(x)) · p_S (p_S the current
       student); with ``adaptive_weight`` the prior odds λ/(1 − λ) are scaled per sample by
       (certainty of p_T / certainty of p_S)^γ (certainty = 1 − H/log C), so a flat teacher
       yields to a sure student and a sure teacher overrides an unsure one — two sources
       cannot out-agree each other, so certainty is what tells them apart;
    3. denoising by memory-bank smoothing and agreement: p̃ = mean of p_F over the k nearest
       neighbours in the student's feature space (itself included); the hard label
       ŷ = argmax p̃ is trusted (weight 1) only where the image's own fused prediction agrees
       with its neighbourhood (argmax p_F = ŷ) and max p_F ≥ ``confidence``.

    Loss per batch (an augmented view of each image):
    lambda_im · IM(student) + lambda_kd · KL(p_F || p_student) + lambda_pl · CE_trusted(student, ŷ),
    where with ``per_view`` p_F is re-fused with the teachers' cached logits on the view shown
    (and the student prediction remembered from the refresh), so KD follows the augmentation.

    Why this denoising: the two noise sources are of different kinds. The VLM is wrong on
    whole regions of the target distribution where its prompts fit poorly (systematic), the
    source model is wrong where the domain shift hurts it (also systematic, but elsewhere), so
    mixing them cancels part of each; what remains is per-sample noise, which neighbours in
    the adapting model's feature space vote away (target clusters are what SHOT/NRC exploit),
    and the agreement mask keeps hard CE away from the samples still in doubt — they get only
    the soft KL toward their own fused prediction (whose scale, unlike a smoothed one, still
    says how sure the sources are). This needs no extra model or prompt learning, so training
    stays teacher-free (cache only).

    How this differs from the papers: DIFO alternates prompt learning on CLIP (maximising
    mutual information with the target model) with distillation, and ProDe corrects the
    ViL logits with a proxy-error term learned over the course of adaptation; both run the
    VLM online. Here the teacher is frozen *and cached*: its prediction cannot be tuned or
    re-run, so denoising happens on the fused pseudo-label instead (fusion + kNN smoothing +
    agreement filtering), and several cached teachers can be fused by reliability.

    What it buys (benchmarks/RESULTS.md, digits suite): with a strong teacher, within about a
    point of plain CE on the teacher's labels (ahead on the mean, ±0.5 on single targets, one
    seed: the small student, not the labels, is the bottleneck: an 86% teacher yields a ~56%
    student on mnist_m, +28 over the source model); with a weak
    teacher (~20% zero-shot) it stays above the source model where teacher pseudo-labels
    collapse; a random-weights extra teacher costs it nothing (reliability weights).
    """

    Config = SFDAConfig
    needs = Needs(labels=False, cached_logits=True, target_data=True, source_checkpoint=True)

    def __init__(self, student: Student, config: SFDAConfig, ctx: StrategyContext):
        super().__init__(student, config, ctx)
        # fused prediction p_F, hard label ŷ and its trust, of the clean view; the student's own p_S at the last
        # refresh; their [S, C] files go to the run's checkpoint folder (ctx.state_dir, set by the trainer); the
        # functions hold the context, not the module (no cycle)
        ctx = self.ctx

        def folder() -> str | None:
            return ctx.state_dir

        def scratch() -> bool:
            return not ctx.state_linked

        self.targets, self.memory = (SampleTargets(folder, scratch) for _ in range(2))
        self.last_refresh: dict[str, float | list[float]] = {}

    # ------------------------------------------------------------------ pseudo-labels
    def fuse(self, teacher_probs: list[Tensor], student_probs: Tensor) -> tuple[Tensor, Tensor]:
        """Teachers' [N, C] each + student [N, C] -> (p_F [N, C], teacher weights [N, K])."""
        c = self.config
        p_t, w = fuse_teachers(teacher_probs, anchor=student_probs, sharpness=c.reliability_sharpness)
        lam = torch.full_like(p_t[:, :1], c.teacher_weight)
        if c.adaptive_weight and 0 < c.teacher_weight < 1:
            g = c.reliability_sharpness
            a = c.teacher_weight * (1e-3 + normalized_certainty(p_t)).pow(g)
            b = (1 - c.teacher_weight) * (1e-3 + normalized_certainty(student_probs)).pow(g)
            lam = (a / (a + b)).unsqueeze(1)
        return lam * p_t + (1 - lam) * student_probs, w

    @torch.no_grad()
    def refresh(self, epoch: int) -> None:
        """Rebuild the pseudo-labels of every target training image (one clean pass; per-image arrays are
        memory-mapped and fused in chunks: :mod:`distill.strategies._pseudo`)."""
        c = self.config
        data = collect(self.student, require_iterate(self.ctx.iterate_train, self.name)(), c.teacher_temperature)
        teachers, student = data["teacher_probs"], data["probs"]  # [N, K, C], [N, C]
        fused, conf, own, w_sum = RowSpool(), [], [], torch.zeros(teachers.shape[1])
        for s in range(0, len(student), CHUNK):
            p, w = self.fuse(list(teachers[s:s + CHUNK].unbind(1)), student[s:s + CHUNK])
            fused.append(p)
            best = p.max(-1)
            conf.append(best.values)
            own.append(best.indices)
            w_sum += w.sum(0)
        fused_all = fused.tensor()
        labels = knn_labels(data["features"], fused_all, c.knn, device=self.targets.epoch.device)  # the run's
        weight = ((torch.cat(own) == labels) & (torch.cat(conf) >= c.confidence)).float()
        size = max(self.ctx.num_samples, int(data["index"].max()) + 1)
        self.targets.set(epoch, size, data["index"], fused_all, labels, weight)
        self.memory.set(epoch, size, data["index"], student, labels, weight)
        self.last_refresh = {"kept": float(weight.mean()),
                             "teacher_weights": [float(v) for v in w_sum / len(student)]}

    def on_epoch_start(self, epoch: int) -> None:
        if not self.targets.fresh(epoch):  # on resume the restored targets are this epoch's
            self.refresh(epoch)

    def _batch_targets(self, batch: Batch, logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(soft [B, C], hard [B], weight [B]) for the batch.

        The hard label and its trust come from the last refresh. The soft target is p_F of the
        clean view, or with ``per_view`` the same fusion with the teachers' cached logits on the
        view actually shown (and the remembered student prediction). Samples no refresh covered
        (before the first one, or not among the refreshed images) get targets from the batch itself.

        Chosen per sample on the device (``torch.where``; a known sample's targets are the refresh's, bit for bit):
        the batch's own fusion, a few [B, C] element-wise kernels, is computed even when every sample is known,
        since branching on "every sample known" would read ``known`` back to the host and wait for the GPU each step.
        """
        c = self.config
        got = mem = None
        if batch.sample_index is not None:
            got = self.targets.get(batch.sample_index, batch.host_index)
            mem = self.memory.get(batch.sample_index, batch.host_index) if got is not None else None
        all_logits = batch.teacher_logits_all or [self.need(batch.teacher_logits, "teacher_logits")]
        t_probs = [(t.float() / c.teacher_temperature).softmax(-1) for t in all_logits]
        fused, _ = self.fuse(t_probs, logits.detach().float().softmax(-1))
        conf, hard = fused.max(-1)
        weight = (conf >= c.confidence).float()
        if got is None or (c.per_view and mem is None):  # per_view alone needs the remembered predictions
            return fused, hard, weight
        known = got[3]
        soft_known = self.fuse(t_probs, mem[0])[0] if c.per_view and mem is not None else got[0]  # per_view: mem is set
        return (torch.where(known.unsqueeze(1), soft_known, fused), torch.where(known, got[1], hard),
                torch.where(known, got[2], weight))

    # ------------------------------------------------------------------ loss
    def forward(self, batch: Batch) -> dict[str, Tensor]:
        c = self.config
        logits = self.student(batch.images)
        soft, hard, weight = self._batch_targets(batch, logits)
        im, ent, div = information_maximization(logits, c.diversity_weight)
        kd = kl_to_soft_target(soft, logits)
        pl = weighted_cross_entropy(logits, hard, weight)
        loss = c.lambda_im * im + c.lambda_kd * kd + c.lambda_pl * pl
        return {"loss": loss, "im": im.detach(), "entropy": ent.detach(), "diversity": div.detach(),
                "kd": kd.detach(), "pl": pl.detach(), "pl_kept": weight.mean().detach(), "logits": logits.detach()}
