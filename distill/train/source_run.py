"""The run that trained a source checkpoint, and the split rule an adaptation of that checkpoint takes from it.

An adapted student is tested on its target domains' test split; it is comparable with its source run (which tested on
the same domains as unseen ones) only when both split those domains by one rule, and a bootstrapped teacher's pool
(``pretrain_fraction``), kept out of the source run, must stay out of the adaptation too. ``distill adapt`` without a
cache takes the source run's rule (:func:`split_of_source_run`); ``distill train`` of a config with a
``source_checkpoint`` does the same for the keys it leaves unset (:func:`source_split`), and both say in one line when
the rule they train with (a cache's, or keys a recipe or ``--set`` gives) is not the source run's
(:func:`unlike_source_run`).

The run is found as :func:`source_run_config` says: the checkpoint's own run, else the run folder its student.json
records, else a run folder beside or above it.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping

from distill.data.split import SplitRule
from distill.errors import DistillError, DistillWarning
from distill.records import CHECKPOINTS_DIR, RUN_CONFIG, RUN_SUMMARY, STUDENT_SPEC, STUDENT_WEIGHTS
from distill.run_split import PLACING_KEYS, read_run_config, run_config_file, same_folder
from distill.student.model import StudentSpec, not_a_checkpoint
from distill.utils.io import read_json


def checkpoint_spec(checkpoint: str | Path) -> StudentSpec:
    """The :class:`StudentSpec` of a checkpoint folder (or of its ``model.safetensors``)."""
    path = Path(checkpoint)
    folder = path.parent if path.name == STUDENT_WEIGHTS else path
    if not folder.exists():  # a mistyped run folder: say so, not "no student.json" about a path that is not there
        raise DistillError(f"{folder}: no such checkpoint folder (pass RUN/checkpoints/best of a finished "
                           "`distill train` run)")
    if not (folder / STUDENT_SPEC).is_file():
        raise not_a_checkpoint(folder)
    return StudentSpec.from_dict(read_json(folder / STUDENT_SPEC), str(folder / STUDENT_SPEC))


#: the split rule of an adaptation with neither a cache nor a readable source run (what every one used before): the
#: defaults (:class:`~distill.data.split.SplitRule`), every key spelled out
FALLBACK_SPLIT: dict[str, Any] = {key: getattr(SplitRule(), key) for key in PLACING_KEYS}


def recorded_run(folder: Path, spec: StudentSpec) -> Path | None:
    """The run folder the student.json of the checkpoint ``folder`` names: ``relative.run`` from the checkpoint
    folder (a ``distill qad`` or ``distill export --classes`` checkpoint, whose ``provenance.run`` is the run's name
    only, not a path here: :func:`distill.export.training_run.checkpoint_provenance`), else ``provenance.run`` when
    it is an absolute path (a training run's checkpoint: the run folder's path; a bare name is not looked up under
    the current folder, where another run of that name may be)."""
    relative = spec.provenance.get("relative")
    if isinstance(relative, dict) and isinstance(relative.get("run"), str):  # as training_run.provenance reads it
        return Path(os.path.normpath(os.path.join(folder.resolve(), relative["run"])))
    run = spec.provenance.get("run")  # a name only (no relative.run: written where relpath failed) is no path here
    return Path(run) if isinstance(run, str) and os.path.isabs(run) else None


def source_run_config(checkpoint: str | Path, spec: StudentSpec) -> Path | None:
    """The config.yaml of the run that trained ``checkpoint``: its own run's (``RUN/checkpoints/best``), else the one
    in the run folder its student.json records (:func:`recorded_run`), else one beside it or up to two folders above
    that is a run's (a ``checkpoints/`` folder or summary.json beside it: a checkpoint copied next to a recipe
    file named config.yaml does not take that recipe's split rule); None: none of these."""
    path = Path(checkpoint)
    folder = path.parent if path.name == STUDENT_WEIGHTS else path
    if folder.resolve().parent.name == CHECKPOINTS_DIR and (own := folder.resolve().parents[1] / RUN_CONFIG).is_file():
        return own
    recorded = recorded_run(folder, spec)
    if recorded is not None and (recorded / RUN_CONFIG).is_file():
        return recorded / RUN_CONFIG
    found = run_config_file(folder)
    if found is not None and ((found.parent / CHECKPOINTS_DIR).is_dir() or (found.parent / RUN_SUMMARY).is_file()):
        return found
    return None


@dataclass(frozen=True)
class SourceSplit:
    """The split rule a source checkpoint's run trained with: its ``data`` config keys (test_fraction, split_seed,
    val_fraction, pretrain_fraction), the run's config.yaml and its data root (a relative one resolved as ``--resume``
    resolves it: :func:`distill.run_split.read_run_config`)."""

    keys: dict[str, Any]
    config: Path
    root: Path


def source_run_split(checkpoint: str | Path, spec: StudentSpec) -> SourceSplit | str:
    """The split rule the source checkpoint's run trained with; no readable run: why, in one line."""
    config = source_run_config(checkpoint, spec)
    folder = Path(checkpoint).parent if Path(checkpoint).name == STUDENT_WEIGHTS else Path(checkpoint)
    if config is None:
        return (f"{checkpoint}: the run that trained it was not found (no {RUN_CONFIG} beside it or in the run folder "
                f"its {STUDENT_SPEC} records)")
    said: list[str] = []  # an unreadable config: why (this module returns its lines; the caller says them)
    # its relative paths (a run written before they were stored absolute) resolved as --resume does: data.root is
    # compared with the adaptation's, whatever the current folder
    data = read_run_config(config, said.append, "its split rule is not known", checkpoint=folder).data
    if data is None:
        return said[0] if said else f"{config}: no data section"
    rule = data.split_rule()  # a run saves its whole rule (older runs: the keys they set, else the defaults)
    return SourceSplit({key: getattr(rule, key) for key in PLACING_KEYS}, config, data.root)


def source_split(checkpoint: str | Path) -> SourceSplit | str | None:
    """:func:`source_run_split` of a config's ``source_checkpoint``; None where the checkpoint itself cannot be read
    (loading it refuses it, naming the problem)."""
    try:
        spec = checkpoint_spec(checkpoint)
    except DistillError:
        return None
    return source_run_split(checkpoint, spec)


def unlike_source_run(rule: Mapping[str, Any], root: str | Path, source: SourceSplit, by: str, fix: str) -> str | None:
    """One line saying that ``rule`` (the split keys an adaptation trains with, on data ``root``) is not the one its
    source run split the same data with, so the adapted student would be tested on other target images than its
    source run (and a teacher pool the source run kept out could be trained on); None: the same rule, or other data
    (no image of it was the source run's). ``by``: whose rule ``rule`` is; ``fix``: what to do."""
    if not same_folder(root, source.root):
        return None
    differ = [k for k in PLACING_KEYS if rule.get(k) != source.keys[k]]
    if not differ:
        return None

    def said(keys: Mapping[str, Any]) -> str:
        return ", ".join(f"{k} {keys[k]:g}" for k in differ)
    return (f"{by} splits the data with {said(rule)}, the source run ({source.config}) with {said(source.keys)}: the "
            f"adapted student would be tested on other target images than its source run; {fix}")


def split_of_source_run(checkpoint: str | Path, spec: StudentSpec, given: Collection[str] = ()) -> dict[str, Any]:
    """The split rule the source checkpoint's run trained with (:func:`source_run_split`): an adaptation without a
    cache (``shot``) then evaluates on the source run's target test images, and a bootstrapped teacher's pool stays
    out of it as it stayed out of the source run. ``given``: the split keys the caller sets itself (``--set
    data.KEY=...``); every one given: none is looked up (``{}``). No readable run: one warning line naming the keys
    not given, and :data:`FALLBACK_SPLIT` (30% test, seed 0, 10% val, no teacher pool)."""
    if all(key in given for key in PLACING_KEYS):
        return {}
    found = source_run_split(checkpoint, spec)
    if not isinstance(found, str):
        return found.keys
    taken = ", ".join(f"{k} {v:g}" for k, v in FALLBACK_SPLIT.items() if k not in given)
    pool = " (no teacher pool)" if "pretrain_fraction" not in given else ""
    # no flag: a caller of distill.api.adapt gives the keys as overrides, the command as --set
    warnings.warn(f"{found}; adapting with {taken}{pool} (set data.KEY=VALUE to give the source run's): the target "
                  "test split may differ from the source run's", DistillWarning, stacklevel=3)
    return dict(FALLBACK_SPLIT)


def adaptation_split_warning(rule: SplitRule, root: str | Path, source: SourceSplit | str | None,
                             cache: str | Path | None, cache_keys: Mapping[str, Any],
                             given: Collection[str] = ()) -> str | None:
    """The one line a run adapting a source checkpoint says about its split rule ``rule`` on data ``root``
    (:func:`distill.train.build.with_split_rule`), or None: ``source`` (:func:`source_split`) found and split the data
    otherwise (:func:`unlike_source_run`), or, with no cache, not found (its reason) where keys not ``given`` (by the
    config, or a teacher's pool) took the defaults. ``cache``: the run's first cache (None: none), whose rule
    ``cache_keys`` is."""
    if isinstance(source, str):
        unset = [k for k in PLACING_KEYS if k not in given]
        if cache is not None or not unset:
            return None
        taken = ", ".join(f"{k} {getattr(rule, k):g}" for k in unset)
        return (f"{source}; training with {taken} (set data.KEY=VALUE to the source run's): the target test split "
                "may differ from the source run's")
    if source is None:
        return None
    keys = rule.model_dump()
    if cache is not None and all(keys[k] == cache_keys.get(k, keys[k]) for k in PLACING_KEYS):
        return unlike_source_run(keys, root, source, f"cache {cache}",
                                 "adapt with a cache built with the source run's split rule to compare the two")
    return unlike_source_run(keys, root, source, "this run",
                             "set data.KEY=VALUE to the source run's to compare the two")
