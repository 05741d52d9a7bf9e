"""``vl2v``: student embeddings classified by the teacher's text embeddings and aligned with its image embeddings."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.errors import DistillError
from distill.strategies import register_strategy
from distill.strategies.base import Batch, Needs, Strategy, StrategyContext, strategy_config
from distill.strategies.losses import cosine_distance, kl_div_with_temperature, label_cross_entropy
from distill.utils.runtime import full_precision

if TYPE_CHECKING:  # for the annotation only
    from distill.student.model import Student

_MAX_SCALE = 100.0  # CLIP clamps its learned logit scale here


@strategy_config
class VL2VConfig:
    temperature: float = 4.0  # KD softmax temperature (text-anchored student logits vs teacher logits)
    lambda_align: float = 1.0  # weight of 1 − cos(z, teacher image embedding)
    lambda_kd: float = 1.0  # weight of KD into the text-anchored logits (their CE has weight 1)
    scale: float | None = None  # initial s in s · z Tᵀ; None = the teacher's logit scale (CLIP's 1/0.07 if unknown)
    learn_scale: bool = True  # learn s (as log s, clamped to <= 100 like CLIP) or keep it fixed


@register_strategy("vl2v")
class VL2V(Strategy):
    """Addepalli et al., CVPR 2024, "Leveraging Vision-Language Models for Improving Domain
    Generalization in Image Classification" (VL2V-ADiP: Align, Distill, Predict).

    With f = features(x) [B, F], z = normalize(P f) [B, D] (P the student's projector),
    T the teacher's frozen text embeddings [C, D], s a logit scale, t the teacher's image
    embedding [B, D] and τ the KD temperature:

        text_logits = s · z Tᵀ                                   [B, C]
        loss = CE(text_logits, y) + lambda_align · (1 − cos(z, t))
             + lambda_kd · τ² · KL(teacher_τ || text_logits_τ)

    The text-anchored terms put the student's embedding where the teacher's image tower puts
    the image and where its text tower puts the class. The text-anchored classifier is what
    ships: the student's linear head is not trained but *is* that classifier, folded —
    head(f) = s · T (P f + b_P) = ‖P f + b_P‖ · text_logits (same argmax; the per-image
    positive factor changes calibration only) — refreshed from P, T and s by :meth:`fold_head`
    before every evaluation (so before every best checkpoint is saved). ``student(x)``, the
    path that evaluation and export use, therefore predicts with the teacher's text embeddings. (Before, the head was a
    separately trained linear probe on detached features and the text classifier never reached the exported model.)

    How this differs from VL2V-ADiP: the paper works in stages — first aligning the
    (pretrained) student's projected features with the teacher's image *and* text
    embeddings, then distilling the aligned representation into the whole student — and
    predicts with the text embeddings as the classifier. Here everything is one stage with
    one objective; text-tower alignment is only through the classifier (CE/KD on s · z Tᵀ)
    rather than an explicit feature term; the per-image target is the cached teacher image
    embedding; and the exported classifier is the text classifier folded into a linear layer.
    """

    Config = VL2VConfig
    # buffers (register_buffer leaves them typed Tensor | Module); log_scale is a Parameter with learn_scale
    text_embeddings: Tensor
    log_scale: Tensor
    needs = Needs(labels=True, cached_logits=True, cached_features=True, text_embeddings=True,
                  unlabeled=True)

    def __init__(self, student: Student, config: VL2VConfig, ctx: StrategyContext):
        super().__init__(student, config, ctx)
        projector = getattr(student, "projector", None)
        if projector is None:
            raise DistillError(f"strategy '{self.name}' classifies the student's projected features with the "
                               "teacher's text embeddings, but the student has no projector: build it with "
                               "embed_dim = the teacher's width")
        if ctx.text_embeddings is None:
            raise DistillError(f"strategy '{self.name}' needs the teacher's text embeddings (the cache's "
                               "text_embeddings.safetensors), but none were supplied")
        text = ctx.text_embeddings.detach().float()
        if text.shape != (ctx.num_classes, projector.out_features):
            raise DistillError(f"strategy '{self.name}': text embeddings {tuple(text.shape)} do not match "
                               f"classes x student projector width ({ctx.num_classes}, {projector.out_features})")
        self.register_buffer("text_embeddings", F.normalize(text, dim=-1), persistent=False)  # [C, D]
        s = config.scale if config.scale is not None else (ctx.logit_scale or 1 / 0.07)
        if not 0 < s <= _MAX_SCALE:
            raise DistillError(f"strategy.scale: must be in (0, {_MAX_SCALE:g}], got {s!r}")
        log_s = torch.tensor(math.log(s))
        if config.learn_scale:
            self.log_scale = nn.Parameter(log_s)
        else:
            self.register_buffer("log_scale", log_s)
        # the head is derived from (P, T, s), never trained: no gradient, no weight decay on it
        student.require_linear_head(f"strategy '{self.name}'").requires_grad_(False)
        self.fold_head()

    def scale(self) -> Tensor:
        """The current temperature s, a scalar tensor."""
        return self.log_scale.clamp(max=math.log(_MAX_SCALE)).exp()

    def text_logits(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Student features [B, F] -> (z = normalized embedding [B, D], s · z Tᵀ [B, C])."""
        projector = self.student.projector
        assert projector is not None  # __init__ refuses a student without a projector
        emb = projector(features)
        with full_precision(emb):  # normalization and the scaled cosine logits in fp32, even under autocast
            z = F.normalize(emb.float(), dim=-1)
            return z, self.scale() * z @ self.text_embeddings.T

    @torch.no_grad()
    def fold_head(self) -> None:
        """Write the text-anchored classifier into the student's head: head(f) = s · T (P f + b_P)."""
        self.student.zero_shot_init(self.text_embeddings, float(self.scale()))

    def predict(self, images: Tensor) -> Tensor:
        """The exported path ``student(images)``, with the head folded from the current P, T, s."""
        self.fold_head()
        return self.student(images)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        f = self.student.features(batch.images)  # [B, F]
        z, logits = self.text_logits(f)
        ce_text = label_cross_entropy(logits, self.need(batch.labels, "labels"), batch.partner_labels, batch.mix_lam)
        align = cosine_distance(z, self.need(batch.teacher_emb, "teacher_emb"))
        kd = kl_div_with_temperature(logits, self.need(batch.teacher_logits, "teacher_logits"), self.config.temperature)
        loss = ce_text + self.config.lambda_align * align + self.config.lambda_kd * kd
        return {"loss": loss, "ce_text": ce_text.detach(), "align": align.detach(), "kd": kd.detach(),
                "scale": self.scale().detach(), "logits": logits.detach()}
