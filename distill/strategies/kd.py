"""``kd``: Hinton knowledge distillation from the cached zero-shot soft labels."""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import Field
from torch import Tensor

from distill.errors import DistillError
from distill.strategies import register_strategy
from distill.strategies._teachers import TeacherEnsemble
from distill.strategies.base import Batch, Needs, Strategy, StrategyContext, strategy_config
from distill.strategies.losses import kl_div_with_temperature, label_cross_entropy

if TYPE_CHECKING:  # for the annotation only
    from distill.student.model import Student


@strategy_config
class KDOnlineConfig:
    temperature: float = 4.0  # softmax temperature for teacher and student
    alpha: float = 0.9  # weight of the distillation term vs. hard labels


@strategy_config
class KDConfig(KDOnlineConfig):
    # several caches: combine: first (the first cache alone) | mean_probs (weights: one per cache); see _teachers.py
    teachers: TeacherEnsemble = Field(default_factory=TeacherEnsemble)


@register_strategy("kd")
class KD(Strategy):
    """Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network".

    As in the paper: alpha · T² · KL(teacher_T || student_T) + (1 − alpha) · CE(labels).
    Differs in where soft labels come from: the teacher is a zero-shot VLM (logits = scale ·
    cosine to prompt-ensembled class text embeddings), read from the cache, never run here.
    With several caches, ``teachers.combine=mean_probs`` distils from the (weighted) mean of the
    teachers' softened outputs, the ensemble soft target of the paper's section 2
    (:mod:`distill.strategies._teachers`); the default reads the first cache alone.
    """

    Config: ClassVar[type] = KDConfig  # KDOnline's is KDOnlineConfig, its base
    needs = Needs(labels=True, cached_logits=True, unlabeled=True)

    def __init__(self, student: Student, config: KDConfig, ctx: StrategyContext):
        super().__init__(student, config, ctx)
        config.teachers.check(ctx.num_teachers, self.name)

    def soft_term(self, logits: Tensor, batch: Batch) -> Tensor:
        """T² · KL(teacher_T || student_T), batch mean, from the cache(s) as ``teachers`` combines them."""
        return self.config.teachers.kl(logits, batch, self.config.temperature)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        logits = self.student(batch.images)
        kd = self.soft_term(logits, batch)
        ce = label_cross_entropy(logits, self.need(batch.labels, "labels"), batch.partner_labels, batch.mix_lam)
        loss = self.config.alpha * kd + (1 - self.config.alpha) * ce
        return {"loss": loss, "kd": kd.detach(), "ce": ce.detach(), "logits": logits.detach()}


@register_strategy("kd_online")
class KDOnline(KD):
    """Hinton et al. 2015 KD with the teacher run on every batch instead of read from a cache.

    Same loss as ``kd``; exists for users without a cache and as the baseline that shows what
    the cache saves (benchmarks/train_throughput.py). The teacher sees the student's view,
    resized to the teacher's resolution and normalized with the teacher's mean/std.
    """

    Config = KDOnlineConfig
    needs = Needs(labels=True, online_teacher=True)

    def __init__(self, student: Student, config: KDOnlineConfig, ctx: StrategyContext):
        Strategy.__init__(self, student, config, ctx)  # one teacher, run online: no cache to combine
        if ctx.teacher is None or ctx.teacher_input is None:
            raise DistillError(f"strategy '{self.name}' runs the teacher on every batch: set the 'teacher' section "
                               "(arch, pretrained) so the trainer can build it")

    def soft_term(self, logits: Tensor, batch: Batch) -> Tensor:
        return kl_div_with_temperature(logits, self.need(batch.teacher_logits, "teacher_logits"), self.config.temperature)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        assert self.ctx.teacher_input is not None  # __init__ refuses a context without the teacher
        with torch.no_grad():
            _, teacher_logits = self.ctx.teacher(self.ctx.teacher_input(batch.pixels))
        batch.teacher_logits = teacher_logits
        return super().forward(batch)
