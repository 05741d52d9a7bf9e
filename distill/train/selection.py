"""Which epoch a run keeps as ``checkpoints/best``: ``run.select_on``, and the best value so far.

- ``source_val`` (the default): the source domains' validation accuracy (first of ties). A run without
  source validation images (a source-free run) keeps its last epoch (``selected_on: last_epoch``).
- ``teacher_agreement``: top-1 agreement of the student with the cached teacher on the run's unlabeled pool
  (:class:`~distill.train.agreement.PoolAgreement`; ``data.unlabeled``, no label read), first of ties.
  The pool is usually far larger than a source validation split and drawn from where the student will run.

The best value is part of every step checkpoint (``best``, with ``select_on``), so a resumed run selects
what the uninterrupted run selects; resuming under another ``run.select_on`` is refused.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

from distill.errors import DistillError
from distill.train.agreement import PoolAgreement, pool_view0
from distill.train.checkpoints import best_epoch, improves, student_of, wants_test
from distill.train.summary import SOURCE_VAL_ACC, TEACHER_AGREEMENT

if TYPE_CHECKING:
    from distill.strategies import Strategy
    from distill.teacher.cache import PixelStore
    from distill.train.build import TrainSetup

SOURCE_VAL = "source_val"
KEYS = {SOURCE_VAL: SOURCE_VAL_ACC, TEACHER_AGREEMENT: TEACHER_AGREEMENT}  # run.select_on -> metrics row key


class Selection:
    """The selection rule of a run (``on``: a ``run.select_on`` value) and its best value so far."""

    def __init__(self, on: str):
        self.on, self.key, self.best = on, KEYS[on], -1.0

    def value(self, source_val_acc: float, agreement: float | None) -> float:
        """What this epoch is selected on, from its source validation accuracy and pool agreement."""
        return source_val_acc if self.on == SOURCE_VAL else (math.nan if agreement is None else agreement)

    def wants_test(self, epoch: int, epochs: int, eval_every: int, value: float) -> bool:
        """Whether epoch ``epoch`` (0-based) evaluates the test splits (:func:`checkpoints.wants_test`)."""
        return wants_test(epoch, epochs, eval_every, value, self.best)

    def update(self, row: dict[str, Any]) -> bool:
        """Whether ``row``'s epoch becomes the selected one (then its value is the best)."""
        value = row[self.key]
        if not improves(value, self.best):
            return False
        self.best = self.best if math.isnan(value) else value
        return True

    def best_epoch(self, history: list[dict[str, Any]]) -> int:
        """The selected epoch of ``history`` (first of ties; the last when no row has a value)."""
        return best_epoch(history, self.key)

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "select_on": self.on}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's state (one written before ``select_on`` existed selected on source_val)."""
        saved = state.get("select_on", SOURCE_VAL)
        if saved != self.on:
            raise DistillError(f"run.select_on={self.on}: this run's checkpoints selected on {saved}; resume with "
                               f"run.select_on={saved} or start a new run.out")
        self.best = state["best"]


def make_selection(setup: TrainSetup, strategy: Strategy, pixel_store: Callable[[], tuple[PixelStore | None, str]]
                   ) -> tuple[Selection, PoolAgreement | None]:
    """The run's :class:`Selection` and, for ``teacher_agreement``, the pool's agreement evaluator.

    Args:
        setup: the run's :class:`~distill.train.build.TrainSetup`.
        strategy: the strategy (its student's input size, interpolation and normalization).
        pixel_store: the trainer's ``pixel_store`` (the first cache's store at the student's size, or None).

    Raises:
        DistillError: ``teacher_agreement`` on a run without a pool or without a teacher cache with logits.
    """
    on = setup.cfg.run.select_on
    if on == SOURCE_VAL:
        return Selection(on), None
    key = f"run.select_on={on}"
    if not setup.unlabeled:
        raise DistillError(f"{key}: the run has no unlabeled pool to measure agreement on; set data.unlabeled "
                           f"(images from where the student will run) or use run.select_on=source_val")
    if not setup.caches or not setup.caches[0].has_logits:
        raise DistillError(f"{key}: needs the teacher's outputs on the pool from a cache (cache: a teacher cache "
                           f"with logits or embeddings); use run.select_on=source_val")
    spec = student_of(strategy).spec
    images = pool_view0(setup.dataset, setup.unlabeled, setup.caches[0], spec.input_size, spec.interpolation,
                        pixels=pixel_store()[0])
    return Selection(on), PoolAgreement(images, setup.caches[0], setup.columns, spec.mean, spec.std,
                                        workers=setup.cfg.run.workers, dist=setup.dist)
