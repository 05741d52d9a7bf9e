"""Learning-rate schedules, once: linear warmup, then a half cosine down to a floor.

The trainer (timm's ``CosineLRScheduler`` with ``warmup_prefix=True``, per step) and the
teacher bootstrap both use this shape; :func:`warmup_cosine_lr` computes either, bit for bit
(``tests/utils/test_schedule.py`` checks it against timm and the bootstrap's former formula).
"""
from __future__ import annotations

import math


def warmup_cosine_lr(step: int, *, base_lr: float, warmup_steps: int, decay_steps: int, min_lr: float = 0.0,
                     warmup_start_lr: float | None = None) -> float:
    """The learning rate of optimizer step ``step`` (0-based).

    Args:
        step: the step about to be taken.
        base_lr: the peak, reached at the end of the warmup.
        warmup_steps: steps of linear warmup (0: none).
        decay_steps: steps of the cosine after the warmup, from ``base_lr`` to ``min_lr``;
            ``min_lr`` from then on.
        min_lr: the floor the cosine ends at.
        warmup_start_lr: where the warmup starts, at step 0, as in timm's ``warmup_lr_init``
            (it reaches ``base_lr`` at step ``warmup_steps``). None: the warmup ends at the peak
            instead, ``base_lr * (step + 1) / warmup_steps``, the first step at
            ``base_lr / warmup_steps`` (the bootstrap's).
    """
    if step < warmup_steps:
        if warmup_start_lr is None:
            return base_lr * (step + 1) / warmup_steps
        return warmup_start_lr + step * ((base_lr - warmup_start_lr) / warmup_steps)
    t = step - warmup_steps
    if t >= decay_steps:
        return min_lr
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * t / decay_steps))
