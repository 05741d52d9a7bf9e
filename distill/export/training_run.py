"""The training run a checkpoint sits in: its summary, and the data settings an export defaults to.

``distill train`` writes ``RUN_DIR/checkpoints/best`` next to ``RUN_DIR/summary.json``
(:class:`~distill.records.RunSummary`) and ``RUN_DIR/config.yaml`` (the resolved
:class:`~distill.config.TrainConfig`). Exporting that checkpoint should check it on the run's
own data and split without the user repeating them, and stamp the run's teacher and strategy
into the ONNX metadata.
"""
from __future__ import annotations

import contextlib
import ntpath
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from distill.data.split import SplitRule
from distill.data.unlabeled import is_folder_entry
from distill.errors import DistillError
from distill.export.config import ExportConfig
from distill.export.log import ExportLog
from distill.records import RUN_CONFIG, RUN_SUMMARY, STUDENT_WEIGHTS, RunSummary
from distill.run_progress import unfinished_warning
from distill.run_split import RunConfigView, read_run_config, run_config_file, run_folders, run_split_rule
from distill.spelling import option
from distill.student.model import Student
from distill.utils.io import sha256_file

# provenance keys taken from the run summary when student.json does not have them
SUMMARY_PROVENANCE = ("strategy", "teacher", "source_domains", "target_domains")
# the provenance keys stamped into each ONNX file (:func:`shipped_provenance`)
SHIPPED_PROVENANCE = ("teacher", "strategy", "run", "checkpoint", "checkpoint_sha256")


@dataclass(frozen=True)
class TrainingRun:
    """What is known about the run of a checkpoint (empty when it sits in none).

    Attributes:
        folder: the run folder holding the summary (None: no summary found).
        summary: the run's summary, when it could be read.
        config: the parts of the run's config export uses.
        config_file: the run's config.yaml (None: none found).
    """

    folder: Path | None = None
    summary: RunSummary | None = None
    config: RunConfigView = field(default_factory=RunConfigView)
    config_file: Path | None = None

    @classmethod
    def of_checkpoint(cls, checkpoint: Path, log: ExportLog) -> TrainingRun:
        """Look in the checkpoint folder and its two parents (``RUN_DIR/checkpoints/best``).

        An unreadable summary or config is a warning: the export still works, without the run's
        provenance or defaults.
        """
        run_folder = next((f for f in run_folders(checkpoint) if (f / RUN_SUMMARY).is_file()), None)
        summary = None
        if run_folder is not None:
            try:
                summary = RunSummary.read(run_folder / RUN_SUMMARY)
            except DistillError as e:
                log.warn(f"{e}; exporting without the run's summary")
        elif (unfinished := unfinished_warning(checkpoint)) is not None:  # an interrupted run's best so far
            log.warn(unfinished)
        config_file = run_config_file(checkpoint)  # the config next to the summary; without one, the first found
        config = RunConfigView()
        if config_file is not None:
            config = read_run_config(config_file, log.warn, "exporting without the run's data defaults", checkpoint)
        return cls(run_folder, summary, config, config_file)


def with_run_defaults(cfg: ExportConfig, run: TrainingRun, log: ExportLog, split_from: str = "export",
                      split_fix: str = "leave {flag} unset (the run's value), or check on other data") -> ExportConfig:
    """Fill the data root, split, class map, caches and calibration domains ``cfg`` leaves unset from the run's
    config: a training run calibrates on its source domains; a source-free adaptation run (it has a
    ``source_checkpoint``) on its target domains, the images it was adapted to and will run on. The run's unlabeled
    pool domains (``data.unlabeled``, those under the data root) become the target domains: the student trained on
    their images and is meant for them, so their train images join the calibration, unlabeled.

    A data root ``cfg`` names (``--data``, even the run's own) keeps these domain defaults for the domains it holds
    (a folder of that name under it); the pool domains it lacks are dropped and said in one warning line.

    A run's data root that is not here (a run copied from elsewhere, or an older run's relative root found nowhere)
    is refused where int8 is exported (it calibrates on it), in one line naming ``data_root``; an fp32/fp16-only
    export warns and goes on without data.

    An older run's relative path (:func:`distill.run_split.read_run_config`) found neither in the folder the run was
    started in nor in the current one is refused where it becomes the default (the data root, the class map), in
    one line naming the key; such a cache is left out with a warning.

    On the run's own data (``cfg`` names no data root, or the run's), a split key ``cfg`` sets to another value than
    the run's is refused (:func:`distill.run_split.run_split_rule`: its test split would hold images the student
    trained on); ``split_from`` (who set it) heads that line, ``split_fix`` ends it. On other data the keys are free.

    Raises:
        DistillError: that split key, with both values; an older run's data root or class map found nowhere."""
    data = run.config.data
    run_split_rule(cfg.split_keys(), cfg.data_root, data, run.config_file, split_from, split_fix)
    updates: dict[str, Any] = {}
    if cfg.data_root is None and data is not None:
        refusal = run.config.missing("data.root", data.root)  # an older run's relative root found nowhere
        if refusal is not None and "int8" in cfg.precisions:
            raise DistillError(refusal)
        gone = refusal or f"{data.root}: the run's data root (data.root in {run.config_file or RUN_CONFIG}) is not there"
        if refusal is None and Path(data.root).is_dir():
            updates["data_root"] = str(data.root)
            log(f"data: {data.root} (from the run's {RUN_CONFIG})")
        elif "int8" in cfg.precisions:  # a run copied from another machine or folder: say how to go on
            raise DistillError(f"{gone}: pass {option('data_root', 'ROOT')}, the dataset's folder here (int8 "
                               f"calibrates on it; {option('precisions', 'fp32')} and fp16 need none)")
        else:  # fp32/fp16 only: as a checkpoint outside its run, parity on random-noise images
            log.warn(f"{gone}: exporting without data; pass {option('data_root', 'ROOT')}, the dataset's folder "
                     "here, to measure accuracy")
    rule = data.split_rule() if data is not None else SplitRule()  # a run saves its whole rule; else the defaults
    for key, value in rule.model_dump().items():
        if getattr(cfg, key) is None and value is not None:
            if key == "class_map":
                if cfg.data_root is None and "data_root" not in updates:  # no data read: no class map needed
                    continue
                _refuse_missing(run, "data.class_map", value)
            updates[key] = value
    if cfg.caches is None:
        updates["caches"] = tuple(c for c in run.config.caches() if not _missing_cache(run, c, log))
    if data is None:
        return cfg.with_updates(**updates, **({"target_domains": ()} if cfg.target_domains is None else {}))
    root = updates.get("data_root", cfg.data_root)
    held = _held_by(root, from_run="data_root" in updates)
    if cfg.calib_domains is None:
        if run.config.source_checkpoint and data.target and held(data.target):
            updates["calib_domains"] = tuple(data.target)
            log(f"int8 calibration on the adapted-to domains {', '.join(data.target)} (source-free run)")
        elif data.source and held(data.source):
            updates["calib_domains"] = tuple(data.source)
    if cfg.target_domains is None:
        entries = [d for d in data.unlabeled if not is_folder_entry(d)]
        pool = [d for d in entries if held([d])]
        updates["target_domains"] = tuple(pool)
        if "int8" in cfg.precisions:
            if pool:
                log(f"int8 calibration also on the run's unlabeled pool domains {', '.join(pool)} "
                    "(--target-domains to change)")
            dropped = [d for d in entries if d not in pool]
            if dropped:
                log.warn(f"int8 calibration leaves out the run's unlabeled pool domain(s) {', '.join(dropped)}: "
                         f"no such folder under {root}; name the target domains with --target-domains")
    return cfg.with_updates(**updates)


def _refuse_missing(run: TrainingRun, key: str, path: str | Path) -> None:
    """An older run's relative path found neither where it was started nor here, taken as a default: refused."""
    refusal = run.config.missing(key, path)
    if refusal is not None:
        raise DistillError(refusal)


def _missing_cache(run: TrainingRun, cache: str, log: ExportLog) -> bool:
    """Whether the run's ``cache`` is an older run's relative path found nowhere: left out, in one warning line (a
    cache gone is no error: the export only reads the images it skipped when it is there)."""
    refusal = run.config.missing("cache", cache)
    if refusal is not None:
        log.warn(f"{refusal}; exporting without it")
    return refusal is not None


def _held_by(root: str | None, from_run: bool) -> Callable[[list[str]], bool]:
    """Whether a data root holds every one of some run domains: the run's own root (``from_run``) does; a root
    the user names does when each is a folder under it (a domain: :func:`distill.data.folder.list_images`)."""
    def held(domains: list[str]) -> bool:
        return from_run or (root is not None and all((Path(root) / d).is_dir() for d in domains))
    return held


def provenance(checkpoint: Path, student: Student, run: TrainingRun) -> dict[str, Any]:
    """Provenance for metadata: student.json's, plus the run summary's teacher/strategy/domains, the run
    folder and the checkpoint (both resolved, the checkpoint with its weights' sha256). A checkpoint an export or
    ``distill qad`` wrote (:func:`checkpoint_provenance`) names its run by its name and ``relative.run``: the run
    folder is that path from the checkpoint, absolute here as for a checkpoint in its run (where it is there)."""
    prov: dict[str, Any] = dict(student.spec.provenance)
    relative = prov.pop("relative", None)
    if run.folder is None and isinstance(relative, dict) and isinstance(relative.get("run"), str):
        recorded = os.path.normpath(os.path.join(checkpoint.resolve(), relative["run"]))
        if os.path.isdir(recorded):  # else (the checkpoint moved without it) its name, as written
            prov["run"] = recorded
    if run.summary is not None:
        written = run.summary.model_dump(mode="json", exclude_unset=True)  # the keys the run wrote
        for key in SUMMARY_PROVENANCE:
            if key in written and key not in prov:
                prov[key] = written[key]
    if run.folder is not None:  # the folder holding the checkpoint, absolute: the record is read from other folders
        prov["run"] = str(run.folder.resolve())  # (student.json's is run.out as typed, relative to where it trained)
    weights = checkpoint / STUDENT_WEIGHTS
    prov["checkpoint"] = str(checkpoint.resolve())  # as an absolute path: the record is read from other folders
    if weights.is_file():
        prov["checkpoint_sha256"] = sha256_file(weights)
    return prov


def shipped_provenance(prov: dict[str, Any]) -> dict[str, Any]:
    """What of :func:`provenance` is stamped into an ONNX file, the file that goes to devices: the teacher, the
    strategy, the run folder's name, the checkpoint relative to its run folder (``checkpoints/best``; outside it, its
    folder's name) and its weights' sha256. No path of the machine that exported it: export.json and qad.json, which
    stay there, keep the absolute paths the report reads. A teacher identity's absolute path (none is written now: a
    local file is named by its name) becomes its name too."""
    out: dict[str, Any] = {k: prov[k] for k in SHIPPED_PROVENANCE if k in prov}
    if isinstance(out.get("teacher"), dict):
        out["teacher"] = {k: _name(v) if _absolute(v) else v for k, v in out["teacher"].items()}
    run, checkpoint = prov.get("run"), prov.get("checkpoint")
    if isinstance(run, str):
        out["run"] = _name(run)
    if isinstance(checkpoint, str):
        inside = None
        if isinstance(run, str) and os.path.isabs(run) and os.path.isabs(checkpoint):  # both of this machine
            with contextlib.suppress(ValueError):  # Windows: another drive
                inside = os.path.relpath(checkpoint, run)
        ok = inside is not None and inside != os.curdir and not inside.startswith(os.pardir)
        out["checkpoint"] = Path(inside).as_posix() if ok and inside is not None else _name(checkpoint)
    return out


def checkpoint_provenance(own: dict[str, Any], prov: dict[str, Any], folder: Path) -> dict[str, Any]:
    """student.json's provenance for the ``checkpoint/`` an export (``--classes``) or ``distill qad`` writes into
    ``folder`` (its final place), a folder users ship: the student's own (``own``), without the absolute path of
    its run: ``run`` the run folder's name, as the ONNX files have it (:func:`shipped_provenance`), and
    ``relative.run`` that folder relative to ``folder``, which :func:`provenance` reads back (an export of this
    checkpoint still names its run, and the report joins it). ``prov``: :func:`provenance` of the checkpoint the
    student came from (its ``run`` absolute where that run was found). A ``run`` that is not absolute (an older
    run's, as typed where it trained) is kept as it is. ``teacher_pretrained`` stays as it is: re-targeting this
    checkpoint loads the teacher from it (:func:`distill.export.retarget.teacher_source`); the weights a re-targeting
    used (``retargeted.teacher.pretrained``, which nothing reads) are named by their name."""
    out = {k: v for k, v in own.items() if k != "relative"}
    run = prov.get("run")
    if isinstance(run, str) and _absolute(run):
        out["run"] = _name(run)
        if os.path.isabs(run):  # of this machine
            with contextlib.suppress(ValueError):  # Windows: another drive
                out["relative"] = {"run": Path(os.path.relpath(run, folder.resolve())).as_posix()}
    elif isinstance(run, str):
        out["run"] = run
    retargeted = out.get("retargeted")
    if isinstance(retargeted, dict) and isinstance(retargeted.get("teacher"), dict):
        teacher = retargeted["teacher"]
        out["retargeted"] = {**retargeted, "teacher": {k: _name(v) if _absolute(v) else v for k, v in teacher.items()}}
    return out


def _absolute(value: Any) -> bool:
    """An absolute path, POSIX or Windows (student.json's may come from another machine)."""
    return isinstance(value, str) and (posixpath.isabs(value) or ntpath.isabs(value))


def _name(path: str) -> str:
    """The last part of a path, either separator (``/home/alice/runs/kd/`` and ``C:\\runs\\kd`` -> ``kd``)."""
    return re.split(r"[/\\]", path.rstrip("/\\"))[-1] or path
