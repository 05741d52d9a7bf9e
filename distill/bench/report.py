"""``distill report``: one self-contained HTML file (+ the same name in .md) from runs, exports and benchmarks.

Discovery rule — each PATH given is:

- a ``*.jsonl`` file: benchmark records (lines whose ``schema`` is ``distill.bench/1``; other
  lines are ignored);
- an ``export.json`` or ``summary.json`` file: its folder, as below;
- a folder: walked recursively (hidden folders skipped). Every folder holding ``summary.json``
  is a training run, every folder holding ``export.json`` an export, every ``*.jsonl`` file a
  benchmark file.

Joining: a benchmark record belongs to the exported model whose sha256 it carries (else whose
path it names); a ``torch`` record of a checkpoint belongs to the export of that checkpoint
(``provenance.checkpoint_sha256``), else to the run whose folder holds the checkpoint. The
accuracy of a point is the mean top-1 over the domains every point was evaluated on; its
latency is the record's p50.

Accuracy units are fixed by the file, never guessed from the values: ``summary.json`` holds
percentages (``DomainEvaluator``), ``export.json`` fractions. Everything here is a fraction.

Accuracy is measured on a finite test set, so it carries a binomial standard error
per domain (Agresti-Coull: about sqrt(p(1-p)/n); n from export.json's ``data.eval_count``, or a
run's ``test_count`` where summary.json has one).
The Pareto front (per batch size) keeps a point unless another point is at least as fast and not
significantly less accurate (95 %, two-sided, the test sets taken as independent, which is
conservative for two models scored on the same images): a slower model that wins by a couple of
images is not "better".

Runs are read and grouped in :mod:`distill.bench.report_runs`.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable


from distill.bench.edge_runner import read_jsonl
from distill.errors import DistillError
from distill.bench.report_runs import (Run, RunGroup, _scaled, group_runs, label_runs, merge_teachers, read_run,
                                       teacher_label)
from distill.utils.io import atomic_write_text

__all__ = ["Point", "ReportData", "Run", "RunGroup", "binomial_se", "collect", "discover", "dominates", "export_label",
           "mark_pareto", "read_run", "teacher_label", "write_report"]

Z95 = 1.959964  # two-sided 95 % normal quantile


def binomial_se(acc: dict[str, float], count: dict[str, int] | None, domains: list[str]) -> float | None:
    """Standard error of the mean over ``domains`` of per-domain accuracies (fractions) on ``count`` images.

    Each domain's accuracy is a binomial proportion. Its variance is taken Agresti-Coull style,
    p~(1-p~)/(n+4) with p~ = (correct+2)/(n+4), which matches p(1-p)/n for large n and, unlike it,
    does not claim zero uncertainty for a domain scored 0 % or 100 %. The domains' test sets are
    disjoint, so the variance of their mean is the sum divided by len(domains)^2.
    None when a domain's test-set size is unknown.
    """
    if not domains or not count or any(not count.get(d) for d in domains):
        return None
    var = 0.0
    for d in domains:
        n = count[d]
        p = (acc[d] * n + 2.0) / (n + 4.0)
        var += p * (1.0 - p) / (n + 4.0)
    return math.sqrt(var) / len(domains)


@dataclass
class Point:
    """One (student, precision, runtime, batch) measurement with its accuracy, if known."""

    student: str
    precision: str  # fp32 | fp16 | int8/ort-cpu | int8/tensorrt
    runtime: str
    batch: int
    latency: dict[str, float]
    accuracy: dict[str, float] | None
    model: str
    device: str
    threads: int | None = None
    count: dict[str, int] | None = None  # test images per domain behind ``accuracy``
    score: float | None = None  # mean accuracy over the common domains
    score_se: float | None = None  # its binomial standard error (None: test-set size unknown)
    pareto: bool = False

    @property
    def label(self) -> str:
        return f"{self.student} · {self.precision} · {self.runtime}"


@dataclass
class ReportData:
    runs: list[Run] = field(default_factory=list)
    groups: list[RunGroup] = field(default_factory=list)       # runs grouped over seeds, best target mean first
    teachers: dict[str, dict[str, float]] = field(default_factory=dict)  # teacher label -> zero-shot accuracy
    exports: list[dict[str, Any]] = field(default_factory=list)  # {"dir", "export"}
    records: list[dict[str, Any]] = field(default_factory=list)  # bench records (+ "_source")
    points: list[Point] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)             # every domain seen
    common_domains: list[str] = field(default_factory=list)      # domains in every point's accuracy
    sources: list[str] = field(default_factory=list)
    unmatched: int = 0                                           # records without accuracy
    run_labels: dict[str, str] = field(default_factory=dict)     # realpath(run dir) -> its label

    def export_label(self, export: dict[str, Any]) -> str:
        return export_label(export, self.run_labels)

    def run_of(self, export: dict[str, Any]) -> Run | None:
        """The run an export was made from, when that run is among the inputs."""
        run = (export.get("provenance") or {}).get("run")
        if not run:
            return None
        return next((r for r in self.runs if os.path.realpath(r.dir) == os.path.realpath(str(run))), None)


# --------------------------------------------------------------------------- discovery
def discover(paths: Iterable[str | Path]) -> tuple[list[Path], list[Path], list[Path]]:
    """(run folders, export folders, bench .jsonl files) under ``paths`` (see module docstring)."""
    runs: dict[str, Path] = {}
    exports: dict[str, Path] = {}
    benches: dict[str, Path] = {}

    def visit_dir(d: Path) -> None:
        for cur, dirs, files in os.walk(d):
            dirs[:] = sorted(x for x in dirs if not x.startswith("."))
            here = Path(cur)
            if "summary.json" in files:
                runs.setdefault(str(here.resolve()), here)
            if "export.json" in files:
                exports.setdefault(str(here.resolve()), here)
            for f in sorted(files):
                if f.endswith(".jsonl"):
                    benches.setdefault(str((here / f).resolve()), here / f)

    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise DistillError(f"{p}: not found (give run folders, export folders or bench .jsonl files)")
        if p.is_dir():
            visit_dir(p)
        elif p.suffix == ".jsonl":
            benches.setdefault(str(p.resolve()), p)
        elif p.name in ("export.json", "summary.json"):
            visit_dir(p.parent)
        else:
            raise DistillError(f"{p}: not a run folder, export folder, export.json, summary.json or .jsonl file")
    return list(runs.values()), list(exports.values()), list(benches.values())


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _fractions(acc: Any) -> dict[str, float] | None:
    """export.json accuracy dicts hold fractions already."""
    return _scaled(acc, 1.0) or None


def device_label(rec: dict[str, Any]) -> str:
    dev = rec.get("device", {}) or {}
    gpus = dev.get("gpus") or []
    if rec.get("runtime") in ("ort-cuda", "ort-trt", "tensorrt") and gpus:
        return gpus[0].get("name", "GPU")
    jet = dev.get("jetson") or {}
    if jet.get("board"):
        return jet["board"]
    cpu = dev.get("cpu", {}) or {}
    return f"{cpu.get('model', '?')} ({cpu.get('usable_cores', '?')} cores)"


# --------------------------------------------------------------------------- joining
def collect(paths: Iterable[str | Path]) -> ReportData:
    """Read everything under ``paths`` and join benchmark records to accuracies."""
    run_dirs, export_dirs, bench_files = discover(paths)
    data = ReportData()
    for d in run_dirs:
        s = _load_json(d / "summary.json")
        if s is not None:
            data.runs.append(read_run(d, s))
    label_runs(data.runs)
    data.groups = group_runs(data.runs)
    data.teachers = merge_teachers(data.runs)
    data.run_labels = {os.path.realpath(r.dir): r.label for r in data.runs}
    for d in export_dirs:
        e = _load_json(d / "export.json")
        if e is not None and str(e.get("format", "")).startswith("distill.export"):
            data.exports.append({"dir": str(d), "export": e})
    for f in bench_files:
        for r in read_jsonl(f):
            r["_source"] = str(f)
            data.records.append(r)
    data.sources = [str(p) for p in [*run_dirs, *export_dirs, *bench_files]]

    by_sha: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    by_path: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    by_ckpt_sha: dict[str, dict[str, Any]] = {}
    for ex in data.exports:
        e = ex["export"]
        for m in e.get("models", []):
            if m.get("sha256"):
                by_sha[m["sha256"]] = (e, m)
            by_path[os.path.realpath(Path(ex["dir"]) / m["file"])] = (e, m)
        ck = (e.get("provenance") or {}).get("checkpoint_sha256")
        if ck:
            by_ckpt_sha[ck] = e
    run_by_dir = {os.path.realpath(r.dir): r for r in data.runs}

    latest: dict[tuple, Point] = {}
    for r in data.records:
        lat = r.get("latency_ms") or {}
        if not {"p50", "p90", "p99"} <= set(lat):
            continue
        meta = r.get("model_meta") or {}
        precision = meta.get("precision", "fp32")
        if meta.get("int8_flavour"):
            precision = f"int8/{meta['int8_flavour']}"
        student = meta.get("arch", "?")
        accuracy = None
        count = None
        hit = by_sha.get(r.get("model_sha256") or "") or by_path.get(os.path.realpath(r.get("model", "")))
        if hit:
            e, m = hit
            student = data.export_label(e)
            accuracy = _fractions(m.get("accuracy"))
            count = _eval_count(e)
            if m.get("flavour"):
                precision = f"int8/{m['flavour']}"
            else:
                precision = m.get("precision", precision)
        elif r.get("runtime") == "torch":
            e = by_ckpt_sha.get(r.get("model_sha256") or "")
            if e is not None:
                accuracy = _fractions((e.get("reference") or {}).get("accuracy"))
                student = data.export_label(e)
                count = _eval_count(e)
            else:
                for parent in [Path(r.get("model", "")), *Path(r.get("model", "")).parents][:4]:
                    run = run_by_dir.get(os.path.realpath(parent))
                    if run:
                        accuracy = run.accuracy or None
                        student = run.label
                        count = run.test_count
                        break
        if accuracy is None:
            data.unmatched += 1
        p = Point(student=student, precision=precision, runtime=r.get("runtime", "?"), batch=int(r.get("batch", 1)),
                  latency={k: float(v) for k, v in lat.items()}, accuracy=accuracy, model=r.get("model", ""),
                  device=device_label(r), threads=r.get("threads"), count=count)
        r["_label"] = f"{student} · {precision}"  # what the latency table and top-ops list call this model
        latest[(r.get("model_sha256") or r.get("model"), p.runtime, p.batch, p.device, p.threads)] = p
    data.points = list(latest.values())

    domains: list[str] = []
    for ex in data.exports:
        for d in (ex["export"].get("data") or {}).get("eval_domains", []) or []:
            domains.append(d)
    for run in data.runs:
        domains.extend(run.accuracy)
    for p in data.points:
        domains.extend((p.accuracy or {}).keys())
    data.domains = list(dict.fromkeys(domains))
    with_acc = [p for p in data.points if p.accuracy]
    common = [d for d in data.domains if all(d in p.accuracy for p in with_acc)] if with_acc else []
    data.common_domains = common
    for p in with_acc:
        keys = common or list(p.accuracy)
        p.score = sum(p.accuracy[d] for d in keys) / len(keys)
        p.score_se = binomial_se(p.accuracy, p.count, keys)
    mark_pareto(data.points)
    return data


def _eval_count(export: dict[str, Any]) -> dict[str, int] | None:
    """Test images per domain behind an export's accuracies (export.json ``data.eval_count``)."""
    c = (export.get("data") or {}).get("eval_count")
    return {str(k): int(v) for k, v in c.items()} if isinstance(c, dict) and c else None


def _student_label(arch: str, strategy: str | None) -> str:
    """``arch (strategy)``: two students of one architecture trained differently stay apart in the report."""
    return f"{arch} ({strategy})" if strategy else arch


def export_label(export: dict[str, Any], run_labels: dict[str, str] | None = None) -> str:
    """The student label of an export.json: its run's label when that run is in the report, else arch (strategy)."""
    run = (export.get("provenance") or {}).get("run")
    if run_labels and run and os.path.realpath(str(run)) in run_labels:
        return run_labels[os.path.realpath(str(run))]
    return _student_label(export.get("student", "?"), (export.get("provenance") or {}).get("strategy"))


def significantly_better(a: Point, b: Point) -> bool:
    """Is ``a`` more accurate than ``b`` beyond the test sets' noise (95 %)? Plain ``>`` when a size is unknown."""
    if a.score_se is None or b.score_se is None:
        return a.score > b.score
    return a.score - b.score > Z95 * math.hypot(a.score_se, b.score_se)


def dominates(q: Point, p: Point) -> bool:
    """``q`` is faster and not significantly less accurate, or as fast and significantly more accurate."""
    lq, lp = q.latency["p50"], p.latency["p50"]
    return (lq < lp and not significantly_better(p, q)) or (lq <= lp and significantly_better(q, p))


def mark_pareto(points: list[Point]) -> None:
    """Set ``pareto`` on the points (per batch) that no other point :func:`dominates`."""
    for batch in {p.batch for p in points}:
        group = [p for p in points if p.batch == batch and p.score is not None]
        for p in group:
            p.pareto = not any(dominates(q, p) for q in group if q is not p)


# --------------------------------------------------------------------------- entry point
def write_report(paths: Iterable[str | Path], out: str | Path, title: str = "distill report") -> dict[str, Any]:
    """Write ``out`` (HTML) and the same name with ``.md`` beside it; returns counts of what went in."""
    from distill.bench.report_html import render_html
    from distill.bench.report_md import render_markdown

    data = collect(paths)
    if not (data.runs or data.exports or data.records):
        raise DistillError("nothing to report: no summary.json, export.json or bench .jsonl found under "
                           + ", ".join(str(p) for p in paths))
    out = Path(out)
    md = out.with_suffix(".md")
    if md == out:
        raise DistillError(f"--out {out}: the HTML file must not end in .md (the Markdown summary goes to {md})")
    generated = time.strftime("%Y-%m-%d %H:%M:%S")
    atomic_write_text(out, render_html(data, title, generated))
    atomic_write_text(md, render_markdown(data, title, generated))
    return {"html": str(out), "markdown": str(md), "runs": len(data.runs), "exports": len(data.exports),
            "records": len(data.records), "points": len(data.points),
            "pareto": sum(p.pareto for p in data.points)}
