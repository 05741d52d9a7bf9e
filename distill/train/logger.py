"""What a run reports while it trains: TensorBoard scalars, the tqdm bar, and the NaN check.

Kept out of the loop so :meth:`distill.train.trainer.Trainer.fit` reads as the loop it is.
Rank 0 writes TensorBoard and shows the bar; every rank keeps the per-step values on the
device and checks them for NaN at each log point (one host sync per log point, not per step).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from distill.errors import DistillError
from distill.records import RUN_TENSORBOARD
from distill.train.epoch_stats import LR, TRAIN_LOSS


class StepLog:
    """Per-step loss, loss parts and accuracy, kept on the device and read back at log points.

    ``float(loss)`` every step stalls a GPU until the step finishes; here each log point costs one
    host sync for all steps since the last. A non-finite loss raises the same one-line error as a
    per-step check would, naming the first bad step, at the next log point (the trainer flushes
    before every checkpoint, so a NaN never reaches one).
    """

    def __init__(self, writer: SummaryWriter | None, device: torch.device):
        self.writer, self.device = writer, device
        self.epoch = 0
        self.steps: list[tuple[int, int, float, bool]] = []  # (step in epoch, global step, lr, skipped)
        self.values: list[Tensor] = []  # 0-dim: loss of each step, then its parts
        self.names: list[list[str]] = []
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.seen: Tensor | int = 0  # a 0-dim device tensor once a labelled step is added (read at log points)

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.correct.zero_()
        self.seen = 0

    def add(self, step_in_epoch: int, global_step: int, out: dict[str, Tensor], labels: Tensor | None,
            lr: float, skipped: bool = False) -> None:
        parts = [k for k, v in out.items() if k not in ("loss", "logits") and v.dim() == 0]
        self.steps.append((step_in_epoch, global_step, lr, skipped))
        self.names.append(parts)
        self.values += [out["loss"].detach().float()] + [out[k].detach().float() for k in parts]
        if "logits" in out and labels is not None:  # live accuracy, accumulated on the device
            # rows without a label (-1: pool images, withheld classes) are not counted
            has = labels >= 0
            self.correct += ((out["logits"].detach().argmax(-1) == labels) & has).sum()
            self.seen += has.sum()

    def flush(self, bar: tqdm | None = None) -> None:
        if not self.steps:
            return
        vals = torch.stack(self.values).cpu().tolist()  # the one host sync
        i = 0
        for (step, gstep, lr, skipped), names in zip(self.steps, self.names):
            loss = vals[i]
            if not math.isfinite(loss) and not skipped:  # a skipped step was counted (distill/train/guard.py)
                raise DistillError(f"loss is {loss} at epoch {self.epoch + 1} step {step}: "
                                   f"lower optim.lr or enable optim.grad_clip")
            if self.writer is not None:
                self.writer.add_scalar("train/loss", loss, gstep)
                for k, v in zip(names, vals[i + 1:i + 1 + len(names)]):
                    self.writer.add_scalar(f"train/{k}", v, gstep)
                self.writer.add_scalar("train/lr", lr, gstep)
            i += 1 + len(names)
        if bar is not None:
            post = {"loss": f"{vals[i - 1 - len(self.names[-1])]:.3f}"}
            seen = int(self.seen)
            if seen:
                post["acc"] = f"{100 * int(self.correct) / seen:.1f}"
            bar.set_postfix(post)
        self.steps, self.values, self.names = [], [], []


class RunLog:
    """One run's reporting: TensorBoard (rank 0), the per-epoch tqdm bar (rank 0, ``run.progress``),
    and the :class:`StepLog` of every rank."""

    def __init__(self, run_dir: Path, device: torch.device, main: bool, progress: bool, global_step: int):
        self.writer: SummaryWriter | None = None
        if main:
            self.writer = SummaryWriter(str(Path(run_dir) / RUN_TENSORBOARD), purge_step=global_step or None)
        self.show_bar = main and progress
        self.steps = StepLog(self.writer, device)
        self.bar: tqdm | None = None

    def start_epoch(self, epoch: int, epochs: int, steps_per_epoch: int, step_in_epoch: int) -> None:
        if self.show_bar:
            self.bar = tqdm(total=steps_per_epoch, initial=step_in_epoch, desc=f"epoch {epoch + 1}/{epochs}",
                            dynamic_ncols=True, leave=False)
        self.steps.start_epoch(epoch)

    def step(self, step_in_epoch: int, global_step: int, out: dict[str, Tensor], labels: Tensor | None,
             lr: float, skipped: bool = False) -> None:
        """Record a step's outputs (on the device; nothing is read back here); ``skipped``: no update was made."""
        self.steps.add(step_in_epoch, global_step, out, labels, lr, skipped)

    def flush(self) -> None:
        """Read back the steps since the last flush; raises on a non-finite loss."""
        self.steps.flush(self.bar)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def end_epoch(self) -> None:
        self.flush()
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def evaluation(self, row: dict[str, Any], global_step: int) -> None:
        """The epoch's metrics row as ``eval/*`` scalars (train_loss and lr are already ``train/*``, per step)."""
        if self.writer is None:
            return
        for k, v in row.items():
            if k not in ("epoch", TRAIN_LOSS, LR):
                self.writer.add_scalar(f"eval/{k}", v, global_step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
