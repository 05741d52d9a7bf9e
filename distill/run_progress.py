"""Whether a training run finished: an interrupted run has its ``config.yaml``, checkpoints and ``metrics.csv`` but no
``summary.json`` (the trainer writes it last). ``distill export`` and ``qad`` warn when they take such a run's
checkpoint (:func:`unfinished_warning`: it is the best checkpoint *so far*, and a later ``--resume`` makes the result
stale); ``distill report`` says how to finish the runs it cannot report (:func:`unfinished_runs_note`).
"""
from __future__ import annotations

import csv
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from pydantic import BaseModel, ConfigDict, ValidationError

from distill.config import load_yaml
from distill.errors import DistillError
from distill.records import BEST_CHECKPOINT, CHECKPOINTS_DIR, RUN_CONFIG, RUN_METRICS, RUN_SUMMARY
from distill.run_split import run_folders


class _Optim(BaseModel):
    model_config = ConfigDict(extra="ignore")
    epochs: int | None = None


class _RunPlan(BaseModel):
    """The keys of a run's config.yaml that say how far it was meant to go and which command resumes it."""

    model_config = ConfigDict(extra="ignore")
    optim: _Optim = _Optim()
    source_checkpoint: str | None = None  # set: a source-free adaptation run (``distill adapt --resume``)


@dataclass(frozen=True)
class UnfinishedRun:
    """A run folder without its summary.json: ``epochs_done`` (rows of metrics.csv) of ``epochs`` (``optim.epochs``),
    either None where unknown; ``command``: ``train`` or ``adapt``."""

    folder: Path
    epochs_done: int | None
    epochs: int | None
    command: str

    def progress(self) -> str:
        """``epoch 2 of 40``; ``no epoch finished yet of 40``; ``epoch 2 of ?`` where a count is unknown."""
        total = "?" if self.epochs is None else self.epochs
        if not self.epochs_done:
            return f"no epoch finished yet of {total}"
        return f"epoch {self.epochs_done} of {total}"

    def resume(self) -> str:
        return f"distill {self.command} --resume {shlex.quote(str(self.folder))}"


def unfinished_run(folder: str | Path) -> UnfinishedRun | None:
    """The run in ``folder`` when it is unfinished (its config.yaml and checkpoints, no summary.json), else None."""
    folder = Path(folder)
    if (folder / RUN_SUMMARY).is_file() or not (folder / RUN_CONFIG).is_file() \
            or not (folder / CHECKPOINTS_DIR).is_dir():
        return None
    try:
        plan = _RunPlan.model_validate(load_yaml(folder / RUN_CONFIG))
    except (DistillError, ValidationError):
        plan = _RunPlan()  # a config a resume would refuse: its own line then; here only the counts are missing
    return UnfinishedRun(folder, _epochs_done(folder / RUN_METRICS), plan.optim.epochs,
                         "adapt" if plan.source_checkpoint else "train")


def _epochs_done(metrics: Path) -> int | None:
    """The last ``epoch`` of metrics.csv (one row per evaluated epoch); 0 without the file, None if unreadable."""
    if not metrics.is_file():
        return 0
    try:
        with metrics.open(newline="") as f:
            rows = list(csv.DictReader(f))
        return int(float(rows[-1]["epoch"])) if rows else 0
    except (OSError, csv.Error, KeyError, ValueError, TypeError):
        return None


def unfinished_warning(checkpoint: str | Path) -> str | None:
    """The one warning line for exporting (or tuning) a checkpoint of an unfinished run, else None::

        runs/int2 is unfinished (epoch 2 of 40, no summary.json): this is its best checkpoint so far; resume with
        distill train --resume runs/int2
    """
    checkpoint = Path(checkpoint)
    for folder in run_folders(checkpoint):
        if (folder / RUN_SUMMARY).is_file():
            return None
        if (run := unfinished_run(folder)) is not None:
            named = _as_named(checkpoint, folder)
            what = "its best checkpoint so far" if checkpoint.name == BEST_CHECKPOINT else \
                "one of its checkpoints, taken before the run ended"
            return (f"{named} is unfinished ({run.progress()}, no {RUN_SUMMARY}): this is {what}; resume with "
                    f"{UnfinishedRun(named, run.epochs_done, run.epochs, run.command).resume()}")
    return None


def _as_named(checkpoint: Path, folder: Path) -> Path:
    """``folder`` as the user's checkpoint path names it (``runs/int2`` for ``runs/int2/checkpoints/best``)."""
    for candidate in (checkpoint, *list(checkpoint.parents)[:2]):
        if candidate != Path(".") and os.path.exists(candidate) and os.path.samefile(candidate, folder):
            return candidate
    return folder


def unfinished_runs_note(folders: Iterable[Path]) -> str:
    """``; runs/int2 is an unfinished run (...): finish it with distill train --resume runs/int2, then report it``
    for each unfinished run among ``folders`` (the folders holding a config.yaml and no summary.json that the
    report's :func:`~distill.report.write.discover` met under its inputs, which hold nothing to report); "" when none."""
    return "".join(f"; {line}" for line in unfinished_run_warnings(folders, ""))


def unfinished_run_warnings(folders: Iterable[Path], left_out: str = " (left out of the report)") -> list[str]:
    """One line for each unfinished run among ``folders`` (as :func:`unfinished_runs_note`), which has no
    summary.json to report: how far it got and the command that finishes it."""
    runs = [run for folder in folders if (run := unfinished_run(folder)) is not None]
    return [f"{r.folder} is an unfinished run ({r.progress()}, no {RUN_SUMMARY} yet){left_out}: finish it with "
            f"{r.resume()}, then report it" for r in runs]
