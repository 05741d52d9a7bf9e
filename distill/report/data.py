"""What the report shows, joined: points (accuracy x latency), runs, exports, bench records; the Pareto rule.

:mod:`distill.report.write` fills a :class:`ReportData`; :mod:`~distill.report.render_html` and
:mod:`~distill.report.render_md` render it. Both renderers import this module and nothing imports
them back, so the report has no import cycle.

Accuracy is a fraction everywhere here (the records' unit); renderers print percents.

Accuracy is measured on a finite test set, so it carries a binomial standard error per domain
(Agresti-Coull: about sqrt(p(1-p)/n); n from export.json's ``data.eval_count``). The Pareto front
(per batch size and device) keeps a point unless another point is at least as fast and not significantly
less accurate (95 %, two-sided, the test sets taken as independent, which is conservative for two
models scored on the same images): a slower model that wins by a couple of images is not "better".
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from distill.records import BenchRecord, ExportedModel, ExportReport, QADRecord
from distill.records.names import BEST_CHECKPOINT, CHECKPOINTS_DIR, EXPORT_REPORT, STUDENT_WEIGHTS
from distill.report.identity import recorded_identity
from distill.report.locate import Tiers, hits, narrow, places
from distill.report.runs import Run, RunGroup
from distill.utils.io import sha256_file

T = TypeVar("T")
Z95 = 1.959964  # two-sided 95 % normal quantile


def extra(block: ExportedModel | BenchRecord, key: str) -> Any:
    """A key a record keeps beyond its named fields (an export's int8 ``fallback``, a record's ``top_ops``)."""
    return (block.model_extra or {}).get(key)


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
    file: str = ""  # the timed file, short: its (export) folder's name and its name
    note: str = ""  # how it was joined, when not plainly (a TensorRT engine: the ONNX file it was built from)
    # the record it is (newest of the file's records at these settings) and the repeats left out of it
    # (:func:`distill.report.repeats.counted`)
    measured: Measurement | None = None
    repeats: list[Measurement] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.student} · {self.precision} · {self.runtime}"

    @property
    def scored(self) -> float:
        """:attr:`score`, of a point known to have one (the chart and the front hold only those)."""
        if self.score is None:
            raise ValueError(f"{self.label}: no accuracy to compare")
        return self.score

    @property
    def named(self) -> str:
        """:attr:`label` and the timed file as the tables name it (:func:`file_cell`): two points of one student and
        precision (two exports of one run) differ by it. What the Pareto chart and its key call a point."""
        return f"{self.label} · {file_cell(self.file, self.note)}" if self.file else self.label


def file_cell(file: str, note: str) -> str:
    """A timed file as both reports' latency tables name it: short, then the note (``exp/model.engine (TensorRT
    engine of model.onnx)``, ``loose/model.onnx (not joined to an export or run)``)."""
    return f"{file} ({note})" if note else file


@dataclass
class ExportEntry:
    """An export folder and its export.json."""

    dir: str
    report: ExportReport

    def places(self, key: str) -> Tiers:
        """Where the ``checkpoint`` or the ``run`` export.json names may be (:func:`distill.report.locate.places`)."""
        stored = self.report.checkpoint if key == "checkpoint" else self.report.provenance.get(key)
        return places(str(stored) if stored else None, self.dir, self.report.relative_paths.get(key))


@dataclass
class QADEntry:
    """A ``distill qad`` output folder and its qad.json."""

    dir: str
    record: QADRecord

    def places(self, key: str) -> Tiers:
        """Where the ``checkpoint`` or the ``export_dir`` (``--export``) qad.json names may be."""
        stored = self.record.checkpoint if key == "checkpoint" else (self.record.config or {}).get(key)
        return places(str(stored) if stored else None, self.dir, self.record.relative_paths.get(key))


@dataclass
class Measurement:
    """One bench record, the file it came from, and what the report calls its model."""

    record: BenchRecord
    source: str
    name: str = ""  # the model it timed: "student · precision"
    file: str = ""  # the timed file, short (as :attr:`Point.file`)
    note: str = ""  # how it was joined, when not plainly (as :attr:`Point.note`)
    repeat: bool = False  # a repeat of another record of its file and settings: left out of the points

    @property
    def label(self) -> str:
        """What the top-ops lists call this model: its name and, if any, the note."""
        return self.name + (f" · {self.note}" if self.note else "")

    @property
    def top_ops(self) -> list[dict[str, Any]] | None:
        return extra(self.record, "top_ops")


@dataclass
class ReportData:
    runs: list[Run] = field(default_factory=list)
    groups: list[RunGroup] = field(default_factory=list)       # runs grouped over seeds, best target mean first
    teachers: dict[str, dict[str, float]] = field(default_factory=dict)  # teacher label -> zero-shot accuracy
    exports: list[ExportEntry] = field(default_factory=list)
    qad: list[QADEntry] = field(default_factory=list)            # distill qad results: PTQ vs QAD per domain
    records: list[Measurement] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)             # every domain seen
    common_domains: list[str] = field(default_factory=list)      # domains in every point's accuracy
    sources: list[str] = field(default_factory=list)
    unmatched: int = 0                                           # records without accuracy
    warnings: list[str] = field(default_factory=list)            # problems with the inputs, said once each
    unfinished: list[Path] = field(default_factory=list)         # folders with a config.yaml, no summary.json
    _idx: _Index | None = field(default=None, repr=False, compare=False)

    def export_label(self, export: ExportReport | ExportEntry) -> str:
        """The student label of an export: its run's label when that run is in the report, else arch (strategy)."""
        run = self.run_of(export)
        report = export.report if isinstance(export, ExportEntry) else export
        return run.label if run else _student_label(report.student, report.provenance.get("strategy"))

    def qad_label(self, record: QADRecord | QADEntry) -> str:
        """The student label of a QAD result: its run's label when that run is in the report, else its arch."""
        entry = record if isinstance(record, QADEntry) else self._index().qad_of.get(id(record))
        run = self.run_of_qad(entry) if entry else None
        return run.label if run else (record.record if isinstance(record, QADEntry) else record).student

    def run_of_qad(self, entry: QADEntry) -> Run | None:
        """The run holding a QAD result's checkpoint (``RUN/checkpoints/best``), when among the inputs."""
        cache = self._index().run_of
        key = id(entry.record)
        if key not in cache:
            cache[key] = self._one_run(f"QAD result {entry.dir}", entry.record.checkpoint_sha256,
                                       entry.places("checkpoint"))
        return cache[key]

    def run_of(self, export: ExportReport | ExportEntry) -> Run | None:
        """The run an export was made from, when that run is among the inputs: the one its ``provenance.run`` names,
        else the one holding its checkpoint (``RUN/checkpoints/best``), each found as :mod:`~distill.report.locate`
        says, wherever the report runs; two runs that fit (a folder copied into another tree) are told apart by the
        checkpoint's sha256, or neither is joined (a warning says so); of copies of one run (:meth:`run_identity`: a
        run copied without its weights by what it recorded), its own tree's. Looked up once per export."""
        entry = export if isinstance(export, ExportEntry) else self._index().export_of.get(id(export))
        if entry is None:
            return None
        cache = self._index().run_of
        key = id(entry.report)
        if key not in cache:
            cache[key] = self._one_run(f"export {entry.dir}", entry.report.provenance.get("checkpoint_sha256"),
                                       entry.places("checkpoint"), entry.places("run"))
        return cache[key]

    def export_of_qad(self, entry: QADEntry) -> ExportEntry | None:
        """The export among the inputs a ``distill qad --export`` result ran against (``config.export_dir``); None
        for a plain-PTQ result, or one whose export is not among them, or is one of two that fit."""
        cache = self._index().export_of_qad
        key = id(entry.record)
        if key not in cache:
            cache[key] = self.one(f"QAD result {entry.dir}", "export folders", entry.places("export_dir"),
                                  {os.path.realpath(ex.dir): ex for ex in self.exports},
                                  identity=lambda d: self.file_sha(os.path.join(d, EXPORT_REPORT)))  # cp -r: a copy
        return cache[key]

    def one(self, what: str, kind: str, tiers: Tiers, index: dict[str, T], above: int = 0,
            fits: Callable[[str], bool] | None = None,
            identity: Callable[[str], str | None] | None = None) -> T | None:
        """The one thing of ``index`` at ``tiers`` (:func:`distill.report.locate.hits`). Two that fit: ``fits`` (the
        record's identity, a sha256) keeps the right one where it can tell, and of copies of one another (the same
        ``identity``) the one in the artifact's own tree is taken (:func:`~distill.report.locate.narrow`); else
        neither, and a warning says which two."""
        found = narrow(hits(tiers, index, above), fits, identity)
        if len(found) > 1:
            self.ambiguous(what, kind, found)
        return index[found[0]] if len(found) == 1 else None

    def ambiguous(self, what: str, kind: str, found: list[str]) -> None:
        """Warn (once) that two places fit a join, so it is left out."""
        line = (f"ambiguous: two {kind} fit {what} ({', '.join(found)}): joined to neither (a folder copied into "
                "another tree of results? pass only one of them)")
        if line not in self.warnings:
            self.warnings.append(line)

    def file_sha(self, path: str) -> str | None:
        """The sha256 of the file at ``path`` (None: no file there), hashed once per report."""
        hashes = self._index().hashes
        if path not in hashes:
            hashes[path] = sha256_file(path) if os.path.isfile(path) else None
        return hashes[path]

    def run_weights(self, folder: str) -> str | None:
        """The sha256 of a run folder's best weights (what an export's ``checkpoint_sha256`` is of); None: none."""
        return self.file_sha(os.path.join(folder, CHECKPOINTS_DIR, BEST_CHECKPOINT, STUDENT_WEIGHTS))

    def run_identity(self, folder: str) -> str | None:
        """What a run folder among the inputs is, for telling copies of a run from different runs: its best weights'
        sha256, else (a run copied without its weights) what it recorded (:func:`~distill.report.identity.
        recorded_identity`: config.yaml, data.json, summary.json's values); None: not a run of the inputs."""
        sha = self.run_weights(folder)
        if sha is not None:
            return sha
        run = self._index().runs.get(os.path.realpath(folder))
        return recorded_identity(run.seed, run.config, run.data, run.summary) if run is not None else None

    def checkpoint_sha(self, path: str) -> str | None:
        """The sha256 of a checkpoint's weights, ``path`` its folder or its weights file; None: no weights there."""
        return self.file_sha(os.path.join(path, STUDENT_WEIGHTS) if os.path.isdir(path) else path)

    def _one_run(self, what: str, sha: str | None, checkpoint: Tiers, run: Tiers | None = None) -> Run | None:
        idx = self._index()
        check = (lambda folder: self.run_weights(folder) == sha) if sha else None  # the run's weights are its own
        if run is not None and len(found := narrow(hits(run, idx.runs), check, self.run_identity)) == 1:
            return idx.runs[found[0]]
        return self.one(what, "runs", checkpoint, idx.runs, above=2, fits=check, identity=self.run_identity)

    def _index(self) -> _Index:
        """The lookups built once per input set (not per record: M1 of review 2), rebuilt when one is added."""
        key = (len(self.runs), len(self.exports), len(self.qad))
        if self._idx is None or self._idx.key != key:
            self._idx = _Index(key, {os.path.realpath(r.dir): r for r in self.runs},
                               {id(ex.report): ex for ex in self.exports}, {id(q.record): q for q in self.qad})
        return self._idx


@dataclass
class _Index:
    key: tuple[int, int, int]
    runs: dict[str, Run]                  # real path of a run folder -> run
    export_of: dict[int, ExportEntry]     # id(export.json) -> its entry
    qad_of: dict[int, QADEntry]           # id(qad.json) -> its entry
    run_of: dict[int, Run | None] = field(default_factory=dict)  # id(export.json or qad.json) -> its run
    hashes: dict[str, str | None] = field(default_factory=dict)  # a file's real path -> its sha256
    export_of_qad: dict[int, ExportEntry | None] = field(default_factory=dict)  # id(qad.json) -> its --export


def device_label(record: BenchRecord) -> str:
    """The machine a record was measured on, as a person names it, whatever the runtime: its runtimes are choices on one
    box, compared on one front (:func:`mark_pareto`; review 3 finding 4). A Jetson is named by its board with its power
    mode and L4T release (:func:`jetson_text`): one engine timed at MAXN and at 15 W is two devices (two points), not
    one file timed twice. Another machine by its CPU model and usable cores, and its GPUs where it has any
    (``AMD EPYC 9654 (16 cores) · NVIDIA H100 80GB HBM3`` for its ort-cpu and its ort-cuda records alike)."""
    dev = record.device
    jet = dev.get("jetson") or {}
    if isinstance(jet, dict) and jet.get("board"):
        details = jetson_text({k: v for k, v in jet.items() if k != "board"})
        return f"{jet['board']} ({details})" if details else str(jet["board"])
    cpu = dev.get("cpu", {}) or {}
    names = [str(g.get("name", "GPU")) for g in dev.get("gpus") or [] if isinstance(g, dict)]
    gpus = [f"{names.count(n)}× {n}" if names.count(n) > 1 else n for n in dict.fromkeys(names)]
    return " · ".join([f"{cpu.get('model', '?')} ({cpu.get('usable_cores', '?')} cores)", *gpus])


def jetson_text(jet: dict[str, Any]) -> str:
    """A record's ``device.jetson`` (the edge runner's ``jetson_info()``) as a person reads it: ``board · MAXN_SUPER ·
    L4T 36.4.3`` (``nvpmodel -q``'s mode name only: an older runner stored its whole answer on one line, "NV Fan
    Mode:quiet NV Power Mode: MAXN 0" on many boards, whose fan mode is no part of the device); "" when it holds
    none."""
    parts = [str(jet["board"])] if jet.get("board") else []
    mode = str(jet.get("power_mode") or "").strip()
    if mode:
        named = re.search(r"NV Power Mode:\s*(\S+)", mode)
        parts.append(named.group(1) if named else re.sub(r"\s+\d+$", "", mode) or mode)
    if jet.get("l4t"):
        parts.append(f"L4T {jet['l4t']}")
    elif jet.get("nv_tegra_release"):
        parts.append(str(jet["nv_tegra_release"]))
    return " · ".join(parts)


def fan_label(record: BenchRecord) -> str:
    """``fan quiet``: the Jetson fan mode a record was timed with (``nvpmodel -q``'s fan line: the runner's
    ``fan_mode``, or within an older runner's one-line ``power_mode``); "" where none is recorded. Shown beside the
    device, not part of it (:func:`device_label`): the same board and power mode with another fan is one device."""
    jet = record.device.get("jetson")
    if not isinstance(jet, dict):
        return ""
    old = re.search(r"NV Fan Mode:\s*(\S+)", str(jet.get("power_mode") or ""))
    fan = str(jet.get("fan_mode") or "").strip() or (old.group(1) if old else "")
    return f"fan {fan}" if fan else ""


def _student_label(arch: str, strategy: str | None) -> str:
    """``arch (strategy)``: two students of one architecture trained differently stay apart in the report."""
    return f"{arch} ({strategy})" if strategy else arch


def significantly_better(a: Point, b: Point) -> bool:
    """Is ``a`` more accurate than ``b`` beyond the test sets' noise (95 %)? Plain ``>`` when a size is unknown."""
    if a.score_se is None or b.score_se is None:
        return a.scored > b.scored
    return a.scored - b.scored > Z95 * math.hypot(a.score_se, b.score_se)


def dominates(q: Point, p: Point) -> bool:
    """``q`` is faster and not significantly less accurate, or as fast and significantly more accurate."""
    lq, lp = q.latency["p50"], p.latency["p50"]
    return (lq < lp and not significantly_better(p, q)) or (lq <= lp and significantly_better(q, p))


def mark_pareto(points: list[Point]) -> None:
    """Set ``pareto`` on the points that no other point of their batch and device :func:`dominates`: one front per
    batch size and device (a Jetson's engine does not "dominate" an x86 CPU's files: they answer different questions;
    one machine's runtimes, its CPU's and its GPU's, share its front: :func:`device_label`)."""
    for batch, device in {(p.batch, p.device) for p in points}:
        group = [p for p in points if p.batch == batch and p.device == device and p.score is not None]
        for p in group:
            p.pareto = not any(dominates(q, p) for q in group if q is not p)


def unclash(named: list[tuple[Measurement, Point, str]]) -> None:
    """Name every timed file by its folder and itself, the folder by the fewest trailing names of its path that no
    other shown file's folder ends with, and the same for every file of one folder: ``exp/kd/model.fp32.onnx`` beside
    ``exp/kd/model.int8-ort-cpu.onnx`` and ``qad/kd/model.int8-ort-cpu.ptq.onnx`` (folders ``exp/kd`` and ``qad/kd``;
    one ``kd`` alone stays ``kd``), in the point and its measurement. A folder whose whole path ends another's is named
    in full. ``named``: (measurement, point, the file's path, absolute or relative to the measurement's .jsonl)."""
    def where(m: Measurement, full: str) -> str:
        return os.path.normpath(full if os.path.isabs(full) else os.path.join(os.path.dirname(m.source), full))

    folders: dict[str, str] = {}  # a folder (realpath) -> its path as shown (the first spelling met)
    for m, _, full in named:
        shown = os.path.dirname(os.path.abspath(where(m, full)))
        folders.setdefault(os.path.realpath(shown), shown)
    parts = {key: [part for part in shown.split(os.sep) if part] for key, shown in folders.items()}
    label: dict[str, str] = {}
    for key, mine in parts.items():
        others = [v for k, v in parts.items() if k != key]
        depth = next((n for n in range(1, len(mine) + 1) if not any(v[-n:] == mine[-n:] for v in others)), None)
        label[key] = "/".join(mine[-depth:]) + "/" if depth else folders[key].rstrip(os.sep) + os.sep
    for m, p, full in named:
        path = os.path.abspath(where(m, full))
        p.file = m.file = label[os.path.realpath(os.path.dirname(path))] + os.path.basename(path)
