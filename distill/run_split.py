"""The training run a checkpoint sits in: its config's data, and the split rule later stages keep on that data.

``distill export``, ``distill qad`` and ``distill eval`` score a checkpoint on a split's test images. On the run's
own data, a rule other than the run's moves images between splits: exported with ``test_fraction`` 0.5, a run
trained with 0.3 has a "test" split of which about a quarter are images the student trained on, and its accuracy
is inflated without a word. So on the run's own data a split key a stage is given that differs from the run's
is refused in one line naming the key and both values (:func:`run_split_rule`); the keys left unset are the
run's. On other data no image was trained on and the keys are free.

"The run's data" is the run's ``data.root`` as a folder, however it is spelled (relative, through a symlink). An
older run's relative ``data.root`` (and its other paths) are those of the folder it was started in, found as
``--resume`` finds them (:func:`read_run_config`), not whatever the current folder holds at that relative path.
Not a fingerprint: a run records none of its own file list (a cache's covers the split rule itself, the thing
compared here), and computing one over both roots at every export is a pass over each root's files. A copy of
the run's data under another path is therefore taken as other data.

``class_map`` is not compared: the split hash is over the image's folder path, not its class name, so a class
map moves no image between splits (and one naming classes other than the student's is refused by the class
check of each stage).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, field_validator

from distill.config import DataConfig, format_validation_error, load_yaml
from distill.data.split import SPLIT_KEYS, SplitRule
from distill.errors import DistillError
from distill.records import RUN_CONFIG, RUN_SUMMARY
from distill.run_paths import run_paths
from distill.spelling import option

#: the paths of a run's config that export, qad and eval read: the pool folders of ``data.unlabeled`` and the
#: ``source_checkpoint`` file are not opened (only whether the run had one), so an older run's relative ones are
#: neither looked for nor warned about
USED_PATHS = ("data.root", "data.class_map", "cache")

#: the split keys that decide which split an image is in (all but the class map)
PLACING_KEYS = tuple(k for k in SPLIT_KEYS if k != "class_map")


class RunOut(BaseModel):
    """``run.out`` of a run's config: with the run folder's path, it tells where an older run was started."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    out: Path | None = None


class RunConfigView(BaseModel):
    """The keys of a run's config.yaml that later stages use (the other sections belong to training). Read by
    :func:`read_run_config`, its relative paths (an older run's) are resolved as ``--resume`` resolves them."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    data: DataConfig | None = None
    cache: Path | list[Path] | None = None
    source_checkpoint: Path | None = None  # set: a source-free adaptation run
    run: RunOut = RunOut()
    _missing: dict[tuple[str, str], str] = PrivateAttr(default_factory=dict)  # set by read_run_config

    @field_validator("run", mode="before")
    @classmethod
    def _empty_run(cls, value: Any) -> Any:
        # a `run:` left empty (YAML null) names no start folder; it must not cost the view its data section
        return {} if value is None else value

    def caches(self) -> tuple[str, ...]:
        if self.cache is None:
            return ()
        return tuple(str(c) for c in (self.cache if isinstance(self.cache, list) else [self.cache]))

    def missing(self, key: str, path: str | Path) -> str | None:
        """The one-line refusal for ``path`` at ``key`` (``data.root``, ``cache``, ...) when it was relative and found
        neither where the run was started nor in the current folder (:func:`distill.run_paths.run_paths`), else None.
        Such a path is kept as written; a stage refuses it (or goes on without it) only where it uses it."""
        return self._missing.get((key, str(path)))


def run_folders(checkpoint: Path) -> list[Path]:
    """Where a checkpoint's run may be: the checkpoint folder and its two parents (``RUN_DIR/checkpoints/best``)."""
    return [checkpoint, *list(checkpoint.resolve().parents)[:2]]


def run_config_file(checkpoint: Path) -> Path | None:
    """The run's ``config.yaml``: the one next to the run's summary; without a summary, the first one found."""
    folders = run_folders(checkpoint)
    run_folder = next((f for f in folders if (f / RUN_SUMMARY).is_file()), None)
    return next((f / RUN_CONFIG for f in folders if (f / RUN_CONFIG).is_file()
                 and (run_folder is None or f == run_folder)), None)


def named_folder(checkpoint: Path, folder: Path) -> Path:
    """``folder`` (one of :func:`run_folders`, symlinks resolved) as the checkpoint's path names it, when that names
    the same folder: the path :func:`distill.run_paths.started_in` guesses an older run's start folder from."""
    named = Path(os.path.abspath(checkpoint))
    for candidate in (named, *list(named.parents)[:2]):
        try:
            if os.path.samefile(candidate, folder):
                return candidate
        except OSError:
            pass
    return folder


def read_run_config(path: Path, warn: Callable[[str], None], without: str,
                    checkpoint: Path | None = None) -> RunConfigView:
    """The run's config at ``path``; unreadable: a warning ending in ``without`` (what goes on without it).

    Its relative paths (a run written before paths were stored absolute) are resolved as ``--resume`` resolves
    them (:func:`distill.run_paths.run_paths`), the run folder as ``checkpoint``'s path names it: a path taken in
    the current folder is a warning; one found nowhere is kept as written (:meth:`RunConfigView.missing`)."""
    try:
        view = RunConfigView.model_validate(load_yaml(path))
    except DistillError as e:
        warn(f"{e}; {without}")
        return RunConfigView()
    except ValidationError as e:
        warn(f"{format_validation_error(e, str(path))}; {without}")
        return RunConfigView()
    run_dir = named_folder(checkpoint, path.parent) if checkpoint is not None else path.parent
    missing: dict[tuple[str, str], str] = {}
    view = run_paths(view, path, run_dir, view.run.out, warn, missing, keys=USED_PATHS)
    view._missing = missing
    return view


def same_folder(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one folder (relative to the working folder, through symlinks)."""
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    try:
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
    except OSError:
        pass
    return pa.resolve() == pb.resolve()


def run_split_rule(given: Mapping[str, Any], root: str | Path | None, data: DataConfig | None,
                   config_file: Path | None, given_by: str, fix: str,
                   names: Mapping[str, str] | None = None) -> SplitRule | None:
    """The run's split rule when ``root`` is the run's data (None: the run's), else None (other data, or no run).

    Args:
        given: the split keys the stage was given (unset ones left out or None).
        data: the run's ``data`` section (None: the checkpoint sits in no readable run).
        config_file: the run's config, for the message.
        given_by: who gave ``given`` (``export``, a file), the head of the message.
        fix: what to do instead, ending the message (``{flag}``: the key as ``names`` spells it).
        names: key -> how the user spelled it; default: :func:`distill.spelling.option`'s (the running command's
            flag, else the key).

    Raises:
        DistillError: on the run's data, a placing key of ``given`` differs from the run's (the first one, with
            both values).
    """
    if data is None or (root is not None and not same_folder(root, data.root)):
        return None
    trained = data.split_rule()  # a run saves its whole rule (older runs: the keys they set, else the defaults)
    for key in PLACING_KEYS:
        value = given.get(key)
        if value is not None and value != getattr(trained, key):
            flag = (names or {}).get(key) or option(key)  # the CLI's flag inside its command (distill.spelling)
            raise DistillError(
                f"{given_by}: {flag} {value} differs from training's {getattr(trained, key)} "
                f"({config_file or RUN_CONFIG}): on the run's own data ({data.root}) that split's test images would "
                f"include images the student trained on; {fix.format(flag=flag)}")
    return trained
