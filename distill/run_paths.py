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
``distill export``, ``qad`` and ``eval`` read a checkpoint's run config the same way (:func:`run_paths`, from
:func:`distill.run_split.read_run_config`), refusing a path found nowhere only where they would use it.

Fingerprints are unchanged by this: a cache's and a run's data identity are over paths relative to the data root.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Collection, TypeVar

from pydantic import BaseModel

from distill.config import TrainConfig, load_train_config
from distill.data.unlabeled import is_folder_entry
from distill.errors import DistillError
from distill.records import RUN_CONFIG

#: a ``teacher.pretrained`` with one of these suffixes is a file (distill/teacher/clip.py), not an open_clip tag
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
OPEN_CLIP_IDS = ("hf-hub:", "local-dir:")  # ids, not paths: part of the teacher's identity as written
M = TypeVar("M", bound=BaseModel)


def map_paths(cfg: M, fn: Callable[[str, str], str]) -> M:
    """``cfg`` with every path it names replaced by ``fn(key, path)`` (``key``: where it is, e.g. ``data.root``).

    ``cfg``: a :class:`~distill.config.TrainConfig`, or a view of a run's config holding some of its sections
    (:class:`distill.run_split.RunConfigView`: a section it lacks, or holds as None, names no path)."""
    update: dict = {}
    data = getattr(cfg, "data", None)
    if data is not None:
        update_data: dict = {"root": Path(fn("data.root", str(data.root))), "unlabeled": [
            fn("data.unlabeled", e) if is_folder_entry(e) else e for e in data.unlabeled]}
        if data.class_map is not None:
            update_data["class_map"] = fn("data.class_map", data.class_map)
        update["data"] = data.model_copy(update=update_data)
    cache = getattr(cfg, "cache", None)
    if isinstance(cache, list):
        update["cache"] = [Path(fn("cache", str(c))) for c in cache]
    elif cache is not None:
        update["cache"] = Path(fn("cache", str(cache)))
    source = getattr(cfg, "source_checkpoint", None)
    if source is not None:
        update["source_checkpoint"] = Path(fn("source_checkpoint", str(source)))
    teacher = getattr(cfg, "teacher", None)
    if teacher is not None and teacher.pretrained and not teacher.pretrained.startswith(OPEN_CLIP_IDS):
        update["teacher"] = teacher.model_copy(update={"pretrained": fn("teacher.pretrained", teacher.pretrained)})
    return cfg.model_copy(update=update)


def _path(key: str, value: str) -> Path:
    """``value`` as the path the run reads (a ``data.unlabeled`` folder may start with ``~``)."""
    return Path(os.path.expanduser(value)) if key == "data.unlabeled" else Path(value)  # ~nobody/x: kept, no error


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


def run_paths(cfg: M, config: Path, run_dir: Path, out: Path | None, warn: Callable[[str], None],
              missing: dict[tuple[str, str], str] | None = None, keys: Collection[str] | None = None) -> M:
    """``cfg`` (read from the run's ``config``, in the run folder ``run_dir`` as named, with ``run.out`` ``out``; None:
    it has none) with each relative path resolved as the module docstring says. A path taken in the current folder
    is said in one line to ``warn`` (no ``warning:`` head), naming each such key.

    Args:
        missing: None: a path neither folder holds is refused. A dict: such a path is kept as written (relative to
            the current folder, where it is not), and its one-line refusal stored under ``(key, path)``, for a
            caller that refuses it only where it is used.
        keys: the keys (as :func:`map_paths` names them) the caller reads; the others are left as written, neither
            looked for nor warned about. None: every key (a resume reads them all).

    Raises:
        DistillError: one line naming the config, the key and the places looked in (``missing`` None).
    """
    start, cwd = started_in(run_dir, out) if out is not None else None, Path.cwd()
    told = f"run.out {out}" if out is not None else "no run.out"
    unknown = f"{told} is not the end of {run_dir}" if out is not None else f"{config} has no run.out"
    guessed: list[str] = []

    def locate(key: str, value: str) -> str:
        path = _path(key, value)
        if path.is_absolute() or (keys is not None and key not in keys):
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
            refusal = (f"{config}: {key} '{value}' is relative, and neither {there} (if the run was started in "
                       f"{start}) nor {here} (in the current folder) exists: {fix}")
        elif there is not None:
            refusal = (f"{config}: {key} '{value}' is relative, and {here} does not exist (the current folder is "
                       f"where the run was started, if {told} at the end of its folder's path says so): {fix}")
        else:
            refusal = (f"{config}: {key} '{value}' is relative, {here} does not exist, and the folder the run was "
                       f"started in cannot be told ({unknown}): {fix}")
        if missing is None:
            raise DistillError(refusal)
        missing.setdefault((key, value), refusal)
        return value

    cfg = map_paths(cfg, locate)
    if guessed:
        verb = "is" if len(guessed) == 1 else "are"
        why = (f"the folder the run was started in cannot be told ({told})" if start is None else
               f"not in {start} (if the run was started in {start}, as its folder's path ending in {told} suggests)")
        warn(f"{config}: {', '.join(guessed)} {verb} relative, and {why}: taken in the current folder {cwd}; write "
             f"absolute paths into {config} if that is not where the run was started")
    return cfg


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

    def warn(line: str) -> None:
        if os.environ.get("RANK", "0") == "0":  # said once, not by every DDP rank
            print(f"warning: {line}", file=sys.stderr)

    cfg = run_paths(cfg, config, run_dir, cfg.run.out, warn)
    return cfg.model_copy(update={"run": cfg.run.model_copy(update={"out": run_dir})})
