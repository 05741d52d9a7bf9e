"""``rise``: labels + Hinton KD + mimicking the teacher's image embedding through a projector."""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from torch import Tensor

from distill.errors import DistillError
from distill.strategies import register_strategy
from distill.strategies.base import Batch, Needs, Strategy, StrategyContext, strategy_config
from distill.strategies.losses import cosine_distance, kl_div_with_temperature, label_cross_entropy, squared_l2_distance

if TYPE_CHECKING:  # for the annotation only
    from distill.student.model import Student


@strategy_config
class RISEConfig:
    temperature: float = 4.0  # KD softmax temperature for teacher and student logits
    lambda_kd: float = 1.0  # weight of the KD term (label cross-entropy has weight 1)
    lambda_feat: float = 1.0  # weight of the embedding-mimicking term
    # cosine: 1 − cos(P f, t), direction only; l2: ‖P f − t‖², which also pins ‖P f‖ to ‖t‖ = 1
    distance: Literal["cosine", "l2"] = "cosine"


@register_strategy("rise")
class RISE(Strategy):
    """Huang et al., ICCV 2023, "A Sentence Speaks a Thousand Images: Domain Generalization
    through Distilling CLIP with Language Guidance" (RISE).

    Loss, per batch of student features f [B, F], teacher embeddings t [B, D]:
    CE(head(f), y) + lambda_kd · T² · KL(teacher_T || student_T) + lambda_feat · d(P f, t),
    with P the student's projector (nn.Linear(F, D)) and d the cosine or squared-L2 distance.

    How this differs from RISE: RISE's representation terms are anchored in the teacher's
    *text* tower — an "absolute distance" pulls the student's image representation towards
    the text embedding of a domain-free sentence for the image's class, and a "relative
    distance" asks the student to keep the teacher's pattern of distances to a set of
    domain-specific sentence embeddings. Here the target is the teacher's own per-image
    embedding (read from the cache), i.e. plain image-to-image feature mimicking; the
    language guidance only enters through the zero-shot soft labels of the KD term. For a
    text-anchored variant see ``vl2v``.
    """

    Config = RISEConfig
    needs = Needs(labels=True, cached_logits=True, cached_features=True, unlabeled=True)

    def __init__(self, student: Student, config: RISEConfig, ctx: StrategyContext):
        super().__init__(student, config, ctx)
        projector = getattr(student, "projector", None)
        if projector is None:
            raise DistillError(f"strategy '{self.name}' mimics the teacher's embeddings through the student's "
                               "projector, but the student has none: build it with embed_dim = the teacher's width")
        if ctx.embed_dim is not None and projector.out_features != ctx.embed_dim:
            raise DistillError(f"strategy '{self.name}': student projector outputs {projector.out_features} dims "
                               f"but the teacher's embeddings have {ctx.embed_dim}")

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        out = self.student.forward_all(batch.images)
        logits, emb = out["logits"], out["embedding"]  # [B, C], [B, D]
        ce = label_cross_entropy(logits, self.need(batch.labels, "labels"), batch.partner_labels, batch.mix_lam)
        kd = kl_div_with_temperature(logits, self.need(batch.teacher_logits, "teacher_logits"), self.config.temperature)
        distance = cosine_distance if self.config.distance == "cosine" else squared_l2_distance
        feat = distance(emb, self.need(batch.teacher_emb, "teacher_emb"))
        loss = ce + self.config.lambda_kd * kd + self.config.lambda_feat * feat
        return {"loss": loss, "ce": ce.detach(), "kd": kd.detach(), "feat": feat.detach(),
                "logits": logits.detach()}
