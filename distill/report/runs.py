"""Training runs for the report: summary.json (+ config.yaml) read once, labelled, and grouped over seeds.

Runs whose config.yaml differ only in ``run.seed`` (and bookkeeping: ``run.out``, ``run.workers``, ...,
:data:`~distill.report.configs.BOOKKEEPING`) form one row, mean and standard deviation over the seeds;
runs of one configuration *and* one seed (a rerun into another ``run.out``, a copied folder) are repeats,
not samples: one of them counts (:func:`distinct_seeds`), so n is the number of distinct seeds;
adapted (source-free) runs are kept apart from source-trained ones; two configurations of one
strategy are labelled by the options and config.yaml keys in which they differ (``optim.lr=0.003``),
so the ranking can be read off the table. summary.json is read as a :class:`~distill.records.RunSummary` (accuracies are fractions)
and config.yaml as the :class:`~distill.config.TrainConfig` it is a dump of.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from distill.config import TrainConfig
from distill.data.unlabeled import is_folder_entry
from distill.errors import DistillError
from distill.records import RUN_SUMMARY, RunData, RunLaunch, RunSummary, TeacherIdentity
from distill.report.configs import PATHS, config_labels, flat_config, read_config
from distill.report.identity import match_recorded, path_identities
from distill.report.stats import mean_std, spread, verdict
from distill.utils.launch import ranks


def teacher_label(teacher: Any) -> str | None:
    """A teacher identity as a person names it: ``arch · pretrained file name or tag``."""
    if not teacher:
        return None
    if isinstance(teacher, str):
        return Path(teacher).name or teacher
    if isinstance(teacher, TeacherIdentity):
        teacher = teacher.model_dump()
    if isinstance(teacher, dict):
        arch = teacher.get("arch") or teacher.get("model") or teacher.get("name")
        pre = teacher.get("pretrained") or teacher.get("checkpoint") or teacher.get("tag")
        pre = Path(str(pre)).name if pre else None
        return " · ".join(str(x) for x in (arch, pre) if x) or None
    return str(teacher)


@dataclass
class Run:
    """One training run's summary.json (+ its config.yaml), accuracies as fractions."""

    dir: str
    summary: RunSummary
    student: str
    strategy: str
    options: dict[str, Any]
    seed: int | None
    adapted: bool  # source-free: started from a source checkpoint, trained on unlabeled targets only
    source_domains: list[str]
    target_domains: list[str]
    accuracy: dict[str, float]
    teacher: str | None
    teacher_zero_shot: dict[str, float]
    label: str = ""
    # what else sets a run apart (config.yaml): an unlabeled pool, an open-vocabulary head, withheld classes
    unlabeled: list[str] = field(default_factory=list)  # as grouped (:func:`pool_identity`); labelled by name
    typed: dict[str, str] = field(default_factory=dict)  # a folder entry's identity -> the entry as config.yaml has it
    head: str = "linear"
    withheld: list[str] = field(default_factory=list)
    # when the run finished (seconds since the epoch): of two repeats of a seed, the newer one counts. The run's
    # finished_at (finished_at.json); an older summary has none, and its file's modification time stands in (``by_mtime``), which a
    # copy without -p renews and cp -p keeps (a tie: the first path counts)
    written: float = 0.0
    by_mtime: bool = False
    # config.yaml flattened (:func:`~distill.report.configs.flat_config`): every key that can change a result and
    # is not keyed on above; None without config.yaml. Runs differ in configuration where these differ
    config: dict[str, str] | None = None
    data: str | None = None  # data.json's data identity (files, split rule, image counts); None without it
    paths: dict[str, str] | None = None  # config's path keys as paths (``config`` has what they name, if recorded)
    # launch.json's number of torchrun ranks (1: one process); None: not recorded (a run from before it), taken as 1.
    # Another number of ranks trains another run (the batch per rank, a CPU's per-rank BatchNorm statistics)
    ranks: int | None = None
    # launch.json's number of nodes (1: one node, or not recorded). The same ranks on another number of nodes reduce
    # their gradients in another order (float sums): not repeats of one run, whose differences read as non-determinism
    nodes: int = 1


@dataclass
class RunGroup:
    """Runs that differ only in their seed: one table row, mean and std over the seeds."""

    label: str
    runs: list[Run]
    mean: dict[str, float]
    std: dict[str, float]  # sample std over seeds (absent with one seed)
    target_mean: float | None
    target_std: float | None
    target_per_seed: list[float]  # each run's mean over its target domains, in seed order
    # runs of this configuration whose seed a run in ``runs`` already has: left out of every number (:func:`group_runs`)
    repeats: list[Run] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def target_spread(self) -> tuple[float, float] | None:
        """(lowest, highest) target mean over the seeds; None with fewer than two."""
        return spread(self.target_per_seed) if len(self.target_per_seed) > 1 else None

    @property
    def adapted(self) -> bool:
        return self.runs[0].adapted

    @property
    def source_domains(self) -> list[str]:
        return self.runs[0].source_domains

    @property
    def target_domains(self) -> list[str]:
        return self.runs[0].target_domains

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.runs]

    def kept_for(self, repeat: Run) -> Run:
        """The run that counts for ``repeat``'s seed."""
        return next(r for r in self.runs if r.seed == repeat.seed)


def finite(acc: dict[str, float] | None) -> dict[str, float]:
    """``acc`` without its NaN entries (a domain that could not be scored)."""
    return {str(k): float(v) for k, v in (acc or {}).items() if not math.isnan(float(v))}


def read_run(run_dir: Path) -> Run:
    """A :class:`Run` from ``RUN_DIR/summary.json`` and, for seed and source checkpoint, ``RUN_DIR/config.yaml``."""
    summary = RunSummary.read(run_dir)
    cfg = read_config(run_dir)
    if summary.trained_on:
        adapted = not set(summary.trained_on) & set(summary.source_domains)
    else:
        adapted = cfg is not None and cfg.source_checkpoint is not None
    data = cfg.data if cfg is not None else None
    entries = [str(u) for u in getattr(data, "unlabeled", None) or []]
    options = dict(summary.strategy_options)
    if adapted:  # an older adaptation recorded only the options it was given: the defaults beneath them
        options = {**_default_options(summary.strategy), **options}
    return Run(dir=str(run_dir), summary=summary, student=summary.student, strategy=summary.strategy,
               options=options, seed=cfg.run.seed if cfg is not None else None,
               adapted=adapted, source_domains=list(summary.source_domains),
               target_domains=list(summary.target_domains), accuracy=finite(summary.test_acc),
               teacher=teacher_label(summary.teacher), teacher_zero_shot=finite(summary.teacher_zero_shot),
               unlabeled=[pool_identity(u) for u in entries],
               typed={pool_identity(u): u for u in entries if is_folder_entry(u)},
               head=str(getattr(cfg.student, "head", "linear")) if cfg is not None else "linear",
               withheld=list(getattr(data, "withhold_classes", None) or []),
               config=flat_config(cfg, path_identities(run_dir, cfg, summary.teacher)) if cfg is not None else None,
               data=_data_identity(run_dir), paths=_path_keys(cfg), **_launch(run_dir),
               **_finished(summary, run_dir))


def _path_keys(cfg: TrainConfig | None) -> dict[str, str] | None:
    return None if cfg is None else {k: v for k, v in flat_config(cfg).items() if k in PATHS}


def _data_identity(run_dir: Path) -> str | None:
    """What data.json says the run trained on (its folders' files, split rule and image counts), as one string."""
    if not RunData.exists_in(run_dir):
        return None
    d = RunData.read(run_dir)
    return json.dumps([d.fingerprint, d.rule, d.images], sort_keys=True, default=str)


def _launch(run_dir: Path) -> dict[str, Any]:
    """``ranks``/``nodes`` of a :class:`Run` from launch.json; ranks None without it (or unreadable: half-written)."""
    try:
        launch = RunLaunch.read(run_dir) if RunLaunch.exists_in(run_dir) else None
    except (OSError, ValueError, DistillError):
        launch = None
    return {"ranks": launch.world_size, "nodes": launch.nnodes} if launch else {"ranks": None}


def _finished(summary: RunSummary, run_dir: Path) -> dict[str, Any]:
    """``written``/``by_mtime`` of a :class:`Run`: ``finished_at`` (finished_at.json, or summary.json), else summary.json's mtime."""
    if summary.finished_at:
        try:
            return {"written": datetime.fromisoformat(summary.finished_at).timestamp(), "by_mtime": False}
        except ValueError:
            pass
    return {"written": (run_dir / RUN_SUMMARY).stat().st_mtime, "by_mtime": True}


def pool_entry(entry: str) -> str:
    """A ``data.unlabeled`` entry as the report labels and groups runs on it: a domain name as written, a folder by
    its name (the last component of its path). A run records no content identity of a folder, and new runs store
    its path absolute: by the full string, ``/home/u/proj/cam`` would be a long label, and an older run's ``./cam``
    (the same folder, as typed) another configuration than a new run's."""
    if not is_folder_entry(entry):
        return entry
    return Path(os.path.normpath(entry)).name or entry


#: how :func:`pool_identity` marks a folder known only by its name (stored as typed, relative, by an older run)
BY_NAME = "*/"


def pool_identity(entry: str) -> str:
    """A ``data.unlabeled`` entry as runs are grouped on it: a domain as written; a folder stored absolute (new runs)
    by that path, so two folders of one name are two configurations; one stored as typed (``./cam``, older runs)
    as ``*/cam``, its name, which :func:`match_pools` ties to the one absolute folder of that name, if one."""
    if not is_folder_entry(entry):
        return entry
    path = Path(os.path.expanduser(entry))  # a ~user unknown here stays as written (Path.expanduser raises)
    return os.path.normpath(path) if path.is_absolute() else BY_NAME + pool_entry(entry)


def match_pools(runs: list[Run]) -> None:
    """An older run's folder known by name only (``*/cam``) groups with the newer runs' folder of that name when
    exactly one such folder is among the runs; with none or several it stays a configuration of its own."""
    paths: dict[str, set[str]] = {}
    for r in runs:
        for p in r.unlabeled:
            if not p.startswith(BY_NAME) and is_folder_entry(p):
                paths.setdefault(Path(p).name, set()).add(p)
    for r in runs:
        r.unlabeled = [next(iter(paths[p[len(BY_NAME):]])) if p.startswith(BY_NAME)
                       and len(paths.get(p[len(BY_NAME):], ())) == 1 else p for p in r.unlabeled]


def pool_names(r: Run, paths: bool = False) -> list[str]:
    """A run's unlabeled pool as labelled: domains as written, folders by their names (``paths``: by their paths,
    where the run stored one; a folder an older run stored as typed, relative to a folder it does not record, by
    that relative path, ``./cam``: beside absolute paths, a bare ``cam`` would read as another folder or a domain)."""
    if not paths:
        return [p[len(BY_NAME):] if p.startswith(BY_NAME) else pool_entry(p) for p in r.unlabeled]
    return [_relative(r.typed.get(p, p[len(BY_NAME):])) if p.startswith(BY_NAME) else p for p in r.unlabeled]


def _relative(entry: str) -> str:
    """A folder entry stored relative, spelled so that it reads as one: ``./cam`` (typed ``cam/`` or ``./cam``),
    ``../data/cam`` and ``~user/cam`` as they are."""
    norm = os.path.normpath(entry)
    return norm if norm.startswith(("~", "./", "../")) or norm in (".", "..") else os.path.join(".", norm)


def _default_options(strategy: str) -> dict[str, Any]:
    """The strategy's default options: what an adaptation ran with where its summary.json records none (adaptations
    before 2026-12-05 recorded only the options given, ``{}`` for none), so that it groups with a later run of the
    same settings, which records them in full. ``{}`` when the strategy is no longer registered or its options
    cannot be built (the report goes on without them)."""
    try:
        from distill.train.adapt import adapt_strategy, effective_options  # lazy: torch, only for such old runs

        return effective_options(adapt_strategy(strategy), {})
    except (DistillError, ImportError, OSError, RuntimeError):
        return {}


def _config_key(r: Run) -> str:
    """All that makes a run's configuration (its row): the seed and bookkeeping aside, every key of config.yaml."""
    return json.dumps([r.student, r.strategy, r.options, r.source_domains, r.target_domains, r.adapted, r.teacher,
                       r.unlabeled, r.head, r.withheld, r.config, r.ranks or 1, r.nodes], sort_keys=True, default=str)


def label_runs(runs: list[Run]) -> None:
    """Set each run's label: ``arch (strategy)``, plus what tells apart configurations sharing that name.

    Two configurations of one (arch, strategy) are labelled by the options whose values differ
    between them, then by their source domains, targets, teacher, unlabeled pool, head and
    withheld classes, then by every other key of config.yaml that differs (``optim.lr=0.003``,
    :func:`~distill.report.configs.config_labels`); runs differing only in seed share a label (they are grouped).
    """
    match_pools(runs)
    match_recorded([(r.paths, r.config) for r in runs])
    by_name: dict[tuple[str, str, bool], list[Run]] = {}
    for r in runs:
        by_name.setdefault((r.student, r.strategy, r.adapted), []).append(r)
    for (arch, strategy, adapted), rs in by_name.items():
        # adapted runs have a table block of their own; the label says so only where one name has both kinds
        both = (arch, strategy, not adapted) in by_name
        base = f"{strategy}, {'adapted' if adapted else 'source-trained'}" if both else strategy
        configs = {_config_key(r): r for r in rs}
        extra: dict[str, list[str]] = {k: [] for k in configs}
        if len(configs) > 1:
            keys = sorted({k for r in configs.values() for k in r.options}, key=str)
            for k in keys:
                vals = {json.dumps(r.options.get(k), sort_keys=True, default=str) for r in configs.values()}
                if len(vals) > 1:
                    for ck, r in configs.items():
                        extra[ck].append(f"{k}={_short(r.options.get(k, '–'))}")
            # a pool by its folders' names; by their paths where another configuration's names are the same but its
            # folders are not
            shown = {ck: {**vars(r), "unlabeled": pool_names(r, paths=any(
                pool_names(o) == pool_names(r) and o.unlabeled != r.unlabeled for o in configs.values()))}
                for ck, r in configs.items()}
            for attr, name in (("source_domains", "src"), ("target_domains", "tgt"), ("teacher", "teacher"),
                               ("unlabeled", "unlabeled"), ("head", "head"), ("withheld", "withheld")):
                if len({json.dumps(getattr(r, attr), default=str) for r in configs.values()}) > 1:
                    for ck, r in configs.items():
                        v = shown[ck][attr]
                        if attr in _UNSET_IS_DEFAULT and v in ([], "linear", None):
                            continue  # no pool, a linear head, nothing withheld: the plain case says nothing
                        extra[ck].append(f"{name} {('+'.join(v) or 'none') if isinstance(v, list) else v}")
            for ck, bits in config_labels({ck: r.config for ck, r in configs.items()}).items():
                extra[ck] += bits
            if len({(r.ranks or 1, r.nodes) for r in configs.values()}) > 1:  # `2 torchrun ranks (on 2 nodes)`
                recorded = {_config_key(r) for r in rs if r.ranks is not None}  # a run without launch.json
                nodes = any(r.nodes > 1 for r in configs.values())  # then a one-node run says `on 1 node`
                for ck, r in configs.items():  # groups as 1 process but is not said to be one
                    extra[ck].append(ranks(r.ranks or 1, r.nodes, nodes) if ck in recorded else "ranks not recorded")
        for r in rs:
            bits = [base] + extra[_config_key(r)]
            r.label = f"{arch} ({'; '.join(bits)})"


_UNSET_IS_DEFAULT = ("unlabeled", "head", "withheld")  # labelled only where a run sets them


def _short(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else (json.dumps(v) if isinstance(v, (dict, list)) else str(v))


def distinct_seeds(runs: list[Run]) -> tuple[list[Run], list[Run]]:
    """(one run per seed, the repeats left out) of one configuration's runs.

    Two runs of one configuration with the same seed are one sample run twice (a rerun into another ``run.out``, a
    copied folder), not two seeds: counting both doubles n, hides the spread between seeds, and with two such rows
    Welch's test reads std 0 as certainty ("real" from one seed a side). The run that finished last counts (a rerun
    is the newer result; the run's ``finished_at``, which a copy of the folder keeps; the file's mtime for a
    summary written before it), the first folder by path on a tie. Repeats that disagree (training that is
    not deterministic, e.g. on a GPU) are not averaged: their spread is the machine's, not the seeds', and averaging
    would weigh that seed more than the others; the one kept is a real run, whose checkpoint and exports are its
    own. A run that records no seed (no config.yaml) cannot be told from another: each counts.
    """
    kept: dict[int, Run] = {}
    unknown: list[Run] = []
    for r in sorted(runs, key=lambda r: (-r.written, r.dir)):
        if r.seed is None:
            unknown.append(r)
        else:
            kept.setdefault(r.seed, r)
    chosen = {id(r) for r in kept.values()}
    return [*kept.values(), *unknown], [r for r in runs if r.seed is not None and id(r) not in chosen]


def group_runs(runs: list[Run]) -> list[RunGroup]:
    """Runs of one configuration (config.yaml equal but for the seed and bookkeeping) -> one :class:`RunGroup`, one run per distinct seed
    (:func:`distinct_seeds`); best target mean first."""
    buckets: dict[str, list[Run]] = {}
    for r in runs:
        buckets.setdefault(_config_key(r), []).append(r)
    groups = []
    for bucket in buckets.values():
        rs, repeats = distinct_seeds(bucket)
        rs = sorted(rs, key=lambda r: (r.seed is None, r.seed or 0, r.dir))
        doms = list(dict.fromkeys(d for r in rs for d in r.accuracy))
        mean, std = {}, {}
        for d in doms:
            mean[d], sd = mean_std([r.accuracy[d] for r in rs if d in r.accuracy])
            if not math.isnan(sd):
                std[d] = sd
        tmeans = [t for t in map(target_mean, rs) if t is not None]
        tmean, tstd = mean_std(tmeans)
        groups.append(RunGroup(label=rs[0].label, runs=rs, mean=mean, std=std,
                               target_mean=tmean if tmeans else None,
                               target_std=None if math.isnan(tstd) else tstd, target_per_seed=tmeans,
                               repeats=sorted(repeats, key=lambda r: (r.seed or 0, r.dir))))
    groups.sort(key=lambda g: (g.adapted, g.target_mean is None, -(g.target_mean or 0.0), g.label))
    return groups


def target_mean(r: Run) -> float | None:
    """A run's mean over its target domains; None when it has none or one was not scored."""
    if not r.target_domains or not all(d in r.accuracy for d in r.target_domains):
        return None
    return mean_std([r.accuracy[d] for d in r.target_domains])[0]


def against_best(groups: list[RunGroup]) -> list[tuple[RunGroup, RunGroup, str]]:
    """The best row of several seeds against each other such row: (best, other, Welch's verdict over the seeds'
    target means, :func:`distill.report.stats.verdict`; "real" only at p < 0.05). ``groups`` arrive best first,
    as :func:`group_runs` sorts them; rows of one seed are left out (no spread to test)."""
    several = [g for g in groups if len(g.target_per_seed) > 1]
    if len(several) < 2:
        return []
    best = several[0]
    return [(best, g, verdict(best.target_per_seed, g.target_per_seed)) for g in several[1:]]


def merge_teachers(runs: list[Run]) -> dict[str, dict[str, float]]:
    """One zero-shot accuracy dict per teacher: the union of the domains its runs report (first value wins)."""
    out: dict[str, dict[str, float]] = {}
    for r in runs:
        if r.teacher_zero_shot:
            t = out.setdefault(r.teacher or "teacher", {})
            for d, v in r.teacher_zero_shot.items():
                t.setdefault(d, v)
    return out
