"""Training runs for the report: summary.json (+ config.yaml) read once, labelled, and grouped over seeds.

Runs that differ only in ``run.seed`` form one row, mean and standard deviation over the seeds;
adapted (source-free) runs are kept apart from source-trained ones; two configurations of one
strategy are labelled by the options in which they differ, so the ranking can be read off the
table. summary.json's accuracies are percentages (``DomainEvaluator`` writes them so); here they
become fractions, by that rule and never by looking at the values.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SUMMARY_ACC_SCALE = 100.0  # summary.json's test_acc / teacher_zero_shot are percentages (DomainEvaluator)


def teacher_label(teacher: Any) -> str | None:
    """A teacher identity as a person names it: ``arch · pretrained file name or tag``."""
    if not teacher:
        return None
    if isinstance(teacher, str):
        return Path(teacher).name or teacher
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
    summary: dict[str, Any]
    student: str
    strategy: str
    options: dict[str, Any]
    seed: int | None
    adapted: bool  # source-free: started from a source checkpoint, trained on unlabeled targets only
    source_domains: list[str]
    target_domains: list[str]
    accuracy: dict[str, float]
    test_count: dict[str, int] | None
    teacher: str | None
    teacher_zero_shot: dict[str, float]
    label: str = ""


@dataclass
class RunGroup:
    """Runs that differ only in their seed: one table row, mean and std over the seeds."""

    label: str
    runs: list[Run]
    mean: dict[str, float]
    std: dict[str, float]  # sample std over seeds (absent with one seed)
    target_mean: float | None
    target_std: float | None

    @property
    def n(self) -> int:
        return len(self.runs)

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


def _scaled(acc: Any, scale: float) -> dict[str, float]:
    """``{domain: value / scale}`` for the numeric, non-NaN values of ``acc``."""
    if not isinstance(acc, dict):
        return {}
    return {str(k): float(v) / scale for k, v in acc.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(float(v))}


def read_run(d: Path, summary: dict[str, Any]) -> Run:
    """A :class:`Run` from ``d/summary.json`` (given) and, for seed and source checkpoint, ``d/config.yaml``."""
    cfg: dict[str, Any] = {}
    if (d / "config.yaml").is_file():
        try:
            loaded = yaml.safe_load((d / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            loaded = None
        cfg = loaded if isinstance(loaded, dict) else {}
    seed = (cfg.get("run") or {}).get("seed") if isinstance(cfg.get("run"), dict) else None
    source = [str(x) for x in summary.get("source_domains") or []]
    target = [str(x) for x in summary.get("target_domains") or []]
    trained_on = summary.get("trained_on")
    if isinstance(trained_on, list) and trained_on:
        adapted = not set(map(str, trained_on)) & set(source)
    else:
        adapted = bool(cfg.get("source_checkpoint"))
    count = summary.get("test_count")
    count = {str(k): int(v) for k, v in count.items()} if isinstance(count, dict) else None
    return Run(dir=str(d), summary=summary, student=str(summary.get("student", "?")),
               strategy=str(summary.get("strategy", "?")),
               options=dict(summary.get("strategy_options") or {}), seed=seed if isinstance(seed, int) else None,
               adapted=adapted, source_domains=source, target_domains=target,
               accuracy=_scaled(summary.get("test_acc"), SUMMARY_ACC_SCALE), test_count=count,
               teacher=teacher_label(summary.get("teacher")),
               teacher_zero_shot=_scaled(summary.get("teacher_zero_shot"), SUMMARY_ACC_SCALE))


def _config_key(r: Run) -> str:
    return json.dumps([r.student, r.strategy, r.options, r.source_domains, r.target_domains, r.adapted, r.teacher],
                      sort_keys=True, default=str)


def label_runs(runs: list[Run]) -> None:
    """Set each run's label: ``arch (strategy)``, plus what tells apart configurations sharing that name.

    Two configurations of one (arch, strategy) are labelled by the options whose values differ
    between them, then by their source domains, then by their teacher; runs differing only in
    seed share a label (they are grouped).
    """
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
            for attr, name in (("source_domains", "src"), ("target_domains", "tgt"), ("teacher", "teacher")):
                if len({json.dumps(getattr(r, attr), default=str) for r in configs.values()}) > 1:
                    for ck, r in configs.items():
                        v = getattr(r, attr)
                        extra[ck].append(f"{name} {'+'.join(v) if isinstance(v, list) else v}")
        for r in rs:
            bits = [base] + extra[_config_key(r)]
            r.label = f"{arch} ({'; '.join(bits)})"


def _short(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else (json.dumps(v) if isinstance(v, (dict, list)) else str(v))


def group_runs(runs: list[Run]) -> list[RunGroup]:
    """Runs of one configuration (all but the seed equal) -> one :class:`RunGroup`; best target mean first."""
    buckets: dict[str, list[Run]] = {}
    for r in runs:
        buckets.setdefault(_config_key(r), []).append(r)
    groups = []
    for rs in buckets.values():
        rs = sorted(rs, key=lambda r: (r.seed is None, r.seed or 0, r.dir))
        doms = list(dict.fromkeys(d for r in rs for d in r.accuracy))
        mean, std = {}, {}
        for d in doms:
            vals = [r.accuracy[d] for r in rs if d in r.accuracy]
            mean[d] = statistics.fmean(vals)
            if len(vals) > 1:
                std[d] = statistics.stdev(vals)
        tmeans = [statistics.fmean(r.accuracy[d] for d in r.target_domains) for r in rs
                  if r.target_domains and all(d in r.accuracy for d in r.target_domains)]
        groups.append(RunGroup(label=rs[0].label, runs=rs, mean=mean, std=std,
                               target_mean=statistics.fmean(tmeans) if tmeans else None,
                               target_std=statistics.stdev(tmeans) if len(tmeans) > 1 else None))
    groups.sort(key=lambda g: (g.adapted, g.target_mean is None, -(g.target_mean or 0.0), g.label))
    return groups


def merge_teachers(runs: list[Run]) -> dict[str, dict[str, float]]:
    """One zero-shot accuracy dict per teacher: the union of the domains its runs report (first value wins)."""
    out: dict[str, dict[str, float]] = {}
    for r in runs:
        if r.teacher_zero_shot:
            t = out.setdefault(r.teacher or "teacher", {})
            for d, v in r.teacher_zero_shot.items():
                t.setdefault(d, v)
    return out
