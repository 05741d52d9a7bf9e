"""The paths a run's ``config.yaml`` names, so that ``--resume RUN`` reads the same files from any working folder.

A recipe's paths (``data.root``, ``data.class_map``, the folder entries of ``data.unlabeled``, ``cache``,
``source_checkpoint``, a ``teacher.pretrained`` file) are relative to the folder a command runs in. A new run
stores them resolved, as absolute paths (:func:`stored_paths`), so its config means the same files wherever it
is resumed from. ``run.out`` stays as typed: ``--resume RUN`` names the run's folder itself.

A run written before that keeps them as typed, and :func:`resumed_config` resolves each relative one against the
folder the run was started in. That folder is known when ``run.out`` is relative and the ``--resume`` folder ends
with it (the run was started in ``START`` with ``run.out: runs/kd``, and ``--resume START/runs/kd``): the path is
taken there, and where it is not there any more the resume is refused in one line naming the key and both places
(the start folder's, and the current folder's, which may hold other data). When it is not known (``run.out`` is
absolute, or the run folder was moved), the path is taken in the current folder, as before, with one warning
line; missing there, the resume is refused. A path is never silently taken from anywhere but where the run was
started. Writing the absolute path into the run's config is the way out of every refusal.

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
    """The folder a run was started in, when its config's ``run.out`` tells: ``out`` is relative and ``run_dir``
    (the folder resumed) ends with it. None when it cannot be told (``out`` absolute, or the folder was moved)."""
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
            not where the run was started (or, that folder unknown, not in the current folder).
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
        fix = f"write the absolute path of {key} into {config}"
        if there is not None:
            if there.exists():
                return str(there)
            other = f"; {here} exists, but may hold other data" if here != there and here.exists() else ""
            raise DistillError(f"{config}: {key} '{value}' is relative, and {there} is not there any more (the run "
                               f"was started in {start}){other}: {fix}")
        if here.exists():
            guessed.append(f"{key} '{value}'")
            return str(here)
        raise DistillError(f"{config}: {key} '{value}' is relative, {here} does not exist, and the folder the run was "
                           f"started in cannot be told (run.out {cfg.run.out} is not the end of {run_dir}): {fix}")

    cfg = map_paths(cfg, locate)
    if guessed and os.environ.get("RANK", "0") == "0":  # said once, not by every DDP rank
        verb = "is" if len(guessed) == 1 else "are"
        print(f"warning: {config}: {', '.join(guessed)} {verb} relative, and the folder the run was started in cannot "
              f"be told (run.out {cfg.run.out}): taken in the current folder {cwd}; write absolute paths into {config} "
              "if that is not where the run was started", file=sys.stderr)
    return cfg.model_copy(update={"run": cfg.run.model_copy(update={"out": run_dir})})
