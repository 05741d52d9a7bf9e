"""A training run's records: the checkpoint pointer, the robustness report and the run summary.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePath, PureWindowsPath
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

from distill.errors import DistillError
from distill.records.base import Accuracy, Record, SkippedImage, TeacherIdentity, _Closed
from distill.records.names import (
    CHECKPOINT_POINTER,
    CHECKPOINTS_DIR,
    ROBUST_REPORT,
    RUN_DATA,
    RUN_FINISHED,
    RUN_LAUNCH,
    RUN_SUMMARY,
)
from distill.utils.io import atomic_write_json, read_json

if TYPE_CHECKING:
    from typing_extensions import Self  # as base.py


# ------------------------------------------------------------------ run folder internals
class CheckpointPointer(Record):
    """``RUN/checkpoints/last.json``: which ``checkpoints/<dir>`` is the newest complete one (rewritten atomically)."""

    FILE: ClassVar[str] = CHECKPOINT_POINTER
    dir: str
    step: int


class RunData(Record):
    """``RUN/data.json``: what a run trains on, written when it starts, compared when it resumes
    (:mod:`distill.train.data_identity`)."""

    FILE: ClassVar[str] = RUN_DATA
    fingerprint: str  # DomainFolder.fingerprint over every domain and pool folder: every file's path and size
    rule: dict[str, Any]  # classes and the split keys
    images: dict[str, int]  # domain or pool folder -> its image count (every file, every split)
    caches: list[dict[str, Any]]  # per cache, in order: its path and its manifests' row-defining fields


class RunLaunch(Record):
    """``RUN/launch.json``: how the run is launched, written when it starts (a separate file: the release before
    forbids unknown keys in summary.json and data.json). A resume on another number of ranks is refused
    (:func:`distill.train.data_identity.check_same_launch`); ``distill report`` does not take runs on different
    numbers of ranks, or of nodes, for repeats of one seed. A run without it was started before distill recorded it."""

    FILE: ClassVar[str] = RUN_LAUNCH
    # the job's number of ranks: torchrun's WORLD_SIZE, 1 in one process. Each rank takes its share of the global
    # batch and, on a CPU (gloo, no SyncBatchNorm), keeps its own BatchNorm statistics: another number of ranks
    # trains another run
    world_size: int = Field(ge=1)
    # the job's number of nodes (torchrun's WORLD_SIZE / LOCAL_WORLD_SIZE), so that a refused resume names the
    # multi-node torchrun command; written only where over 1: a one-node run's file, and the files of the releases
    # before it (which forbid other keys), hold world_size alone
    nnodes: int = Field(default=1, ge=1)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=True)


# ------------------------------------------------------------------ robustness
class RobustAccuracy(_Closed):
    """One domain of a robust evaluation (fractions): clean, under PGD per epsilon (``"2/255"``), under
    each corruption, and the corruptions' mean (None without corruptions)."""

    n: int
    clean: float
    pgd: dict[str, float]
    corruptions: dict[str, float]
    corruption_mean: float | None


class RobustReport(Record):
    """``robust.json`` of a run (its selected checkpoint), ``summary.json``'s ``robust`` and ``distill eval --json``.

    ``data``, ``split`` and ``skipped_images`` are set by ``distill eval`` only (a training run's data
    and split are in its config); a report without them writes none of the three. ``settings`` is
    :meth:`distill.config.RobustSettings.to_dict` (epsilons as written, ``"2/255"``).
    """

    FILE: ClassVar[str] = ROBUST_REPORT
    checkpoint: str
    data: str | None = None
    split: str | None = None
    skipped_images: list[SkippedImage] | None = None
    settings: dict[str, Any]
    domains: dict[str, RobustAccuracy] = Field(default_factory=dict)

    @model_serializer(mode="wrap")
    def _without_eval_only_keys(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out = handler(self)
        if self.data is None:  # a training run's report: checkpoint, settings, domains (as ever)
            for key in ("data", "split", "skipped_images"):
                out.pop(key, None)
        else:  # distill eval's: the skipped images as {path, reason}, [] when none
            out["skipped_images"] = [k.model_dump(mode="json", exclude_none=True) for k in self.skipped_images or []]
        return out


# ------------------------------------------------------------------ run summary
def checkpoint_in_run(folder: str | Path, stored: str) -> str:
    """summary.json's ``checkpoint`` as read from ``folder``: the same place in ``folder`` (the part of the stored path
    from its last ``checkpoints/`` on), absolute, where that exists or the stored path does not (a copied or moved run,
    a summary written relative to another working folder); else the stored path (a summary.json copied away from its
    run) or, without a ``checkpoints/`` part, the stored path as it is. A path written on Windows
    (``C:\\runs\\kd\\checkpoints\\best``: a backslash in it) is split as one (:class:`~pathlib.PureWindowsPath`) on any
    system."""
    parts = (PureWindowsPath(stored) if "\\" in stored else PurePath(stored)).parts
    if CHECKPOINTS_DIR not in parts:
        return stored
    tail = parts[len(parts) - 1 - parts[::-1].index(CHECKPOINTS_DIR):]
    here = os.path.join(os.path.abspath(folder), *tail)
    return here if os.path.exists(here) or not os.path.exists(stored) else stored


class PoolFolder(_Closed):
    """An unlabeled folder outside data.root in a run's pool."""

    name: str  # its domain name (the cache's)
    path: str  # the resolved folder
    images: int


class UnlabeledPool(_Closed):
    """``summary.json``'s ``unlabeled``: the pool a run distilled on without labels (``data.unlabeled``)."""

    domains: list[str]  # domains under data.root
    images: int  # train-split images of those domains (and every image of the folders) in the pool
    ratio: float  # pool images per labelled image in a step
    folders: list[PoolFolder] | None = None  # folders outside data.root; written only when the pool has some

    @model_serializer(mode="wrap")
    def _without_folders(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A pool of domains only writes the ``unlabeled`` it always wrote."""
        out = handler(self)
        if self.folders is None:
            out.pop("folders", None)
        return out


class CombinedTeacher(_Closed):
    """One cache of a multi-teacher run and its share of the soft target."""

    cache: str  # the cache folder
    teacher: TeacherIdentity  # its manifest's teacher identity
    weight: float  # its normalized weight in the combination (the weights sum to 1)


class TeacherCombination(_Closed):
    """``summary.json``'s ``teachers``: how a run combined several teacher caches (``strategy.teachers``)."""

    combine: str  # "mean_probs": the weighted mean of the teachers' softmax at the strategy's temperature
    caches: list[CombinedTeacher]


class RunSummary(Record):
    """``summary.json``: what a training/adaptation run produced and how it was selected.

    Accuracies are fractions. ``source_*``/``target_*`` are means over the domains listed.
    """

    FILE: ClassVar[str] = RUN_SUMMARY
    strategy: str
    strategy_options: dict[str, Any] = Field(default_factory=dict)
    student: str
    teacher: TeacherIdentity | None = None
    source_domains: list[str]
    target_domains: list[str]
    trained_on: list[str]
    best_epoch: int
    # what best_epoch was selected on (run.select_on): "source_val", "teacher_agreement" (agreement with the
    # cached teacher on the unlabeled pool), or "last_epoch" (nothing to select on: a source-free run); summaries
    # written before run.select_on say "source validation accuracy" / "last epoch (no source validation images)"
    selected_on: str
    selected_value: float | None = None  # the selected epoch's value of it (a fraction); None: last_epoch
    teacher_agreement: float | None = None  # the selected epoch's pool agreement; written only when measured
    val_acc: Accuracy = Field(default_factory=dict)
    source_val_acc: float | None = None
    test_acc: Accuracy
    source_acc: float | None = None
    target_acc: float | None = None
    teacher_zero_shot: Accuracy | None = None
    params: int
    flops: int | None = None
    teacher_flops: int | None = None
    # checkpoints/best of the run: written absolute; read (:meth:`read`) in the folder the summary.json is in, so a run
    # folder copied or moved whole, or read from another working folder, names its own (files before 2026-12-06 stored
    # it as typed, relative to the folder the run was started in)
    checkpoint: str
    train_seconds_this_session: float
    # optimizer steps with non-finite gradients: skipped_steps, and fp32_retried_steps (CPU bf16; distill/train/guard.py)
    nonfinite_steps: dict[str, int] = Field(default_factory=lambda: {"skipped_steps": 0, "fp32_retried_steps": 0})
    skipped_images: list[SkippedImage] = Field(default_factory=list)
    robust: RobustReport | None = None
    unlabeled: UnlabeledPool | None = None  # written only when the run had a pool
    # data.withhold_classes: classes no label of the run named (evaluated without them); None: none withheld
    withheld_classes: list[str] | None = None
    # optim.ema_decay: the selected checkpoint and every accuracy here are the EMA student's; None: raw weights
    ema_decay: float | None = None
    # several teacher caches combined into one soft target (kd/fm strategy.teachers); None: one teacher (the first)
    teachers: TeacherCombination | None = None
    # when the run finished (UTC, ISO 8601): which of two runs of one seed is the newer result (distill report), as
    # no copy of the folder changes it; None in summaries written before it (2026-12-06). Stored beside summary.json
    # in RUN/finished_at.json, not in it: the release before forbids unknown keys in summary.json (review 4 M1); read
    # from either
    finished_at: str | None = None

    @classmethod
    def read(cls, path: str | Path) -> Self:
        """summary.json, with ``finished_at`` from finished_at.json beside it where summary.json has none, and
        ``checkpoint`` in the folder it is read from (:func:`checkpoint_in_run`)."""
        summary = super().read(path)
        folder = Path(path) if Path(path).is_dir() else Path(path).parent
        summary = summary.model_copy(update={"checkpoint": checkpoint_in_run(folder, summary.checkpoint)})
        if summary.finished_at is None and (folder / RUN_FINISHED).is_file():
            try:
                at = read_json(folder / RUN_FINISHED).get("finished_at")
            except (OSError, ValueError, AttributeError, DistillError):
                at = None  # unreadable: the report falls back to summary.json's modification time
            if isinstance(at, str):
                summary = summary.model_copy(update={"finished_at": at})
        return summary

    def write(self, folder: str | Path) -> Path:
        """summary.json without ``finished_at`` (as the release before reads it), and finished_at.json with it."""
        if self.finished_at is not None:
            atomic_write_json(Path(folder) / RUN_FINISHED, {"finished_at": self.finished_at})
        path = self.path_in(folder)
        atomic_write_json(path, {k: v for k, v in self.to_dict().items() if k != "finished_at"})
        return path

    @model_serializer(mode="wrap")
    def _without_unused_keys(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A run without a pool, withheld classes, EMA, a value selected on or combined teachers leaves those keys out."""
        out = handler(self)
        for key in ("unlabeled", "withheld_classes", "ema_decay", "selected_value", "teacher_agreement", "teachers",
                    "finished_at"):
            if getattr(self, key) is None:
                out.pop(key, None)
        return out
