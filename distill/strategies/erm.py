"""``erm``: plain supervised training on source labels — the baseline everything is compared to."""
from __future__ import annotations

from torch import Tensor

from distill.strategies import register_strategy
from distill.strategies.base import Batch, Needs, Strategy, strategy_config
from distill.strategies.losses import label_cross_entropy


@strategy_config
class ERMConfig:
    label_smoothing: float = 0.0  # cross-entropy label smoothing


@register_strategy("erm")
class ERM(Strategy):
    """Empirical risk minimisation (Vapnik 1998; the DomainBed baseline, Gulrajani & Lopez-Paz 2021).

    Same as DomainBed's ERM except that source domains are pooled in one loader rather than
    sampled one minibatch per domain. On a cache with an augmenting view policy it trains on
    the same augmented (and mixed) views as ``fm``: "erm with the same augmentations", the fair
    baseline. Pool rows (``data.unlabeled``) carry no label and add nothing.
    """

    Config = ERMConfig
    needs = Needs(labels=True, unlabeled=True)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        logits = self.student(batch.images)
        ce = label_cross_entropy(logits, self.need(batch.labels, "labels"), batch.partner_labels, batch.mix_lam,
                                 label_smoothing=self.config.label_smoothing)
        return {"loss": ce, "ce": ce.detach(), "logits": logits.detach()}
