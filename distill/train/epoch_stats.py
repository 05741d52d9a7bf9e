"""An epoch's training numbers for ``metrics.csv``: mean train loss and the learning rate.

The loss sum stays on the device (no host sync in the step loop) and is read once, at the epoch's
end. It is part of the resumable state, so a run resumed mid-epoch writes the same ``train_loss``
as the uninterrupted run (the same float sums in the same order). Rank 0's steps (DDP: its shard).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

TRAIN_LOSS, LR = "train_loss", "lr"


class EpochTrainStats:
    """Sum of the epoch's step losses [] (fp32, on the device), its step count and its last step's learning rate."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), dtype=torch.float32, device=device)
        self.steps = 0
        self.lr = math.nan

    def start(self, step_in_epoch: int) -> None:
        """A new epoch (``step_in_epoch`` 0) starts from zero; a resumed one keeps its restored sums."""
        if step_in_epoch == 0:
            self.loss_sum.zero_()
            self.steps, self.lr = 0, math.nan

    def add(self, loss: Tensor, lr: float) -> None:
        """One step's loss (0-dim, not read back) and the learning rate it was taken with."""
        self.loss_sum += loss.detach().float()
        self.steps += 1
        self.lr = lr

    def row(self) -> dict[str, float]:
        """``{train_loss: mean step loss, lr: the last step's learning rate}`` (NaN without steps)."""
        loss = float(self.loss_sum) / self.steps if self.steps else math.nan
        return {TRAIN_LOSS: round(loss, 6), LR: self.lr}

    def state(self) -> dict[str, Any]:
        """The resumable state: ``{"epoch_stats": ...}``."""
        return {"epoch_stats": {"loss_sum": self.loss_sum.clone(), "steps": self.steps, "lr": self.lr}}

    def restore(self, state: dict[str, Any]) -> None:
        saved = state["epoch_stats"]
        self.loss_sum.copy_(saved["loss_sum"])
        self.steps, self.lr = saved["steps"], saved["lr"]
