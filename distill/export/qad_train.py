"""``distill qad``'s training step (:func:`train_qad`): calibrate the fake-quantized student's ranges, then distill
the frozen fp32 student (and a cached teacher) into it; the optimizer it steps (:func:`make_optimizer`)."""
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from distill.export.fakequant import fake_quant_model
from distill.export.fq_state import calibrate_ranges, set_observers
from distill.export.images import ImageSet
from distill.export.kept_float import KeptFloat
from distill.export.learned_ranges import freeze_scales, learn_scales
from distill.export.log import ExportLog
from distill.export.qad_config import QADConfig
from distill.export.qad_moves import changed_share, int8_weights
from distill.export.quantize import Int8Flavour
from distill.export.se_gate import gate_lr_factor, gate_params
from distill.strategies.losses import kl_div_with_temperature, top1_margin_hinge
from distill.student.model import Student


def batches(images: ImageSet, batch_size: int, device: torch.device,
            order: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(indices, normalized float batch on ``device``) over ``images`` in ``order``."""
    order = np.arange(len(images)) if order is None else order
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        yield idx, torch.from_numpy(images.normalize(images.images[idx])).to(device)


def train_qad(cfg: QADConfig, student: Student, flavour: Int8Flavour, calib: ImageSet, teacher_logits: torch.Tensor | None,
           device: torch.device, say: ExportLog, keep: KeptFloat) -> tuple[torch.nn.Module, list[float], float]:
    """Calibrate the fake-quant student's ranges (``keep``: layers left in float), then distill into it; returns it
    (eval mode), epoch losses and the percent of its int8 weight values that training changed."""
    torch.manual_seed(cfg.random_seed)
    model = fake_quant_model(student, flavour, keep.layers, keep.float_outputs).to(device)
    fp32 = student.to(device).eval()
    with torch.no_grad():  # the frozen fp32 student's logits: the self-distillation target
        targets = torch.cat([fp32(x) for _, x in batches(calib, 256, device)])
    student.cpu()
    # calibration (observers off after it: the measurement below leaves the ranges as calibrated; each epoch
    # then turns them on or off)
    calibrate_ranges(model, (x for _, x in batches(calib, cfg.batch_size, device)))
    with torch.no_grad():
        start = torch.cat([model(x) for _, x in batches(calib, 256, device)]).argmax(1) != targets.argmax(1)
    say(f"QAD: after calibration, fake-quant top-1 disagreement with fp32 {100 * float(start.float().mean()):.2f} pts")
    calibrated = int8_weights(model)
    scales = learn_scales(model) if cfg.ranges == "learned" else []  # after calibration: they start there
    gates = gate_params(model)  # squeeze-excite gate convs, folded: their own step size
    own = {id(p) for p in [*gates, *scales]}
    opt = make_optimizer(cfg, [p for p in model.parameters() if p.requires_grad and id(p) not in own], gates, scales)
    steps = cfg.epochs * math.ceil(len(calib) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    rng = np.random.default_rng(cfg.random_seed)
    teacher = teacher_logits.to(device) if teacher_logits is not None else None
    losses: list[float] = []
    for epoch in range(cfg.epochs):
        set_observers(model, epoch < cfg.range_epochs, weights=True)
        model.train()
        total = torch.zeros((), device=device)
        flips = torch.zeros((), device=device)
        for idx, x in batches(calib, cfg.batch_size, device, rng.permutation(len(calib))):
            logits = model(x)
            t = torch.as_tensor(idx, device=device)
            loss = kl_div_with_temperature(logits, targets[t], cfg.temperature)
            if teacher is not None:
                loss = (1 - cfg.cache_weight) * loss + cfg.cache_weight * kl_div_with_temperature(
                    logits, teacher[t], cfg.temperature)
            if cfg.margin_weight:
                loss = loss + cfg.margin_weight * top1_margin_hinge(logits, targets[t].argmax(1), cfg.margin)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach() * len(idx)
            flips += (logits.detach().argmax(1) != targets[t].argmax(1)).sum()
        losses.append(float(total) / len(calib))  # one host sync per epoch
        say(f"QAD epoch {epoch + 1}/{cfg.epochs}: loss {loss_text(losses[-1])}, fake-quant top-1 disagreement with "
            f"fp32 {100 * float(flips) / len(calib):.2f} pts (during the epoch)"
            + (" (ranges learned)" if scales else "" if epoch < cfg.range_epochs else " (ranges frozen)"))
    freeze_scales(model)
    set_observers(model, False, weights=True)  # weight scales follow the last step's weights (max |w| / 127)
    with torch.no_grad():
        model(next(batches(calib, 1, device))[1])
    set_observers(model, False)
    moved = changed_share(calibrated, int8_weights(model))
    say(f"QAD changed {moved:.2f} % of the int8 weight values (the rest of its effect: biases and activation ranges)")
    return model.eval(), losses, moved


def loss_text(loss: float) -> str:
    """An epoch's loss for the log: a KL is >= 0, so a rounding-negative one (``-0.0000``) reads 0; a small one keeps
    its digits (``3.1e-05``, not ``0.0000``)."""
    loss = 0.0 if -1e-6 < loss <= 0.0 else loss
    return f"{loss:.4f}" if loss == 0.0 or abs(loss) >= 1e-3 else f"{loss:.1e}"


def make_optimizer(cfg: QADConfig, params: list[torch.nn.Parameter], gates: list[torch.nn.Parameter] | None = None,
                   scales: list[torch.nn.Parameter] | None = None) -> torch.optim.Optimizer:
    """``cfg.optimizer`` at ``cfg.learning_rate``, no weight decay (QAD moves a trained student a little); ``gates``
    (folded squeeze-excite gate convs) in a second group at the rate that moves their unfolded weights the same;
    ``scales`` (learned activation ranges) in a third at ``cfg.range_lr``."""
    groups: list[dict] = [{"params": params}]
    if gates:
        groups.append({"params": gates, "lr": cfg.learning_rate * gate_lr_factor(cfg.optimizer)})
    if scales:
        groups.append({"params": scales, "lr": cfg.range_lr})
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.learning_rate, momentum=0.9, weight_decay=0.0)
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, weight_decay=0.0)
