"""``adv_cached``: KD on a mix of clean views and adversarial views crafted against the teacher at cache time."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.errors import DistillError
from distill.strategies import register_strategy
from distill.strategies.base import Batch, BatchSource, Needs, Strategy, StrategyContext, strategy_config
from distill.strategies.losses import kl_div_with_temperature, label_cross_entropy
from distill.student.transforms import Normalizer
from distill.utils.transfer import to_device

if TYPE_CHECKING:  # for the annotation only
    from distill.student.model import Student


@strategy_config
class AdvCachedConfig:
    temperature: float = 4.0  # KD softmax temperature
    alpha: float = 0.9  # weight of the distillation term vs. cross-entropy on the labels
    adv_fraction: float = 0.5  # share of each batch shown as its cached adversarial view instead of the clean one
    # KD target on an adversarial view: "clean" = the teacher's answer on the clean image (ARD-style: the
    # student must keep the clean answer under the perturbation); "adversarial" = the teacher's answer on
    # the perturbed image, which the attack was built to change (the teacher is fooled on ~1 in 4 of them)
    target: str = "clean"


@register_strategy("adv_cached")
class AdvCached(Strategy):
    """Teacher-free adversarial distillation in the spirit of DAD (Zhou et al., NeurIPS 2023,
    "Distilling Out-of-Distribution Robustness from Vision-Language Foundation Models").

    ``distill cache build --adv-views K`` crafts, once, K PGD views of every training image
    against the teacher (maximising KL(teacher(x) || teacher(x')), i.e. moving the teacher away
    from its own clean prediction) and stores the perturbed pixels with the teacher's logits on
    them. :meth:`batch_extras` picks one of those views per image for each batch (``adv_pixels`` at the
    student's resolution, ``adv_teacher_logits``, in ``batch.extras``); this strategy replaces a random
    ``adv_fraction`` of the batch by them and applies KD (+ label CE):

        alpha · T² · KL(t || s) + (1 − alpha) · CE(s, y)   on the mixed batch

    where, on an adversarial view, ``t`` is by default the teacher's answer on the *clean* image
    (``target: clean``, as ARD's robust student matches the teacher's clean output) — on the
    same crop: the views are crafted on the cache's clean view 0, so that is the row used, not
    the augmented view the item may have drawn for its clean counterpart — the attack
    was built to change the teacher's answer and succeeds on about a quarter of the views, so
    ``target: adversarial`` (the teacher's answer on the perturbed pixels) teaches those wrong
    answers. A step costs what a ``kd`` step costs: no teacher, no attack at training time.

    How this differs from DAD: DAD generates adversarial examples against the teacher and
    discretizes them with a VQGAN to make them natural-looking augmentations; here the L∞
    perturbations are stored as-is (8-bit pixels, replayed exactly) and never regenerated, so
    unlike ``adv_kd`` they do not track the student as it trains — the price of a teacher-free,
    cache-speed run. Measured on the digits suite: see benchmarks/RESULTS.md (``adv_kd``, which
    attacks the student itself every batch, is far more robust at 8/255, at ~3.7x kd's cost).
    """

    Config = AdvCachedConfig
    needs = Needs(labels=True, cached_logits=True, cached_adversarial=True, unlabeled=True)

    def __init__(self, student: Student, config: AdvCachedConfig, ctx: StrategyContext):
        super().__init__(student, config, ctx)
        if not 0.0 <= config.adv_fraction <= 1.0:
            raise DistillError(f"strategy.adv_fraction: must be in [0, 1], got {config.adv_fraction}")
        if config.target not in ("clean", "adversarial"):
            raise DistillError(f"strategy.target: must be 'clean' or 'adversarial', got '{config.target}'")
        spec = student.spec
        self._normalize = Normalizer(spec.mean, spec.std)

    def batch_extras(self, source: BatchSource) -> dict[str, Tensor]:
        """One cached adversarial view per image (the one ``AdversarialViews.choose`` picks for this epoch):

        ``adv_pixels`` [B, 3, H, W] in [0, 1] at the student's resolution, ``adv_teacher_logits`` [B, C] (the
        teacher on them) and ``adv_clean_teacher_logits`` [B, C] (the teacher on the clean crop they were
        crafted from: cached view 0, not the crop of ``batch.images`` when the item drew an augmented view).
        """
        adv, index, dev = source.adversarial, source.sample_index, source.device
        if adv is None:
            return {}
        rows = adv.lookup(index, adv.choose(index, source.epoch, source.seed))
        px = to_device(rows["pixels"], dev).float() / 255.0
        size = tuple(self.student.spec.input_size)
        if tuple(px.shape[-2:]) != size:
            px = F.interpolate(px, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        # the views were crafted on the teacher's clean crop (view 0): its answer there, not on this item's view
        view0 = source.caches[0].lookup(index, torch.zeros_like(index))["logits"]
        return {"adv_pixels": px.contiguous(memory_format=source.memory_format),
                "adv_teacher_logits": source.student_logits(to_device(rows["logits"], dev)),
                "adv_clean_teacher_logits": source.student_logits(to_device(view0, dev))}

    def mix(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """(images [B, 3, H, W], teacher logits [B, C], adversarial mask [B] bool) of the mixed batch."""
        x = batch.extras
        if not {"adv_pixels", "adv_teacher_logits", "adv_clean_teacher_logits"} <= x.keys():
            raise DistillError(f"strategy '{self.name}': the batch carries no cached adversarial views (build the "
                               "cache with `distill cache build --adv-views K`)")
        B = len(batch.images)
        mask = torch.rand(B) < self.config.adv_fraction  # global RNG: the trainer reseeds it per (seed, epoch, step)
        self._all_clean = not bool(mask.any())  # read on the CPU: no GPU sync in forward
        mask = to_device(mask, batch.images.device)  # pinned first: a blocking copy would wait for the GPU's queue
        m = mask.view(B, 1, 1, 1)
        images = torch.where(m, self._normalize(x["adv_pixels"].to(batch.images.dtype)), batch.images)
        # an adversarial row shows view 0's crop, perturbed: its target is the teacher on that crop
        # (clean, or perturbed with target: adversarial), never the teacher on the item's own view
        adv_target = x["adv_teacher_logits"] if self.config.target == "adversarial" else x["adv_clean_teacher_logits"]
        logits = torch.where(mask.view(B, 1), adv_target, self.need(batch.teacher_logits, "teacher_logits"))
        return images, logits, mask

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        c = self.config
        images, t_logits, mask = self.mix(batch)
        logits = self.student(images)
        kd = kl_div_with_temperature(logits, t_logits, c.temperature)
        # an adversarial row shows view 0's unmixed crop: only its own label applies there
        lam = None if batch.mix_lam is None else torch.where(mask, torch.ones_like(batch.mix_lam), batch.mix_lam)
        ce = label_cross_entropy(logits, self.need(batch.labels, "labels"), batch.partner_labels, lam)
        loss = c.alpha * kd + (1 - c.alpha) * ce
        shown = logits.detach()
        out = {"loss": loss, "kd": kd.detach(), "ce": ce.detach(), "adv_share": mask.float().mean()}
        if self._all_clean:
            out["logits"] = shown  # the live accuracy display reads clean-image logits only
        return out
