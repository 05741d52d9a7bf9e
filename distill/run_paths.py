"""The paths a run's ``config.yaml`` names, so that ``--resume RUN`` reads the same files from any working folder.

A recipe's paths (``data.root``, ``data.class_map``, the folder entries of ``data.unlabeled``, ``cache``,
``source_checkpoint``, a ``teacher.pretrained`` file) are relative to the folder a command runs in. A new run
stores them resolved, as absolute paths (:func:`stored_paths`), so its config means the same files wherever it
is resumed from. ``run.out`` stays as typed: ``--resume RUN`` names the run's folder itself.

A run written before that keeps them as typed, and :func:`resumed_config` resolves each relative one. The folder
the run was started in is not recorded; :func:`started_in` guesses it when ``run.out`` is relative and the
``--resume`` folder ends with it (``run.out: runs/kd`` and ``--resume START/runs/kd``: started in ``START``), and
a path there is taken. The guess is wrong for a run folder since moved (``run.out: kd``, resumed as
``/archive/kd``) or resumed through a symlink's target, so a path missing there is taken in the current folder
instead, with one warning line saying so (as is every path when nothing can be guessed: ``run.out`` absolute or
not the end of the folder's path). Missing in both, the resume is refused in one line naming the key and the
places looked in. Writing the absolute path into the run's config is the way out of every refusal and warning.

Fingerprints are unchanged by this: a cache's and a run's data identity are over paths relative to the data root.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

from distill.config import TrainConfig, load_train_config
from distill.data.unlabeled import is_folder_entry
from distill.errors import DistillError
from distill.records import RUN_CONFIG

#: a ``teacher.pretrained`` with one of these suffixes is a file (distill/teacher/clip.py), not an open_clip tag
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
OPEN_CLIP_IDS = ("hf-hub:", "local-dir:")  # ids, not paths: part of the teacher's identity as written


def map_paths(cfg: TrainConfig, fn: Callable[[str, str], str]) -> TrainConfig:
    """``cfg`` with every path it names replaced by ``fn(key, path)`` (``key``: where it is, e.g. ``data.root``)."""
    data = cfg.data
    update_data: dict = {"root": Path(fn("data.root", str(data.root))),
                         "unlabeled": [fn("data.unlabeled", e) if is_folder_entry(e) else e for e in data.unlabeled]}
    if data.class_map is not None:
        update_data["class_map"] = fn("data.class_map", data.class_map)
    update: dict = {"data": data.model_copy(update=update_data)}
    if isinstance(cfg.cache, list):
        update["cache"] = [Path(fn("cache", str(c))) for c in cfg.cache]
    elif cfg.cache is not None:
        update["cache"] = Path(fn("cache", str(cfg.cache)))
    if cfg.source_checkpoint is not None:
        update["source_checkpoint"] = Path(fn("source_checkpoint", str(cfg.source_checkpoint)))
    teacher = cfg.teacher
    if teacher is not None and teacher.pretrained and not teacher.pretrained.startswith(OPEN_CLIP_IDS):
        update["teacher"] = teacher.model_copy(update={"pretrained": fn("teacher.pretrained", teacher.pretrained)})
    return cfg.model_copy(update=update)


def _path(key: str, value: str) -> Path:
    """``value`` as the path the run reads (a ``data.unlabeled`` folder may start with ``~``)."""
    return Path(value).expanduser() if key == "data.unlabeled" else Path(value)


def stored_paths(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` as a new run stores it: every relative path absolute, against the current folder (symlinks kept).
    A ``teacher.pretrained`` that is no file here is an open_clip tag and stays one."""
    def absolute(key: str, value: str) -> str:
        path = _path(key, value)
        if path.is_absolute() or (key == "teacher.pretrained" and not path.is_file()):
            return value
        return str(path.absolute())
    return map_paths(cfg, absolute)


def started_in(run_dir: Path, out: Path) -> Path | None:
    """A guess at the folder a run was started in: ``run_dir`` (the folder resumed) less ``out`` (its config's
    ``run.out``) when ``out`` is relative and ``run_dir`` ends with it. None when nothing can be guessed (``out``
    absolute, or not the end of ``run_dir``). Only a guess: a moved run folder can end with ``out`` too."""
    if out.is_absolute():
        return None
    here, tail = Path(os.path.abspath(run_dir)).parts, Path(os.path.normpath(out)).parts
    if ".." in tail:
        return None
    if not tail:  # run.out: .
        return Path(*here)
    return Path(*here[:-len(tail)]) if len(here) > len(tail) and here[-len(tail):] == tail else None


def resumed_config(run_dir: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """``RUN_DIR/config.yaml`` for ``--resume RUN_DIR``, from any working folder: ``run.out`` is ``RUN_DIR``, and a
    relative path (a run written before paths were stored absolute) is resolved as the module docstring says.

    Raises:
        DistillError: one line naming the config, the key and the places looked in, for a relative path that is
            neither in the guessed start folder nor in the current folder.
    """
    run_dir = Path(run_dir)
    config = run_dir / RUN_CONFIG
    cfg = load_train_config(config, overrides)
    start, cwd = started_in(run_dir, cfg.run.out), Path.cwd()
    guessed: list[str] = []

    def locate(key: str, value: str) -> str:
        path = _path(key, value)
        if path.is_absolute():
            return value
        there, here = (start / path if start is not None else None), cwd / path
        if key == "teacher.pretrained" and path.suffix not in CHECKPOINT_SUFFIXES and not here.is_file() and not (
                there is not None and there.is_file()):
            return value  # an open_clip tag
        if there is not None and there.exists():
            return str(there)
        if here.exists():
            guessed.append(f"{key} '{value}'")
            return str(here)
        fix = f"write the absolute path of {key} into {config}"
        if there is not None and there != here:
            raise DistillError(f"{config}: {key} '{value}' is relative, and neither {there} (if the run was started "
                               f"in {start}) nor {here} (in the current folder) exists: {fix}")
        if there is not None:
            raise DistillError(f"{config}: {key} '{value}' is relative, and {here} does not exist (the current folder "
                               f"is where the run was started, if run.out {cfg.run.out} at the end of its folder's "
                               f"path says so): {fix}")
        raise DistillError(f"{config}: {key} '{value}' is relative, {here} does not exist, and the folder the run was "
                           f"started in cannot be told (run.out {cfg.run.out} is not the end of {run_dir}): {fix}")

    cfg = map_paths(cfg, locate)
    if guessed and os.environ.get("RANK", "0") == "0":  # said once, not by every DDP rank
        verb = "is" if len(guessed) == 1 else "are"
        why = (f"the folder the run was started in cannot be told (run.out {cfg.run.out})" if start is None else
               f"not in {start} (if the run was started in {start}, as its folder's path ending in run.out "
               f"{cfg.run.out} suggests)")
        print(f"warning: {config}: {', '.join(guessed)} {verb} relative, and {why}: taken in the current folder "
              f"{cwd}; write absolute paths into {config} if that is not where the run was started", file=sys.stderr)
    return cfg.model_copy(update={"run": cfg.run.model_copy(update={"out": run_dir})})
