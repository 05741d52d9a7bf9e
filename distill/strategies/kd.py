"""``kd``: Hinton knowledge distillation from the cached zero-shot soft labels."""
from __future__ import annotations

import torch
from torch import Tensor

from distill.strategies import register_strategy
from distill.strategies.base import Batch, Needs, Strategy, strategy_config
from distill.strategies.losses import kl_div_with_temperature, label_cross_entropy


@strategy_config
class KDConfig:
    temperature: float = 4.0  # softmax temperature for teacher and student
    alpha: float = 0.9  # weight of the distillation term vs. hard labels


@register_strategy("kd")
class KD(Strategy):
    """Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network".

    As in the paper: alpha · T² · KL(teacher_T || student_T) + (1 − alpha) · CE(labels).
    Differs in where soft labels come from: the teacher is a zero-shot VLM (logits = scale ·
    cosine to prompt-ensembled class text embeddings), read from the cache, never run here.
    """

    Config = KDConfig
    needs = Needs(labels=True, cached_logits=True, unlabeled=True)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        logits = self.student(batch.images)
        kd = kl_div_with_temperature(logits, batch.teacher_logits, self.config.temperature)
        ce = label_cross_entropy(logits, batch.labels, batch.partner_labels, batch.mix_lam)
        loss = self.config.alpha * kd + (1 - self.config.alpha) * ce
        return {"loss": loss, "kd": kd.detach(), "ce": ce.detach(), "logits": logits.detach()}


@register_strategy("kd_online")
class KDOnline(KD):
    """Hinton et al. 2015 KD with the teacher run on every batch instead of read from a cache.

    Same loss as ``kd``; exists for users without a cache and as the baseline that shows what
    the cache saves (benchmarks/train_throughput.py). The teacher sees the student's view,
    resized to the teacher's resolution and normalized with the teacher's mean/std.
    """

    needs = Needs(labels=True, online_teacher=True)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        with torch.no_grad():
            _, teacher_logits = self.ctx.teacher(self.ctx.teacher_input(batch.pixels))
        batch.teacher_logits = teacher_logits
        return super().forward(batch)
