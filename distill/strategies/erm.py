"""``erm``: plain supervised training on source labels — the baseline everything is compared to."""
from __future__ import annotations


import torch.nn.functional as F
from torch import Tensor

from distill.strategies import register_strategy
from distill.strategies.base import Batch, Needs, Strategy, strategy_config


@strategy_config
class ERMConfig:
    label_smoothing: float = 0.0  # cross-entropy label smoothing


@register_strategy("erm")
class ERM(Strategy):
    """Empirical risk minimisation (Vapnik 1998; the DomainBed baseline, Gulrajani & Lopez-Paz 2021).

    Same as DomainBed's ERM except that source domains are pooled in one loader rather than
    sampled one minibatch per domain.
    """

    Config = ERMConfig
    needs = Needs(labels=True)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        logits = self.student(batch.images)
        ce = F.cross_entropy(logits.float(), batch.labels, label_smoothing=self.config.label_smoothing)
        return {"loss": ce, "ce": ce.detach(), "logits": logits.detach()}
