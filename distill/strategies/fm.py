"""``fm``: function matching -- match the teacher on exactly the augmented (and mixed) views it saw."""
from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field
from torch import Tensor

from distill.errors import DistillError
from distill.strategies import register_strategy
from distill.strategies._teachers import TeacherEnsemble
from distill.strategies.base import Batch, Needs, Strategy, StrategyContext, strategy_config
from distill.strategies.losses import (
    cosine_distance,
    embedding_contrastive,
    embedding_relational,
    label_cross_entropy,
    text_anchor_kl,
)

if TYPE_CHECKING:  # for the annotation only
    from distill.student.model import Student


@strategy_config
class FMConfig:
    temperature: float = 1.0  # softmax temperature for teacher and student (the paper's: 1)
    # the teacher's softmax temperature alone (None: temperature); < temperature sharpens the target the
    # student matches (benchmarks/RESULTS.md, "Does a more confident student flip less in int8?")
    teacher_temperature: float | None = None
    alpha: float = 1.0  # weight of matching the teacher; 1 - alpha goes to label cross-entropy (paper: none)
    feature_weight: float = 0.0  # weight of 1 - cos(P f, teacher embedding); 0 = off, no projector needed
    # weight of T² KL(teacher || student) of the zero-shot rule over EVERY class name (withheld ones too), both
    # sides' logit_scale · cos(embedding, text): ties P f to the text directions re-targeting uses; 0 = off
    text_anchor_weight: float = 0.0
    # CLIP-KD-style geometry of P f over the batch (pool rows too; no label needed), see losses.py; 0 = off:
    contrastive_weight: float = 0.0  # InfoNCE: P f of image i must pick the teacher embedding of image i
    relational_weight: float = 0.0  # KL of the batch's teacher-teacher vs student-student cosine distributions
    # the two terms' softmax temperature over cosines; None = 1 / the teacher's logit_scale (from the cache):
    # the sharpness the teacher's own contrastive training settled on (demo stand-in: 1/14.07 = 0.071,
    # close to CLIP's initial 0.07; OpenAI CLIP: 1/100)
    geometry_temperature: float | None = None
    # several caches: combine: first (the first cache alone) | mean_probs (weights: one per cache); see _teachers.py
    teachers: TeacherEnsemble = Field(default_factory=TeacherEnsemble)


#: the weights whose terms read the student's projected embedding P f (each needs the projector)
_EMBEDDING_WEIGHTS = ("feature_weight", "text_anchor_weight", "contrastive_weight", "relational_weight")


@register_strategy("fm")
class FM(Strategy):
    """Beyer et al., CVPR 2022, "Knowledge distillation: A good teacher is patient and consistent".

    Function matching: the student matches the teacher's output on the *identical* input, an
    aggressively augmented view (inception crop, photometric jitter, mixup/cutmix). Here that
    view is the batch's: a cache built with ``distill cache build --policy fm`` stores the
    teacher's logits of every view it rendered, and the trainer shows the student exactly those
    bytes, so teacher and student are consistent by construction. Per batch:

        alpha · T² · KL(teacher_T' || student_T)        # T' = teacher_temperature (default: T)
        + feature_weight · (1 − cos(P f, t))         # only when feature_weight > 0
        + text_anchor_weight · T² · KL(zs(t) || zs(P f))   # only when text_anchor_weight > 0
        + contrastive_weight · InfoNCE(P f_i picks t_i among the batch's t)   # only when > 0
        + relational_weight · KL(softmax_j cos(t_i, t_j)/τ || softmax_j cos(P f_i, P f_j)/τ)   # j != i
        + (1 − alpha) · CE(labels)                    # mixed rows: lam · CE(y) + (1 − lam) · CE(y')

    with P the student's projector and t the cached teacher image embedding of the view; zs(e) the
    zero-shot rule ``logit_scale · cos(e, text)`` over every class name of the data set, those
    ``data.withhold_classes`` leaves out of the student's head included (CLIP-KD-style). The
    matching terms see every row, pool images (``data.unlabeled``) included; the label term
    only rows with a label. The two batch terms are CLIP-KD's (Yang et al., CVPR 2024) "ICL" and
    "CRD" made image-image (the student has no text tower): the cosine term fixes each direction, the
    contrastive one also the spacing between images, the relational one only the spacing; τ is
    ``geometry_temperature`` (default: 1 / the teacher's logit_scale).

    How this differs from the paper: the teacher's outputs are computed once for K cached views
    per image instead of on fresh views every step (ml-dr's trade, Faghri et al. 2023), so "patient"
    schedules cost only student steps, and the paper's caveat applies -- with few views the
    student sees a fixed teacher and can overfit it, so K should be large. The paper uses no
    labels (alpha = 1, the default) and no feature term; both are options here. With several
    caches (teachers cached on the same views), ``teachers.combine=mean_probs`` matches the
    (weighted) mean of their softened outputs (:mod:`distill.strategies._teachers`); the feature
    term stays the first cache's embedding.
    """

    Config = FMConfig
    needs = Needs(labels=True, cached_logits=True, cached_features=True, augmented_views=True, unlabeled=True)

    def __init__(self, student: Student, config: FMConfig, ctx: StrategyContext):
        super().__init__(student, config, ctx)
        if not 0.0 <= config.alpha <= 1.0:
            raise DistillError(f"strategy.alpha: must be in [0, 1], got {config.alpha}")
        if config.temperature <= 0:
            raise DistillError(f"strategy.temperature: must be > 0, got {config.temperature}")
        if config.teacher_temperature is not None and config.teacher_temperature <= 0:
            raise DistillError(f"strategy.teacher_temperature: must be > 0, got {config.teacher_temperature}")
        if config.feature_weight < 0:
            raise DistillError(f"strategy.feature_weight: must be >= 0, got {config.feature_weight}")
        if config.text_anchor_weight < 0:
            raise DistillError(f"strategy.text_anchor_weight: must be >= 0, got {config.text_anchor_weight}")
        for key in ("contrastive_weight", "relational_weight"):
            if getattr(config, key) < 0:
                raise DistillError(f"strategy.{key}: must be >= 0, got {getattr(config, key)}")
        if config.geometry_temperature is not None and config.geometry_temperature <= 0:
            raise DistillError(f"strategy.geometry_temperature: must be > 0, got {config.geometry_temperature}")
        if self._uses_batch_geometry and config.geometry_temperature is None and not ctx.logit_scale:
            raise DistillError("strategy.geometry_temperature: unset and the cache has no teacher logit scale to "
                               "default to (1 / logit_scale); set it, e.g. 0.07")
        config.teachers.check(ctx.num_teachers, self.name)
        projector = getattr(student, "projector", None)
        if not self._uses_embedding and projector is not None:
            projector.requires_grad_(False)  # unused: no weight decay drift, and DDP finds no unused parameter
        if config.text_anchor_weight > 0 and (ctx.all_text_embeddings is None or not ctx.logit_scale):
            raise DistillError("strategy.text_anchor_weight: needs the teacher's text embeddings and logit "
                               "scale from the cache (set 'cache'), got none; or set it to 0")
        if self._uses_embedding:
            if projector is None:
                key = next(k for k in _EMBEDDING_WEIGHTS if getattr(config, k) > 0)
                raise DistillError(f"strategy '{self.name}': {key} > 0 matches the student's projected "
                                   "features to the teacher's embeddings, but the student has no projector: build "
                                   f"it with embed_dim = the teacher's width, or set strategy.{key}=0")
            if ctx.embed_dim is not None and projector.out_features != ctx.embed_dim:
                raise DistillError(f"strategy '{self.name}': student projector outputs {projector.out_features} "
                                   f"dims but the teacher's embeddings have {ctx.embed_dim}")

    @property
    def _uses_embedding(self) -> bool:
        return any(getattr(self.config, key) > 0 for key in _EMBEDDING_WEIGHTS)

    @property
    def _uses_batch_geometry(self) -> bool:
        return self.config.contrastive_weight > 0 or self.config.relational_weight > 0

    @property
    def geometry_temperature(self) -> float:
        """τ of the contrastive and relational terms: the config's, else 1 / the teacher's logit scale."""
        if self.config.geometry_temperature is not None:
            return self.config.geometry_temperature
        assert self.ctx.logit_scale  # checked in __init__ when a batch term is on
        return 1.0 / self.ctx.logit_scale

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        cfg = self.config
        if self._uses_embedding:
            out = self.student.forward_all(batch.images)
            logits = out["logits"]
        else:
            logits = self.student(batch.images)
        match = cfg.teachers.kl(logits, batch, cfg.temperature, cfg.teacher_temperature)
        loss = cfg.alpha * match
        parts = {"match": match.detach()}
        if cfg.feature_weight > 0:
            feat = cosine_distance(out["embedding"], self.need(batch.teacher_emb, "teacher_emb"))
            loss = loss + cfg.feature_weight * feat
            parts["feat"] = feat.detach()
        if cfg.text_anchor_weight > 0:
            assert self.ctx.all_text_embeddings is not None and self.ctx.logit_scale  # checked in __init__
            anchor = text_anchor_kl(out["embedding"], self.need(batch.teacher_emb, "teacher_emb"), self.ctx.all_text_embeddings,
                                    self.ctx.logit_scale, cfg.temperature)
            loss = loss + cfg.text_anchor_weight * anchor
            parts["anchor"] = anchor.detach()
        if cfg.contrastive_weight > 0:
            icl = embedding_contrastive(out["embedding"], self.need(batch.teacher_emb, "teacher_emb"), self.geometry_temperature)
            loss = loss + cfg.contrastive_weight * icl
            parts["icl"] = icl.detach()
        if cfg.relational_weight > 0:
            rel = embedding_relational(out["embedding"], self.need(batch.teacher_emb, "teacher_emb"), self.geometry_temperature)
            loss = loss + cfg.relational_weight * rel
            parts["rel"] = rel.detach()
        if cfg.alpha < 1:
            ce = label_cross_entropy(logits, self.need(batch.labels, "labels"), batch.partner_labels, batch.mix_lam)
            loss = loss + (1 - cfg.alpha) * ce
            parts["ce"] = ce.detach()
        return {"loss": loss, **parts, "logits": logits.detach()}
