"""What sets two training runs apart in their ``config.yaml``, for the report (:mod:`distill.report.runs`).

A run's resolved config.yaml (the :class:`~distill.config.TrainConfig` it was started with, defaults filled in) is
flattened to dotted keys (``optim.lr``, ``student.input_size``, ``source_checkpoint``). Runs whose flattened configs
differ in any key but the seed and the bookkeeping below are different configurations: separate rows, labelled by
the keys that differ. Runs equal in every such key *and* the seed are one sample run twice (repeats). Before
2026-12-06 the report keyed on a handful of fields, so an lr sweep at the default seed 0 read as one seed run
three times and kept only the newest run.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from distill.config import TrainConfig, format_validation_error, load_yaml
from distill.errors import DistillError
from distill.records import RUN_CONFIG

#: keys that say where or how a run was carried out, not what it computed: leaving them out lets a rerun into
#: another folder, on another machine or with other logging count as a repeat. Each changes no number in summary.json:
#: run.out (the folder), run.workers (DataLoader processes: each epoch's order travels in the batch sampler and the
#: dataset holds every (image, view) once, README "Keeping a GPU fed"), run.progress (tqdm bars, "changes no result"),
#: run.device (where it ran; a CPU and a GPU run of one config are one configuration, whose results may differ:
#: the report then says so), run.log_every (how often the loss is read back and logged), run.save_every (extra
#: step checkpoints), run.eval_every (test splits on other epochs; the selected epoch is always evaluated).
#: Anything else that differs (optim.*, student.input_size, run.views, data.root and the split keys,
#: run.select_on, run.deterministic, source_checkpoint, robust, ...) makes another configuration: when in doubt a
#: key is kept, since a wrong split shows as two labelled rows while a wrong merge silently drops a run.
BOOKKEEPING = frozenset({"run.out", "run.workers", "run.progress", "run.device", "run.log_every", "run.save_every",
                         "run.eval_every"})

#: keys the report already groups and labels on from summary.json (runs.py ``_config_key``; the options as the run
#: recorded them in full, the pool by folder identity, the seed as the repeat rule): not compared twice
COVERED = ("strategy", "student.arch", "student.head", "data.source", "data.target", "data.unlabeled",
           "data.withhold_classes", "run.seed")

#: keys holding paths: compared by what they name where the run recorded it (:mod:`distill.report.identity`), else
#: with ``~`` expanded and ``a//b/``, ``a/./b`` normalized (one file, one spelling)
PATHS = ("data.root", "source_checkpoint", "cache", "teacher.pretrained")


def read_config(run_dir: Path) -> TrainConfig | None:
    """The run's ``config.yaml`` (the resolved TrainConfig it was started with); None when absent."""
    path = run_dir / RUN_CONFIG
    if not path.is_file():
        return None
    try:  # the structure only: strategy options are the strategy's to check, and need torch to import
        return TrainConfig.model_validate(load_yaml(path))
    except ValidationError as e:
        raise DistillError(format_validation_error(e, str(path))) from None


def flat_config(cfg: TrainConfig, identities: dict[str, str] | None = None) -> dict[str, str]:
    """``cfg`` as {dotted key: JSON of its value}, less :data:`BOOKKEEPING` and :data:`COVERED`; paths normalized,
    or, for a path key in ``identities`` (:func:`distill.report.identity.path_identities`), what it names."""
    out: dict[str, str] = {}
    identities = identities or {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
            return
        if prefix in BOOKKEEPING or any(prefix == c or prefix.startswith(c + ".") for c in COVERED):
            return
        if prefix in identities and value is not None:
            out[prefix] = identities[prefix]
            return
        if prefix in PATHS and value is not None:
            value = [_path(v) for v in value] if isinstance(value, list) else _path(value)
        out[prefix] = json.dumps(value, sort_keys=True)

    walk("", cfg.model_dump(mode="json"))
    return out


def _path(value: Any) -> str:
    return os.path.normpath(os.path.expanduser(str(value)))


def config_labels(configs: dict[str, dict[str, str] | None]) -> dict[str, list[str]]:
    """Label bits per configuration (``{id: flat config}``, None: no config.yaml): ``key=value`` for each dotted
    key whose value differs between them (``–`` where a config has no such key; a section set in one and unset in
    another, ``robust=on`` / ``robust=none``, then its keys between those that set it), and ``no config.yaml``."""
    out: dict[str, list[str]] = {ck: [] for ck in configs}
    known = {ck: c for ck, c in configs.items() if c is not None}
    keys = sorted({k for c in known.values() for k in c})
    # a section unset (null) in one config and set in another (``robust``): ``robust=none`` / ``robust=on``, and its
    # keys only between the configs that set it
    sections = {k for c in known.values() for k, v in c.items() if v == "null" and any(o.startswith(k + ".")
                                                                                     for o in keys)}
    for k in keys:
        inside = any(k.startswith(s + ".") for s in sections)
        values = {ck: c.get(k) for ck, c in known.items() if not inside or k in c}
        if k in sections:
            values = {ck: json.dumps("none" if v == "null" else "on") for ck, v in values.items()}
        if len(set(values.values())) < 2:
            continue
        shown = _paths_shown(values) if k in PATHS else {ck: _value(v) for ck, v in values.items()}
        for ck in values:
            out[ck].append(f"{k}={shown[ck]}")
    if known and len(known) < len(configs):
        for ck, c in configs.items():
            if c is None:
                out[ck].append("no config.yaml")
    return out


def _value(v: str | None) -> str:
    if v is None:
        return "–"
    x = json.loads(v)
    return f"{x:g}" if isinstance(x, float) else (json.dumps(x) if isinstance(x, (dict, list)) else str(x))


def _paths_shown(values: dict[str, str | None]) -> dict[str, str]:
    """Paths by their last components, as few as tell them apart (``erm/checkpoints/best``)."""
    full = {ck: _value(v) for ck, v in values.items()}
    for n in range(1, max(len(p.split("/")) for p in full.values()) + 1):
        tail = {ck: "/".join(p.split("/")[-n:]) for ck, p in full.items()}
        if len(set(tail.values())) == len(set(full.values())):
            return {ck: t if t == full[ck] else "…/" + t for ck, t in tail.items()}
    return full
