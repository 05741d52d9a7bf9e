"""What a run's path keys (data.root, cache, source_checkpoint, teacher.pretrained) name, for the report's row key.

config.yaml stores these as absolute paths, so seeds of one configuration run from a copied data folder, a moved
tree or another machine would differ in them and read as separate rows (n = 1 each, no Welch test). Where the run
recorded what the path names, that identity is compared instead of the path (review 4 H1, M3):

- ``data.root``: data.json's dataset fingerprint (files' relative paths and sizes), split rule and image counts;
- ``cache``: data.json's caches, each cache's manifest meaning less its ``path`` (a moved cache is the same);
- ``source_checkpoint``: inside a run folder (``RUN/checkpoints/best``), that source run's configuration less its
  seed and bookkeeping (this same key, recursively: seed s adapting seed s's source model is one configuration);
  otherwise the sha256 of the checkpoint's weights (``model.safetensors``, hashed once per file);
- ``teacher.pretrained``: summary.json's teacher ``checkpoint_sha256``.

A run whose weights are not at hand (copied without its checkpoints) is known to the report's joins by what it recorded
instead (:func:`recorded_identity`), so that copies of it are told from runs that differ.

A path is compared as a path only where no identity was recorded (runs before data.json, a checkpoint without
weights). An identity reads ``data 1f2e3d4c5b6a`` (a short hash), so a label tells two such rows apart.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from distill.errors import DistillError
from distill.records import RUN_CONFIG, STUDENT_WEIGHTS, RunData, RunSummary, TeacherIdentity
from distill.report.configs import flat_config, read_config

#: how many folders up from a source checkpoint a run folder is looked for (``RUN/checkpoints/best``: two)
_RUN_DEPTH = 2
#: how deep a chain of adaptations of adaptations is followed
_MAX_CHAIN = 8


def _short(kind: str, value: Any) -> str:
    digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return json.dumps(f"{kind} {digest}")


def path_identities(run_dir: Path, cfg: Any, teacher: TeacherIdentity | None, depth: int = 0) -> dict[str, str]:
    """{path key: JSON of what it names} for the keys of ``cfg`` (the run's TrainConfig) with a recorded identity."""
    out: dict[str, str] = {}
    data = RunData.read(run_dir) if RunData.exists_in(run_dir) else None
    if data is not None:
        out["data.root"] = _short("data", [data.fingerprint, data.rule, data.images])
        if getattr(cfg, "cache", None) is not None:
            out["cache"] = _short("cache", [{k: v for k, v in c.items() if k != "path"} for c in data.caches])
    source = getattr(cfg, "source_checkpoint", None)
    if source is not None:
        ident = source_identity(Path(str(source)).expanduser(), depth)
        if ident is not None:
            out["source_checkpoint"] = ident
    sha = teacher.checkpoint_sha256 if teacher is not None else None
    teacher_cfg = getattr(cfg, "teacher", None)
    if sha and teacher_cfg is not None and getattr(teacher_cfg, "pretrained", None) is not None:
        out["teacher.pretrained"] = json.dumps(f"sha256 {sha[:12]}")
    return out


def source_identity(checkpoint: Path, depth: int = 0) -> str | None:
    """A source checkpoint as compared: its run's configuration (less seed and bookkeeping) where it lies in a run
    folder with a readable config.yaml, else its weights' sha256; None: neither (compared by path)."""
    if depth < _MAX_CHAIN:
        for run in [checkpoint, *list(checkpoint.parents)[:_RUN_DEPTH]]:
            if (run / RUN_CONFIG).is_file():
                config = _run_config(run, depth + 1)
                if config is not None:
                    return _short("run config", config)
                break
    weights = checkpoint / STUDENT_WEIGHTS
    sha = _sha256(str(weights)) if weights.is_file() else None
    return json.dumps(f"sha256 {sha[:12]}") if sha else None


def _run_config(run: Path, depth: int) -> dict[str, str] | None:
    """The source run's strategy, student and flattened config, its paths by identity; None: unreadable."""
    try:
        cfg = read_config(run)
        summary = RunSummary.read(run) if RunSummary.exists_in(run) else None
    except (DistillError, OSError, ValueError):
        return None
    if cfg is None:
        return None
    teacher = summary.teacher if summary is not None else None
    flat = flat_config(cfg, path_identities(run, cfg, teacher, depth))
    dump = cfg.model_dump(mode="json")
    data = dump.get("data") or {}
    # what the row key takes from summary.json for the run itself (configs.COVERED), from config.yaml here
    flat["source.covered"] = json.dumps([dump.get("strategy"), dump.get("student"), {
        k: data.get(k) for k in ("source", "target", "unlabeled", "withhold_classes")}], sort_keys=True, default=str)
    return flat


def match_recorded(configs: list[tuple[dict[str, str] | None, dict[str, str] | None]]) -> None:
    """A run that recorded no identity for a path key (older runs: by its path) takes the identity of the newer runs
    at that same path where exactly one identity is recorded there, so an older and a newer seed on one data folder
    stay one row. ``configs``: (each run's path keys as paths, its flat config, identities in place), edited in place;
    with none or several identities at that path it keeps the path (another configuration)."""
    seen: dict[tuple[str, str], set[str]] = {}
    for paths, config in configs:
        for key, path in (paths or {}).items():
            if config is not None and config.get(key) != path:
                seen.setdefault((key, path), set()).add(config[key])
    for paths, config in configs:
        for key, path in (paths or {}).items():
            known = seen.get((key, path), set())
            if config is not None and config.get(key) == path and len(known) == 1:
                config[key] = next(iter(known))


def recorded_identity(seed: int | None, config: dict[str, str] | None, data: str | None,
                      summary: RunSummary) -> str:
    """A run without weights (copied without its checkpoints) as what it recorded: its seed, its config.yaml flattened
    with its paths by identity (:func:`path_identities`), data.json's data identity and every value of summary.json
    but the checkpoint's path. Two copies of one run read the same; a rerun (another finish time, time taken or
    result), another configuration or other data do not (``record`` + a hash, never equal to a weights' sha256)."""
    values = summary.model_dump(mode="json", exclude={"checkpoint"})
    return _short("record", [seed, config, data, values])


@lru_cache(maxsize=256)
def _sha256(path: str) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()
