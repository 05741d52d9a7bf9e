"""``distill report``: one self-contained HTML file (+ the same name in .md) from runs, exports and benchmarks.

Discovery rule — each PATH given is:

- a ``*.jsonl`` file: benchmark records (:class:`~distill.records.BenchRecord`, one per line);
- an ``export.json``, ``summary.json`` or ``qad.json`` file: its folder, as below;
- a folder: walked recursively (hidden folders skipped). Every folder holding ``summary.json``
  is a training run, every folder holding ``export.json`` an export, every folder holding
  ``qad.json`` a ``distill qad`` result (PTQ vs QAD per domain), every ``*.jsonl`` file a
  benchmark file.

Every artifact is read through its record (:mod:`distill.records`), so accuracy is a fraction
by the records' contract, never guessed from the values; renderers print percents. An export.json,
qad.json or bench line that is not its record (half-written by an interrupted command, corrupt) is
left out with one warning naming the file (and line); only when nothing at all can be read is the
report refused.

Joining: a benchmark record belongs to the exported model whose sha256 it carries (of copies, the nearest) (else whose
path it names: every path an artifact stores is found as :mod:`distill.report.locate` says, wherever the report
runs); a record whose sha256 is not the one export.json lists for the file at its path
timed a file since replaced: it stays unmatched, and the report warns once
(``ReportData.warnings``). A ``torch`` record of a checkpoint belongs to the export of that
checkpoint (``provenance.checkpoint_sha256``), else to the run whose folder holds the checkpoint.
The accuracy of a point is the mean top-1 over the domains every point was evaluated on; its
latency is the record's p50 (of a file benched twice at one setting, the newest: :mod:`distill.report.repeats`).
The Pareto rule and the standard errors are in :mod:`distill.report.data`; runs are read and grouped in
:mod:`distill.report.runs`.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, TypeVar

from distill.errors import DistillError
from distill.outputs import REPORT_MARK, check_report_out, report_files
from distill.records import (
    EXPORT_REPORT,
    QAD_REPORT,
    RUN_CONFIG,
    RUN_SUMMARY,
    BenchRecord,
    ExportedModel,
    ExportReport,
    QADRecord,
)
from distill.report.charts import latency_order_warnings
from distill.report.data import (
    ExportEntry,
    Measurement,
    Point,
    QADEntry,
    ReportData,
    binomial_se,
    device_label,
    mark_pareto,
    unclash,
)
from distill.report.engines import engine_index, engine_of, recorded_precision, unjoined_note
from distill.report.locate import hits, narrow, nearest_held, places
from distill.report.qad_files import join_candidates, qad_files
from distill.report.render_html import render_html
from distill.report.render_md import render_markdown
from distill.report.repeats import bench_repeats_warning, counted, repeats_warning
from distill.report.runs import finite, group_runs, label_runs, merge_teachers, read_run
from distill.report.unmatched import unmatched_warnings
from distill.run_progress import unfinished_run_warnings, unfinished_runs_note
from distill.utils.io import atomic_write_text

__all__ = ["Inputs", "collect", "discover", "write_report"]

EXPORT_FORMAT = "distill.export"  # export.json files of another format are not exports of this tool
R = TypeVar("R")


# --------------------------------------------------------------------------- discovery
class Inputs(NamedTuple):
    """What :func:`discover` found under the paths given."""

    runs: list[Path]     # folders holding summary.json
    exports: list[Path]  # folders holding export.json
    benches: list[Path]  # bench .jsonl files
    qad: list[Path]      # folders holding qad.json


def discover(paths: Iterable[str | Path], unfinished: list[Path] | None = None) -> Inputs:
    """Run folders, export folders, bench .jsonl files and QAD folders under ``paths`` (see module docstring). In the
    same walk, ``unfinished`` (given) gets the folders under a folder of ``paths`` that hold a config.yaml and no
    summary.json: runs that may be unfinished (:mod:`distill.run_progress`)."""
    runs: dict[str, Path] = {}
    exports: dict[str, Path] = {}
    benches: dict[str, Path] = {}
    qad: dict[str, Path] = {}

    def visit_dir(d: Path, given: bool = False) -> None:
        for cur, dirs, files in os.walk(d):
            dirs[:] = sorted(x for x in dirs if not x.startswith("."))
            here = Path(cur)
            if RUN_SUMMARY in files:
                runs.setdefault(str(here.resolve()), here)
            elif given and unfinished is not None and RUN_CONFIG in files:
                unfinished.append(here)
            if EXPORT_REPORT in files:
                exports.setdefault(str(here.resolve()), here)
            if QAD_REPORT in files:
                qad.setdefault(str(here.resolve()), here)
            for f in sorted(files):
                if f.endswith(".jsonl"):
                    benches.setdefault(str((here / f).resolve()), here / f)

    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise DistillError(f"{p}: not found (give run folders, export folders, qad folders or bench .jsonl files)")
        if p.is_dir():
            visit_dir(p, given=True)
        elif p.suffix == ".jsonl":
            benches.setdefault(str(p.resolve()), p)
        elif p.name in (EXPORT_REPORT, RUN_SUMMARY, QAD_REPORT):
            visit_dir(p.parent)
        else:
            raise DistillError(f"{p}: not a run folder, export folder, {EXPORT_REPORT}, {RUN_SUMMARY}, {QAD_REPORT} "
                               "or .jsonl file")
    return Inputs(list(runs.values()), list(exports.values()), list(benches.values()), list(qad.values()))


# --------------------------------------------------------------------------- joining
def collect(paths: Iterable[str | Path]) -> ReportData:
    """Read everything under ``paths`` and join benchmark records to accuracies."""
    data = ReportData()
    run_dirs, export_dirs, bench_files, qad_dirs = discover(paths := list(paths), data.unfinished)
    # a half-written or corrupt summary.json, config.yaml, export.json, qad.json or bench line (an interrupted run, an
    # older version's file) is left out, said once each
    unread: list[Path] = []
    data.runs = [r for r in (_read_or_skip(read_run, d, "that run", data.warnings, unread) for d in run_dirs) if r]
    label_runs(data.runs)
    data.groups = group_runs(data.runs)
    if (repeated := repeats_warning(data.groups)) is not None:  # a rerun or a copied run folder: one seed, not two
        data.warnings.append(repeated)
    data.teachers = merge_teachers(data.runs)
    for d in export_dirs:
        report = _read_or_skip(ExportReport.read, d, "that export", data.warnings, unread)
        if report is not None and report.format.startswith(EXPORT_FORMAT):
            data.exports.append(ExportEntry(str(d), report))
    for d in qad_dirs:
        record = _read_or_skip(QADRecord.read, d, "that QAD result", data.warnings, unread)
        if record is not None:
            data.qad.append(QADEntry(str(d), record))
    for f in bench_files:
        skipped: list[tuple[int, str]] = []
        records = [Measurement(record, str(f)) for record in BenchRecord.read_lines(f, skipped)]
        data.records += records
        if skipped:
            data.warnings.append(_bench_lines_skipped(f, skipped))
            if not records:  # not one line of it is a record (an empty file is read, and holds none)
                unread.append(f)
    if unread and not (data.runs or data.exports or data.qad or data.records):
        more = f" (and {len(data.warnings) - 1} more)" if len(data.warnings) > 1 else ""
        inputs = len(run_dirs) + len(export_dirs) + len(bench_files) + len(qad_dirs)
        why = "every input is unreadable" if len(unread) == inputs else \
            f"{len(unread)} of {inputs} inputs are unreadable, and the others hold no record"
        raise DistillError(f"nothing to report: {why}: {data.warnings[0]}{more}")
    data.warnings += unfinished_run_warnings(data.unfinished)  # a run without summary.json yet (interrupted): how to finish it
    data.sources = [str(p) for p in [*run_dirs, *export_dirs, *bench_files, *qad_dirs] if p not in unread]
    for ex in data.exports:  # each join looked up once, here: a warning of one that is ambiguous is said now
        data.run_of(ex)
    for q in data.qad:
        data.run_of_qad(q)
        data.export_of_qad(q)
    data.points = _join(data)
    data.warnings += latency_order_warnings(data.points)  # a hand-made record's p50 > p99: off the latency chart
    if (timed_again := bench_repeats_warning(data.points)) is not None:  # benched twice: one point, said so
        data.warnings.append(timed_again)

    domains: list[str] = []
    for ex in data.exports:
        domains.extend((ex.report.data or {}).get("eval_domains", []) or [])
    for run in data.runs:
        domains.extend(run.accuracy)
    for p in data.points:
        domains.extend((p.accuracy or {}).keys())
    data.domains = list(dict.fromkeys(domains))
    with_acc = [(p, p.accuracy) for p in data.points if p.accuracy]
    common = [d for d in data.domains if all(d in acc for _, acc in with_acc)] if with_acc else []
    data.common_domains = common
    for p, acc in with_acc:
        keys = common or list(acc)
        p.score = sum(acc[d] for d in keys) / len(keys)
        p.score_se = binomial_se(acc, p.count, keys)
    mark_pareto(data.points)
    return data


def _read_or_skip(read: Callable[[Path], R], folder: Path, what: str, warnings: list[str], unread: list[Path]) -> R | None:
    """``read(folder)``, or None with a warning naming the file (the record's own one-line error) when it cannot be
    read: one bad record does not cost the report."""
    try:
        return read(folder)
    except DistillError as e:
        warnings.append(f"{e}; skipped {what}")
        unread.append(folder)
        return None


def _bench_lines_skipped(path: Path, skipped: list[tuple[int, str]]) -> str:
    """One warning for the lines of a bench file that are not records (each is its own error, naming the line)."""
    if len(skipped) == 1:
        return f"{skipped[0][1]}; skipped that line"
    lines = ", ".join(str(n) for n, _ in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
    return f"{path}: {len(skipped)} lines are not bench records (lines {lines}); skipped them (the first: {skipped[0][1]})"


def _join(data: ReportData) -> list[Point]:
    """One :class:`Point` per (model, runtime, batch, device, threads): a file benched again at the same settings is
    one point, the newest record counting, its repeats kept on it (:func:`distill.report.repeats.counted`); labels
    each record."""
    # several exports may hold one file (a copied export): each lookup by sha256 takes the one nearest the record
    by_sha: dict[str, dict[str, tuple[ExportReport, ExportedModel]]] = {}  # sha256 -> {export folder: (report, model)}
    by_ckpt_sha: dict[str, dict[str, ExportReport]] = {}
    files: dict[str, _File] = {}  # real path -> what is there: an exported model, a distill qad file, an engine
    for ex in data.exports:
        for m in ex.report.models:
            if m.sha256:
                by_sha.setdefault(m.sha256, {})[ex.dir] = (ex.report, m)
            files[os.path.realpath(Path(ex.dir) / m.file)] = _File("model", (ex.report, m))
        ck = ex.report.provenance.get("checkpoint_sha256")
        if ck:
            by_ckpt_sha.setdefault(ck, {})[ex.dir] = ex.report
    engines = engine_index([(ex.dir, ex.report) for ex in data.exports])
    for path, listed in engines.by_path.items():
        files.setdefault(path, _File("engine", listed))
    for path, qad in qad_files(data).items():
        files[path] = _File("qad", qad)  # a file of a qad folder is that folder's (its PTQ file: a copy of an export's)
    runs = {os.path.realpath(r.dir): r for r in data.runs}
    engine_names = {Path(f).name for f, at in files.items() if at.kind == "engine" or (at.kind == "qad" and at.what.engine)}
    dir_of = {id(ex.report): ex.dir for ex in data.exports}

    timed: dict[tuple, list[tuple[Measurement, Point]]] = {}  # one file at one setting -> its records (repeats)
    named: list[tuple[Measurement, Point, str]] = []  # each record's entry, point and the full path its file names
    replaced: list[tuple[str, str]] = []  # records of a file export.json no longer lists (another sha256 at its path)
    elsewhere: list[tuple[str, str]] = []  # records found by their relative path at another export's file (other bytes)
    for entry in data.records:
        r = entry.record
        precision, student = recorded_precision(r), r.model_meta.get("arch", "?")
        accuracy, count, note, differ = None, None, "", list[str]()
        where = places(r.model, Path(entry.source).parent, r.model_relative)  # the timed file, wherever the report runs
        # two: its own absolute place and, by the relative path, another tree's file; of copies (the same bytes: a
        # tree copied whole), its own tree's (distill/report/locate.py narrow)
        found = join_candidates(r, entry.source, narrow(hits(where, files), identity=data.file_sha), data,
                                files)  # else qad engines beside the .jsonl or by source
        at = files[found[0]] if len(found) == 1 else _File("", None)
        near = Path(entry.source).parent
        what = f"the benchmark record of {r.model} in {entry.source}"  # the lambda is called at once, in _model_of:
        hit = _model_of(r, at.what if at.kind == "model" else None, lambda: _nearest(  # noqa: B023
            data, by_sha, r.model_sha256, near, what, lambda h: (h[1].accuracy, h[0].data)), at.kind == "qad")
        if len(found) > 1 and hit is None:
            data.ambiguous(what, "timed files", found)
        elif hit is None and at.kind == "model":  # another sha256 at its path: replaced, unless its own path is here
            own = os.path.realpath(r.model) if os.path.isabs(r.model) else found[0]  # and is another file (a copy)
            (replaced if own == found[0] else elsewhere).append((r.model, found[0]))
        full = r.model  # where the timed file was; the export's folder + file when joined to one
        if hit:
            e, m = hit
            full = os.path.abspath(os.path.join(dir_of[id(e)], m.file))  # discover()'s dir: relative to the cwd
            student = data.export_label(e)
            accuracy = finite(m.accuracy) or None
            count = _eval_count(e)
            flavour = m.int8_flavour
            precision = f"int8/{flavour}" if flavour else m.precision
        elif at.kind == "qad":
            student, precision, accuracy, count, note, *_ = at.what
        elif (engine := engine_of(r, entry.source, engines, at.what if at.kind == "engine" else None,
                                  by_path=len(found) < 2, differ=differ)) is not None:
            # export.json lists it: its ONNX's accuracy
            student, precision, note = data.export_label(engine.export), engine.precision, engine.note(r)
            full = os.path.abspath(os.path.join(engine.dir, engine.engine["engine"]))
            accuracy = finite(engine.source.accuracy) or None
            count = _eval_count(engine.export)
        elif r.runtime == "torch":
            ref = _nearest(data, by_ckpt_sha, r.model_sha256, near, what, lambda x: (x.reference, x.data))
            if ref is not None:
                accuracy = finite((ref.reference or {}).get("accuracy")) or None
                student = data.export_label(ref)
                count = _eval_count(ref)
            elif (run := data.one(what, "runs", where, runs, above=3, identity=data.run_identity)) is not None:  # its checkpoint's run
                accuracy = run.accuracy or None
                student = run.label
        if differ:  # exports of the bytes an engine was built from, with other results
            data.ambiguous(what, "exports of its bytes with other results", differ)
            note = "ambiguous: two exports of its bytes with other results"
        if accuracy is None:
            data.unmatched += 1
            if not hit and not note and at.kind != "qad":
                note = "ambiguous: two timed files fit" if len(found) > 1 else unjoined_note(r, engine_names)
        file = _short(full)
        p = Point(student=student, precision=precision, runtime=r.runtime, batch=r.batch,
                  latency=r.latency_ms.model_dump(), accuracy=accuracy, model=r.model, device=device_label(r),
                  threads=r.threads, count=count, note=note, file=file)
        entry.name, entry.file, entry.note = f"{student} · {precision}", file, note  # as the latency tables name it
        named.append((entry, p, full))
        # the file where the record timed it (not its short name, nor the path as typed): a rerun of one file, or a
        # record copied with its tree, is a repeat (counted); a byte copy elsewhere (qad --export's PTQ file, an export
        # copied whole to v1/ and v2/) is a row of its own
        loc = os.path.realpath(r.model) if os.path.isabs(r.model) else (where or [[r.model]])[0][0]
        timed.setdefault((r.model_sha256 or r.model, loc, p.student, p.precision, p.runtime, p.batch, p.device,
                          p.threads), []).append((entry, p))
    unclash(named)
    data.warnings.extend(unmatched_warnings(replaced, elsewhere))
    return [counted(group) for group in timed.values()]


class _File(NamedTuple):
    """What a timed file's path is in the report's inputs: ``model`` (export.json's (report, model)), ``qad`` (a
    ``distill qad`` file or engine: :class:`~distill.report.qad_files.QADFile`) or ``engine``
    (:class:`~distill.report.engines.EngineHit`)."""

    kind: str
    what: Any


def _nearest(data: ReportData, by_sha: dict[str, dict[str, R]], sha: str | None, folder: Path, what: str,
             identity: Callable[[R], Any]) -> R | None:
    """What ``by_sha`` (sha256 -> {folder: thing}) holds for ``sha``: of copies, the one nearest ``folder``; None for
    none held, or folders whose ``identity`` differs, said as ambiguous (:func:`~distill.report.locate.nearest_held`)."""
    held = by_sha.get(sha or "") or {}
    place, differ = nearest_held(held, folder, identity)
    if differ:
        data.ambiguous(what, "exports of its bytes with other results", differ)
    return held[place] if place is not None else None


def _model_of(record: BenchRecord, at_path: tuple[ExportReport, ExportedModel] | None,
              by_sha: Callable[[], tuple[ExportReport, ExportedModel] | None],
              in_qad: bool) -> tuple[ExportReport, ExportedModel] | None:
    """The exported model a record timed: the one whose sha256 it carries (of two exports holding that file, the one
    at its path, ``at_path``, else the one nearest the record, ``by_sha``), else, for a record without a sha256 or an
    export.json without one, the one at its path. A file of a ``distill qad`` folder is that folder's (its PTQ file
    can be a byte copy of an export's int8 file, qad --export). None when the sha256s are known and differ: the file
    at the path has been replaced since it was timed."""
    if in_qad:
        return None
    sha = record.model_sha256
    if at_path is not None and (not sha or not at_path[1].sha256 or at_path[1].sha256 == sha):
        return at_path
    return by_sha() if sha else None


def _short(path: str) -> str:
    """A file as the latency table names it: its folder's name and its own (``export/model.fp32.onnx``)."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def _eval_count(export: ExportReport) -> dict[str, int] | None:
    """Test images per domain behind an export's accuracies (export.json ``data.eval_count``)."""
    c = (export.data or {}).get("eval_count")
    return {str(k): int(v) for k, v in c.items()} if isinstance(c, dict) and c else None


# --------------------------------------------------------------------------- entry point
@dataclass(frozen=True)
class ReportWritten:
    """What :func:`write_report` wrote, and how much went into it."""

    html: Path
    markdown: Path
    runs: int
    exports: int
    qad: int
    records: int  # bench records
    points: int  # accuracy/latency points plotted
    pareto: int  # of which on the Pareto front
    warnings: tuple[str, ...]  # what the report says it left out or could not join (ReportData.warnings), one line each

    def summary(self) -> str:
        """The one line ``distill report`` prints."""
        return (f"wrote {self.html} and {self.markdown}: {self.runs} run(s), {self.exports} export(s), "
                f"{self.records} record(s), {self.pareto} Pareto point(s)"
                + (f", {self.qad} QAD result(s)" if self.qad else ""))


def write_report(paths: Iterable[str | Path], out: str | Path, title: str = "distill report") -> ReportWritten:
    """Write ``out`` (HTML; in an existing folder ``out/report.html``) and the same name with ``.md`` beside it
    (:func:`distill.outputs.report_files`); returns what went in."""
    paths = [Path(p) for p in paths]  # read twice (a generator would be empty the second time: in the message below)
    check_report_out(out)  # never over an input, a record or a file other than an earlier report: before reading
    data = collect(paths)
    if not (data.runs or data.exports or data.records or data.qad):
        raise DistillError(f"nothing to report: no {RUN_SUMMARY}, {EXPORT_REPORT}, {QAD_REPORT} or bench .jsonl found under "
                           + ", ".join(str(p) for p in paths) + unfinished_runs_note(data.unfinished))
    out, md = report_files(out)  # --out report: report.html + report.md; --out DIR: DIR/report.html + DIR/report.md
    generated = time.strftime("%Y-%m-%d %H:%M:%S")
    atomic_write_text(out, render_html(data, title, generated) + REPORT_MARK)  # the mark: a report to replace
    atomic_write_text(md, render_markdown(data, title, generated) + REPORT_MARK)
    return ReportWritten(html=out, markdown=md, runs=len(data.runs), exports=len(data.exports), qad=len(data.qad),
                         records=len(data.records), points=len(data.points),
                         pareto=sum(p.pareto for p in data.points), warnings=tuple(data.warnings))
