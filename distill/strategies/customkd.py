"""``customkd``: align the student with teacher embeddings customised to it by a learnable transform."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor, nn

from distill.errors import DistillError
from distill.strategies import register_strategy
from distill.strategies.base import Batch, Needs, Strategy, StrategyContext, strategy_config
from distill.strategies.losses import cosine_distance, kl_div_with_temperature, label_cross_entropy

if TYPE_CHECKING:  # for the annotation only
    from distill.student.model import Student


@strategy_config
class CustomKDConfig:
    temperature: float = 4.0  # KD softmax temperature (student head and customised head vs teacher)
    lambda_kd: float = 1.0  # weight of KD into the student's head (label cross-entropy has weight 1)
    lambda_custom: float = 1.0  # weight of aligning f with the customised teacher feature g(t) (stop-gradient)
    lambda_general: float = 1.0  # weight of aligning P f with the raw teacher embedding t; 0 = off, no projector needed
    lambda_fit: float = 1.0  # weight of g's own loss: CE + KD of head(g(t)) through the student's frozen head
    hidden: int = 256  # width of g's hidden layer (D -> hidden -> F, GELU); 0 = a linear map D -> F


@register_strategy("customkd")
class CustomKD(Strategy):
    """Lee et al., CVPR 2025, "CustomKD: Customizing Large Vision Foundation for Edge Model
    Improvement via Knowledge Distillation".

    A learnable transform g (an MLP D -> hidden -> F, a submodule of this strategy so the
    optimizer trains it) maps the teacher's embedding t [B, D] into the student's feature
    space [B, F]. With f = features(x), head the student's classifier, P its projector and d the
    cosine distance 1 − cos (scale-free, so g need not match the student's feature norm):

        loss = CE(head(f), y) + lambda_kd · KD(head(f), teacher)
             + lambda_custom  · d(f, sg[g(t)])                      # task-specific, customised
             + lambda_general · d(P f, t)                           # task-general, raw teacher
             + lambda_fit · [CE(head*(g(t)), y) + KD(head*(g(t)), teacher)]

    where sg is stop-gradient and head* is the student's head with its weights detached.

    Collapse guard: g could make the target trivially easy (e.g. map every t to the mean
    student feature) if the alignment term could move it. So g receives no gradient from the
    alignment (stop-gradient on the target side) and is trained only to make g(t) a feature
    the *student's own head* reads as the label and the teacher's soft prediction — the
    paper's "customisation" of teacher features with the student's head classifier. That
    head is frozen on this path, so the exported classifier is never fitted to
    teacher-derived features, only to the student's.

    How this differs from CustomKD: the paper alternates a feature-customisation stage and a
    KD stage every epoch, targets unlabeled settings (UDA, semi-supervised) and uses vision
    foundation models such as DINOv2 or CLIP as teachers; here both stages are one joint
    objective per step (the stop-gradient and the frozen head keep the two roles apart),
    labels are used, and t is the cached, L2-normalized CLIP image embedding.
    """

    Config = CustomKDConfig
    needs = Needs(labels=True, cached_logits=True, cached_features=True, unlabeled=True)

    def __init__(self, student: Student, config: CustomKDConfig, ctx: StrategyContext):
        super().__init__(student, config, ctx)
        student.require_linear_head(f"strategy '{self.name}'")
        dim = ctx.embed_dim
        if dim is None and ctx.text_embeddings is not None:
            dim = int(ctx.text_embeddings.shape[1])
        if dim is None:
            raise DistillError(f"strategy '{self.name}' builds its transform from the teacher's embedding width, "
                               "but none was supplied (StrategyContext.embed_dim)")
        if config.lambda_general > 0 and getattr(student, "projector", None) is None:
            raise DistillError(f"strategy '{self.name}': lambda_general > 0 aligns the student's projector with the "
                               "teacher's embeddings, but the student has none: build it with embed_dim = the "
                               "teacher's width, or set strategy.lambda_general=0")
        width = student.num_features
        self.transform: nn.Module
        if config.hidden > 0:
            self.transform = nn.Sequential(nn.Linear(dim, config.hidden), nn.GELU(), nn.Linear(config.hidden, width))
        else:
            self.transform = nn.Linear(dim, width)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        cfg = self.config
        out = self.student.forward_all(batch.images)
        f, logits = out["features"], out["logits"]  # [B, F], [B, C]
        labels, teacher_logits = self.need(batch.labels, "labels"), self.need(batch.teacher_logits, "teacher_logits")
        teacher_emb = self.need(batch.teacher_emb, "teacher_emb")
        ce = label_cross_entropy(logits, labels, batch.partner_labels, batch.mix_lam)
        kd = kl_div_with_temperature(logits, teacher_logits, cfg.temperature)

        custom_feat = self.transform(teacher_emb)  # g(t) [B, F]
        custom = cosine_distance(f, custom_feat.detach())
        head = self.student.head
        assert head is not None  # __init__ required a linear head (require_linear_head)
        custom_logits = F.linear(custom_feat, head.weight.detach(), head.bias.detach())  # [B, C]
        fit = (label_cross_entropy(custom_logits, labels, batch.partner_labels, batch.mix_lam)
               + kl_div_with_temperature(custom_logits, teacher_logits, cfg.temperature))

        loss = ce + cfg.lambda_kd * kd + cfg.lambda_custom * custom + cfg.lambda_fit * fit
        parts = {"ce": ce.detach(), "kd": kd.detach(), "custom": custom.detach(), "fit": fit.detach()}
        if cfg.lambda_general > 0:
            general = cosine_distance(out["embedding"], teacher_emb)
            loss = loss + cfg.lambda_general * general
            parts["general"] = general.detach()
        return {"loss": loss, **parts, "logits": logits.detach()}
