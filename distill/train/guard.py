"""Non-finite gradients: a step whose gradients are not finite is retried or skipped, counted, and bounded.

Why (measured, benchmarks/RESULTS.md "CPU bf16"): on CPUs with AVX-512 bf16, oneDNN's bf16 convolution
weight-gradient kernels intermittently return NaN (``ConvolutionBackward0`` 1th output) for finite inputs and
finite incoming gradients; the same gradients recomputed in fp32 are finite, and the finite bf16 ones match
them (0.3% relative error). Whether a process is hit varies (0 to 60% of steps on one AMD EPYC). So:

- ``optim.precision: bf16`` on a CPU: a step with a non-finite gradient is recomputed once in fp32 on the same
  batch and the same random draws (counted as ``fp32_retried_steps``). This keeps bf16's speed on the steps the
  kernel gets right and loses no step to the kernel.
- Any precision on a CPU: a step whose gradients are still not finite is skipped (no optimizer update,
  as a GradScaler does for fp16), counted (``skipped_steps``) and reported on stderr with the first parameter
  whose gradient was not finite. A run that skips more than ``optim.max_skipped_steps`` of its steps stops with
  a message naming the precision, device, step and that parameter.
- fp16 keeps its GradScaler, whose skipped steps are loss-scale calibration and not counted here.

On a CPU the check is one host read per step, which costs nothing there (CPU kernels are synchronous). On CUDA
it would add a host sync per step, so there it is off: fp16 has its GradScaler, and bf16/fp32 keep the
non-finite loss check at every log point (distill.train.logger).
"""
from __future__ import annotations

import math
import sys
from typing import Any, Callable

import torch
from torch import Tensor, nn

from distill.config import OptimConfig
from distill.errors import DistillError


class GradGuard:
    """Checks a step's gradients after backward; decides retry / skip; keeps the counts.

    Args:
        module: the trained module (its named parameters are checked).
        device: the training device.
        optim: the run's OptimConfig: ``precision`` (fp32 | bf16 | fp16), ``epochs`` and ``max_skipped_steps``
            (the fraction of the run's steps that may be skipped before it stops).
        steps_per_epoch: optimizer steps per epoch.
    """

    def __init__(self, module: nn.Module, device: torch.device, optim: OptimConfig, steps_per_epoch: int):
        precision, max_skipped, total_steps = optim.precision, optim.max_skipped_steps, optim.epochs * steps_per_epoch
        self.params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self.device, self.precision = device, precision
        # at least one step for any non-zero fraction, so a short run survives one bad step; 0 tolerates none
        self.budget = max(1, math.floor(max_skipped * total_steps)) if max_skipped > 0 else 0
        self.max_skipped, self.total_steps = max_skipped, total_steps
        # fp16: the GradScaler skips and calibrates; CUDA: no host sync per step (the logger's NaN check stays)
        self.enabled = precision != "fp16" and device.type == "cpu"
        self.retry_fp32 = precision == "bf16" and device.type == "cpu"
        self.skipped, self.retried = 0, 0
        self.first: str | None = None  # "'param' at epoch E step S" of the first skipped step

    def first_nonfinite(self) -> str | None:
        """The name of the first parameter (in module order) whose gradient is not finite; None if all are."""
        grads = [p.grad for _, p in self.params if p.grad is not None]
        if not grads:
            return None
        finite = torch.stack([torch.isfinite(n) for n in torch._foreach_norm(grads)])  # one device op per grad list
        if bool(finite.all()):
            return None
        names = [n for n, p in self.params if p.grad is not None]
        return names[int((~finite).nonzero()[0])]

    def after_backward(self, epoch: int, step: int, recompute: Callable[[str], dict[str, Tensor]],
                       out: dict[str, Tensor]) -> tuple[dict[str, Tensor], bool]:
        """Call after ``backward`` (and unscaling). Returns ``(out, take_step)``.

        ``recompute(precision)`` redoes the step's forward and backward in ``precision`` (grads zeroed first,
        the step's random draws replayed) and returns its outputs.
        """
        if not self.enabled:
            return out, True
        bad = self.first_nonfinite()
        if bad is None:
            return out, True
        if self.retry_fp32:
            out = recompute("fp32")
            self.retried += 1
            bad = self.first_nonfinite()
            if bad is None:
                return out, True
        self.skipped += 1
        where = f"'{bad}' at epoch {epoch + 1} step {step}"
        self.first = self.first or where
        print(f"warning: step skipped: the gradient of {where} is not finite ({self.precision} on "
              f"{self.device.type}; {self.skipped} skipped so far)", file=sys.stderr)
        if self.skipped > self.budget:
            raise DistillError(
                f"{self.skipped} of the run's {self.total_steps} steps had non-finite gradients, over "
                f"optim.max_skipped_steps={self.max_skipped} ({self.budget} steps); first: {self.first} under "
                f"{self.precision} on {self.device.type}. "
                + ("Try optim.precision=fp32 (this CPU's bf16 kernels may be at fault)" if self.precision == "bf16"
                   else "Lower optim.lr or enable optim.grad_clip"))
        return out, False

    def counts(self) -> dict[str, int]:
        """``{"skipped_steps", "fp32_retried_steps"}`` (summary.json's ``nonfinite_steps``)."""
        return {"skipped_steps": self.skipped, "fp32_retried_steps": self.retried}

    def state_dict(self) -> dict[str, object]:
        return {"skipped": self.skipped, "retried": self.retried, "first": self.first}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped, self.retried = int(state.get("skipped", 0)), int(state.get("retried", 0))
        self.first = state.get("first")
