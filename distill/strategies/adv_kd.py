"""``adv_kd``: distil on clean and on PGD-crafted inputs where student and (online) teacher disagree most."""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from distill.errors import DistillError
from distill.robust.attacks import pgd, teacher_logits_with_grad
from distill.strategies import register_strategy
from distill.strategies.base import Batch, Needs, Strategy, StrategyContext, strategy_config
from distill.strategies.losses import kl_div_with_temperature, kl_per_sample, label_cross_entropy
from distill.student.transforms import Normalizer

if TYPE_CHECKING:  # for the annotation only
    from distill.student.model import Student


@strategy_config
class AdvKDConfig:
    temperature: float = 4.0  # KD softmax temperature (clean and adversarial terms, and the attack's KL)
    alpha: float = 0.9  # weight of the distillation terms vs. cross-entropy on the clean labels
    adv_weight: float = 1.0  # weight of the adversarial KD term relative to the clean one
    epsilon: float = 0.03137254901960784  # L∞ radius in pixel units ([0, 1] images): 8/255
    step_size: float = 0.00784313725490196  # PGD step in pixel units: 2/255
    steps: int = 3  # PGD steps per batch
    random_start: bool = True  # start PGD at a uniform point of the ε-ball
    # teacher_adv: the attack maximises KL(teacher(x') || student(x')), back-propagating through
    # the frozen teacher at every step (this strategy's definition); teacher_clean: the cached
    # clean teacher output is the reference, so the teacher runs once per batch, on the final x'.
    attack: Literal["teacher_adv", "teacher_clean"] = "teacher_adv"
    jitter: float = 0.0  # > 0: random translations (fraction of size, kornia) inside each attack step (EOT)


@register_strategy("adv_kd")
class AdvKD(Strategy):
    """Adversarial distillation from an online VLM teacher, after APD (Luo et al. 2024,
    "Adversarial Prompt Distillation for Vision-Language Models") and DAD (Zhou et al.,
    NeurIPS 2023, "Distilling Out-of-Distribution Robustness from Vision-Language Foundation
    Models"); the attack objective is ARD's (Goldblum et al., AAAI 2020).

    Per batch, PGD in pixel space (``batch.pixels`` in [0, 1], normalized with the student's
    mean/std by ``kornia.enhance.normalize`` at every step, so ε is an image-space budget)
    finds x' in the ε-ball maximising the student–teacher divergence
    KL(softmax(teacher(x')/T) || softmax(student(x')/T)). The student (in eval mode during
    the attack, so BatchNorm statistics see only the training forward) then learns

        alpha · T² · [KL(t(x) || s(x)) + adv_weight · KL(t(x') || s(x'))] + (1 − alpha) · CE(s(x), y)

    with t(x) from the cache and t(x') from the online teacher — the only teacher calls.

    How this differs: APD adversarially tunes visual and textual *prompts* of a CLIP student
    against a clean CLIP teacher, attacking the student's cross-entropy; DAD crafts adversarial
    examples against the *teacher* and discretizes them with a VQGAN before distilling. Here
    the student is a small timm network, the attack targets the student–teacher divergence
    itself (the teacher is re-queried on x', so the student learns what the teacher says
    there rather than being pinned to its clean answer), and there is no VQGAN. For the
    teacher-free, cache-time variant closer to DAD see ``adv_cached``.
    """

    Config = AdvKDConfig
    needs = Needs(labels=True, cached_logits=True, online_teacher=True)

    def __init__(self, student: Student, config: AdvKDConfig, ctx: StrategyContext):
        super().__init__(student, config, ctx)
        if ctx.teacher is None or ctx.teacher_input is None:
            raise DistillError(f"strategy '{self.name}' queries the teacher on adversarial inputs: set the 'teacher' "
                               "section (arch, pretrained) so the trainer can build it")
        if config.epsilon < 0 or config.step_size <= 0 or config.steps < 0:
            raise DistillError(f"strategy: epsilon >= 0, step_size > 0 and steps >= 0 are required "
                               f"(got {config.epsilon}, {config.step_size}, {config.steps})")
        spec = student.spec
        self._normalize = Normalizer(spec.mean, spec.std)
        self._jitter = None
        if config.jitter > 0:
            import kornia.augmentation as K  # lazy: kornia (~1 s) loads only when jitter is on

            self._jitter = K.RandomAffine(degrees=0.0, translate=(config.jitter, config.jitter), p=1.0,
                                          padding_mode="border")

    def teacher_logits(self, pixels: Tensor) -> Tensor:
        """Online teacher logits [B, C] on pixels [B, 3, H, W], differentiable w.r.t. the pixels."""
        assert self.ctx.teacher_input is not None  # __init__ refuses a context without the teacher
        return teacher_logits_with_grad(self.ctx.teacher, self.ctx.teacher_input, pixels)

    def divergence(self, pixels: Tensor, reference: Tensor | None = None) -> Tensor:
        """Per-sample KL(teacher_T || student_T) [B] on pixels [B, 3, H, W] (``reference``: fixed teacher logits)."""
        t = self.teacher_logits(pixels) if reference is None else reference
        return kl_per_sample(t, self.student(self._normalize(pixels)), self.config.temperature)

    def attack(self, batch: Batch) -> Tensor:
        """Adversarial pixels [B, 3, H, W] within ``epsilon`` (L∞) of ``batch.pixels``."""
        c = self.config
        reference = batch.teacher_logits if c.attack == "teacher_clean" else None

        def loss_fn(px: Tensor) -> Tensor:
            if self._jitter is not None:
                px = self._jitter(px)
            return self.divergence(px, reference)

        was_training = self.student.training
        self.student.eval()
        try:
            return pgd(batch.pixels, loss_fn, c.epsilon, c.step_size, c.steps, c.random_start)
        finally:
            self.student.train(was_training)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        c = self.config
        x_adv = self.attack(batch)
        with torch.no_grad():
            t_adv = self.teacher_logits(x_adv)
        both = self.student(torch.cat([batch.images, self._normalize(x_adv)]))
        logits, logits_adv = both.split(len(x_adv))
        kd = kl_div_with_temperature(logits, self.need(batch.teacher_logits, "teacher_logits"), c.temperature)
        kd_adv = kl_div_with_temperature(logits_adv, t_adv, c.temperature)
        ce = label_cross_entropy(logits, self.need(batch.labels, "labels"), batch.partner_labels, batch.mix_lam)
        loss = c.alpha * (kd + c.adv_weight * kd_adv) + (1 - c.alpha) * ce
        return {"loss": loss, "kd": kd.detach(), "kd_adv": kd_adv.detach(), "ce": ce.detach(),
                "logits": logits.detach()}
