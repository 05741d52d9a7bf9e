"""An exponential moving average of the student's weights (``optim.ema_decay``), timm's ModelEmaV3.

When on, the EMA student is what the run evaluates, selects on and saves as ``checkpoints/best``;
the raw student keeps training. Its state is part of every step checkpoint, so a resumed run's EMA
is the uninterrupted run's, bit for bit. A strategy's :meth:`~distill.strategies.Strategy.predict`
runs with the EMA student in place of the raw one (vl2v folds its head into whichever student it holds).
With ``optim.ema_decay`` unset (the default) :class:`NoEma` does nothing and the run is as before.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Any, ContextManager, Iterator

from timm.utils import ModelEmaV3
from torch import nn

from distill.config import OptimConfig
from distill.strategies import Strategy


class NoEma:
    """``optim.ema_decay`` unset: the raw student is evaluated, selected and saved; nothing is stored."""

    decay: float | None = None

    def update(self, strategy: Strategy, step: int) -> None:
        pass

    def evaluated(self, strategy: Strategy) -> ContextManager:
        return nullcontext()

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        pass


class StudentEma(NoEma):
    """``decay``-EMA of ``strategy.student``'s parameters and float buffers (BatchNorm statistics)."""

    def __init__(self, strategy: Strategy, decay: float):
        self.decay = decay
        self.ema = ModelEmaV3(strategy.student, decay=decay)  # a deep copy, in eval mode, on the same device

    @property
    def student(self) -> nn.Module:
        return self.ema.module

    def update(self, strategy: Strategy, step: int) -> None:
        """After an optimizer step: ``ema = decay * ema + (1 - decay) * student``."""
        self.ema.update(strategy.student, step=step)

    @contextmanager
    def evaluated(self, strategy: Strategy) -> Iterator[None]:
        """Within the block ``strategy.student`` is the EMA student (evaluation, selection, the best checkpoint)."""
        raw = strategy.student
        strategy.student = self.ema.module
        try:
            yield
        finally:
            strategy.student = raw

    def state(self) -> dict[str, Any]:
        """The resumable state: ``{"ema": the EMA student's state dict}``."""
        return {"ema": dict(self.ema.state_dict())}

    def restore(self, state: dict[str, Any]) -> None:
        self.ema.load_state_dict(state["ema"])


def make_ema(optim: OptimConfig, strategy: Strategy) -> NoEma:
    """The run's EMA (:class:`NoEma` when ``optim.ema_decay`` is unset: the default, nothing changes)."""
    return StudentEma(strategy, optim.ema_decay) if optim.ema_decay is not None else NoEma()
