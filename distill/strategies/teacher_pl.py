"""``teacher_pl``: adapt a source model with cross-entropy on the teacher's zero-shot pseudo-labels only."""
from __future__ import annotations

import torch
from torch import Tensor

from distill.strategies import register_strategy
from distill.strategies.base import Batch, Needs, Strategy, strategy_config
from distill.strategies.losses import weighted_cross_entropy


@strategy_config
class TeacherPLConfig:
    teacher_temperature: float = 1.0  # softmax temperature on the cached logits (only matters with confidence > 0)
    confidence: float = 0.0  # skip images where the (averaged) teacher is less sure than this


@register_strategy("teacher_pl")
class TeacherPL(Strategy):
    """Pseudo-labelling (Lee 2013, "Pseudo-Label: The Simple and Efficient Semi-Supervised
    Learning Method") with the VLM's zero-shot labels — the "CLIP zero-shot as pseudo-label"
    baseline of the SFDA-with-VLM papers (e.g. DIFO, Tang et al. 2024).

    Loss: CE(student(x), argmax p_T(x)) on the target images, with p_T the teacher's softmax
    on the same (cached) view; several caches are averaged with equal weights (no reliability
    weighting: that is ``sfda``'s job). Lee's version mixes labelled data and takes the
    model's *own* argmax; here the labels come from the teacher and no labelled data is used.
    """

    Config = TeacherPLConfig
    needs = Needs(labels=False, cached_logits=True, target_data=True, source_checkpoint=True)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        c = self.config
        all_logits = batch.teacher_logits_all or [self.need(batch.teacher_logits, "teacher_logits")]
        probs = torch.stack([(t.float() / c.teacher_temperature).softmax(-1) for t in all_logits]).mean(0)
        conf, labels = probs.max(-1)
        weight = (conf >= c.confidence).float()
        logits = self.student(batch.images)
        ce = weighted_cross_entropy(logits, labels, weight)
        return {"loss": ce, "ce": ce.detach(), "kept": weight.mean(), "logits": logits.detach()}
