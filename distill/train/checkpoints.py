"""A run's checkpoints: versioned step folders, the resume pointer, and the selected (best) student.

``RUN/checkpoints/step-N/`` holds the student and the resumable training state (optimizer,
scheduler, RNG, position; :mod:`distill.utils.state`, no pickle). A step folder is published
by atomically rewriting ``checkpoints/last.json``, so a run killed at any point resumes from
a complete one. ``checkpoints/best/`` holds the student selected on source validation
accuracy or, with ``run.select_on: teacher_agreement``, on agreement with the teacher on the
unlabeled pool (first of ties; :mod:`distill.train.selection`); a run without a value to select on
keeps its last epoch.
"""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

from distill.records import BEST_CHECKPOINT, CHECKPOINTS_DIR, TRAIN_STATE, CheckpointPointer
from distill.strategies import Strategy
from distill.student.model import Student, save_student
from distill.utils.state import load_state, save_state


def student_of(strategy: Strategy) -> Student:
    """``strategy.student``, typed (the strategy holds it as an ``nn.Module``)."""
    student = strategy.student
    assert isinstance(student, Student)  # build hands every strategy a Student; the EMA swaps in its deep copy
    return student


class Checkpoints:
    """``RUN/checkpoints/step-N/`` folders + an atomically rewritten ``last.json`` pointer."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / CHECKPOINTS_DIR

    @property
    def best(self) -> Path:
        """The selected student's folder (``checkpoints/best``)."""
        return self.dir / BEST_CHECKPOINT

    @property
    def pointer(self) -> Path:
        return CheckpointPointer.path_in(self.dir)

    def last(self) -> Path | None:
        """The newest complete step folder, or None (no checkpoint yet)."""
        if not self.pointer.is_file():
            return None
        path = self.dir / CheckpointPointer.read(self.pointer).dir
        return path if (path / TRAIN_STATE).is_file() else None

    def save(self, step: int, strategy: Strategy, state: dict[str, Any]) -> Path:
        """Write step ``step``'s folder (student + ``state`` + the strategy's own state), then publish it."""
        path = self.dir / f"step-{step:08d}"
        if path.exists():
            shutil.rmtree(path)
        save_student(student_of(strategy), path)
        save_state(path / TRAIN_STATE, {"strategy": strategy.state_dict(), **state})
        CheckpointPointer(dir=path.name, step=step).write(self.dir)
        for old in self.dir.glob("step-*"):
            if old != path:
                shutil.rmtree(old, ignore_errors=True)
        return path

    @staticmethod
    def load(path: Path) -> dict[str, Any]:
        """The training state saved in step folder ``path`` (see :meth:`save`)."""
        return load_state(path / TRAIN_STATE)

    def save_best(self, strategy: Strategy, provenance: dict[str, Any]) -> None:
        """Replace ``checkpoints/best`` with the strategy's student (written aside, then renamed)."""
        tmp = self.dir / f"{BEST_CHECKPOINT}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_student(student_of(strategy), tmp, extra_provenance=provenance)
        if self.best.exists():
            shutil.rmtree(self.best)
        os.replace(tmp, self.best)


# ---------------------------------------------------------------------------- selection
def improves(source_val_acc: float, best: float) -> bool:
    """Whether an epoch with this source validation accuracy replaces the best checkpoint.

    Without validation accuracy (NaN: a source-free run sees no source data and must not peek
    at target labels) every epoch does, so the last epoch is kept.
    """
    return source_val_acc > best if not math.isnan(source_val_acc) else True


def wants_test(epoch: int, epochs: int, eval_every: int, source_val_acc: float, best: float) -> bool:
    """Whether epoch ``epoch`` (0-based) evaluates the test splits: every ``eval_every`` epochs, the last
    epoch, and every epoch that becomes the selected one (so a run's reported test accuracy is always the
    selected epoch's). A source-free run (no validation: NaN) selects its last epoch."""
    periodic = (epoch + 1) % eval_every == 0 or epoch + 1 == epochs
    return periodic or (not math.isnan(source_val_acc) and source_val_acc > best)


def best_epoch(history: list[dict[str, Any]], key: str = "source_val_acc") -> int:
    """The selected epoch: best ``key`` (source validation accuracy unless ``run.select_on`` says otherwise;
    first of ties), else the last."""
    rows = [r for r in history if not math.isnan(r.get(key, math.nan))]
    return max(rows, key=lambda r: r[key])["epoch"] if rows else history[-1]["epoch"]
