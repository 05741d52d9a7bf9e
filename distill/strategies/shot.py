"""``shot``: source-free adaptation without a teacher — information maximization + centroid pseudo-labels."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.strategies import register_strategy
from distill.strategies._pseudo import SampleTargets, centroid_labels, collect, require_iterate
from distill.strategies.base import Batch, Needs, Strategy, StrategyContext, strategy_config
from distill.strategies.losses import information_maximization

if TYPE_CHECKING:  # for the annotation only
    from distill.student.model import Student


@strategy_config
class SHOTConfig:
    beta: float = 0.3  # weight of the pseudo-label cross-entropy (SHOT's β)
    diversity_weight: float = 1.0  # weight of the diversity half of the IM term
    freeze_head: bool = True  # keep the source hypothesis (classifier) fixed, as SHOT does
    iterations: int = 2  # centroid -> label rounds per refresh (SHOT: weighted centroids, then one hard round)
    threshold: float = 0.0  # classes whose predicted mass is at most this get no centroid


@register_strategy("shot")
class SHOT(Strategy):
    """Liang, Hu & Feng, ICML 2020, "Do We Really Need to Access the Source Data? Source
    Hypothesis Transfer for Unsupervised Domain Adaptation" (SHOT).

    As in the paper: the classifier head (the source hypothesis) is frozen and the feature
    extractor is trained on the unlabeled target with information maximization (mean entropy
    + diversity of the mean prediction) plus β · CE on self-supervised pseudo-labels, which
    are re-derived each epoch from prediction-weighted class centroids in feature space
    (nearest centroid by cosine, then one round with hard-label centroids). No teacher.

    Differences: features are the student's pooled pre-logit features (SHOT adds a
    weight-normalized bottleneck and batch norm trained with label smoothing on the source);
    the source model here is whatever ``distill train`` produced.
    """

    Config = SHOTConfig
    needs = Needs(labels=False, target_data=True, source_checkpoint=True)
    #: its only signal is its own predictions: at the teacher-guided strategies' lr 3e-3 it drifts
    #: (benchmarks/RESULTS.md, "Source-free adaptation": 36.1 mean vs 44.1 at 5e-4)
    optim_defaults = {"lr": 5e-4}

    def __init__(self, student: Student, config: SHOTConfig, ctx: StrategyContext):
        super().__init__(student, config, ctx)
        if config.freeze_head and student.head is not None:  # a text head is a buffer: frozen already
            for p in student.head.parameters():
                p.requires_grad_(False)
        self.targets = SampleTargets()

    @torch.no_grad()
    def refresh(self, epoch: int) -> None:
        data = collect(self.student, require_iterate(self.ctx.iterate_train, self.name)(), teachers=False)
        labels = centroid_labels(data["features"], data["probs"], self.config.iterations, self.config.threshold)
        size = max(self.ctx.num_samples, int(data["index"].max()) + 1)
        # only the hard labels are read back (forward): no [S, C] one-hot buffer, 4 kB an image at 1,000 classes
        self.targets.set(epoch, size, data["index"], torch.zeros(len(labels), 0), labels, torch.ones(len(labels)))

    def on_epoch_start(self, epoch: int) -> None:
        if not self.targets.fresh(epoch):
            self.refresh(epoch)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        logits = self.student(batch.images)
        im, ent, div = information_maximization(logits, self.config.diversity_weight)
        got = self.targets.get(batch.sample_index, batch.host_index) if batch.sample_index is not None else None
        own = logits.detach().argmax(-1)  # before the first refresh: the model's own labels
        labels = own if got is None else torch.where(got[3], got[1], own)
        pl = F.cross_entropy(logits.float(), labels)
        loss = im + self.config.beta * pl
        return {"loss": loss, "im": im.detach(), "entropy": ent.detach(), "diversity": div.detach(),
                "pl": pl.detach(), "logits": logits.detach()}
