"""``distill report``: one self-contained HTML file (+ report.md) from runs, exports and benchmarks.

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
latency is the record's p50. The Pareto front (per batch size) keeps the points no other point
beats on both.
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
from distill.utils.io import atomic_write_text


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
    score: float | None = None  # mean accuracy over the common domains
    pareto: bool = False

    @property
    def label(self) -> str:
        return f"{self.student} · {self.precision} · {self.runtime}"


@dataclass
class ReportData:
    runs: list[dict[str, Any]] = field(default_factory=list)     # {"dir", "summary"}
    exports: list[dict[str, Any]] = field(default_factory=list)  # {"dir", "export"}
    records: list[dict[str, Any]] = field(default_factory=list)  # bench records (+ "_source")
    points: list[Point] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)             # every domain seen
    common_domains: list[str] = field(default_factory=list)      # domains in every point's accuracy
    sources: list[str] = field(default_factory=list)
    unmatched: int = 0                                           # records without accuracy


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


def _fractions(acc: dict[str, Any] | None) -> dict[str, float] | None:
    """Accuracy dict as fractions (summary.json may hold percentages)."""
    if not isinstance(acc, dict) or not acc:
        return None
    vals = {k: float(v) for k, v in acc.items() if isinstance(v, (int, float)) and not math.isnan(float(v))}
    if not vals:
        return None
    if max(vals.values()) > 1.0:
        vals = {k: v / 100.0 for k, v in vals.items()}
    return vals


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
            data.runs.append({"dir": str(d), "summary": s})
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
    run_by_dir = {os.path.realpath(r["dir"]): r for r in data.runs}

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
        hit = by_sha.get(r.get("model_sha256") or "") or by_path.get(os.path.realpath(r.get("model", "")))
        if hit:
            e, m = hit
            student = _student_label(e.get("student", student), (e.get("provenance") or {}).get("strategy"))
            accuracy = _fractions(m.get("accuracy"))
            if m.get("flavour"):
                precision = f"int8/{m['flavour']}"
            else:
                precision = m.get("precision", precision)
        elif r.get("runtime") == "torch":
            e = by_ckpt_sha.get(r.get("model_sha256") or "")
            if e is not None:
                accuracy = _fractions((e.get("reference") or {}).get("accuracy"))
                student = _student_label(e.get("student", student), (e.get("provenance") or {}).get("strategy"))
            else:
                for parent in [Path(r.get("model", "")), *Path(r.get("model", "")).parents][:4]:
                    run = run_by_dir.get(os.path.realpath(parent))
                    if run:
                        accuracy = _fractions(run["summary"].get("test_acc"))
                        student = _student_label(run["summary"].get("student", student),
                                                 run["summary"].get("strategy"))
                        break
        if accuracy is None:
            data.unmatched += 1
        p = Point(student=student, precision=precision, runtime=r.get("runtime", "?"), batch=int(r.get("batch", 1)),
                  latency={k: float(v) for k, v in lat.items()}, accuracy=accuracy, model=r.get("model", ""),
                  device=device_label(r), threads=r.get("threads"))
        latest[(r.get("model_sha256") or r.get("model"), p.runtime, p.batch, p.device, p.threads)] = p
    data.points = list(latest.values())

    domains: list[str] = []
    for ex in data.exports:
        for d in (ex["export"].get("data") or {}).get("eval_domains", []) or []:
            domains.append(d)
    for run in data.runs:
        domains.extend((_fractions(run["summary"].get("test_acc")) or {}).keys())
    for p in data.points:
        domains.extend((p.accuracy or {}).keys())
    data.domains = list(dict.fromkeys(domains))
    with_acc = [p for p in data.points if p.accuracy]
    common = [d for d in data.domains if all(d in p.accuracy for p in with_acc)] if with_acc else []
    data.common_domains = common
    for p in with_acc:
        keys = common or list(p.accuracy)
        p.score = sum(p.accuracy[d] for d in keys) / len(keys)
    mark_pareto(data.points)
    return data


def _student_label(arch: str, strategy: str | None) -> str:
    """``arch (strategy)``: two students of one architecture trained differently stay apart in the report."""
    return f"{arch} ({strategy})" if strategy else arch


def export_label(export: dict[str, Any]) -> str:
    """The student label of an export.json: its architecture and, when known, its strategy."""
    return _student_label(export.get("student", "?"), (export.get("provenance") or {}).get("strategy"))


def mark_pareto(points: list[Point]) -> None:
    """Set ``pareto`` on points no other point (same batch) beats: lower p50 and higher accuracy."""
    for batch in {p.batch for p in points}:
        group = sorted((p for p in points if p.batch == batch and p.score is not None),
                       key=lambda p: (p.latency["p50"], -p.score))
        best = -math.inf
        for p in group:
            if p.score > best:
                p.pareto = True
                best = p.score


# --------------------------------------------------------------------------- entry point
def write_report(paths: Iterable[str | Path], out: str | Path, title: str = "distill report") -> dict[str, Any]:
    """Write ``out`` (HTML) and ``report.md`` beside it; returns counts of what went in."""
    from distill.bench.report_html import render_html
    from distill.bench.report_md import render_markdown

    data = collect(paths)
    if not (data.runs or data.exports or data.records):
        raise DistillError("nothing to report: no summary.json, export.json or bench .jsonl found under "
                           + ", ".join(str(p) for p in paths))
    out = Path(out)
    generated = time.strftime("%Y-%m-%d %H:%M:%S")
    atomic_write_text(out, render_html(data, title, generated))
    md = out.with_name("report.md") if out.name != "report.md" else out.with_suffix(".summary.md")
    atomic_write_text(md, render_markdown(data, title, generated))
    return {"html": str(out), "markdown": str(md), "runs": len(data.runs), "exports": len(data.exports),
            "records": len(data.records), "points": len(data.points),
            "pareto": sum(p.pareto for p in data.points)}
