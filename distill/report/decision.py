"""One answer to "what ships" per exported student, worded the same in the demo's console, report.md and report.html.

Two records decide, each one thing:

- the **precision** (int8, fp16 or fp32) is the export's recommendation (export.json ``recommendation``, made by
  :mod:`distill.export.recommend` from int8's measured speed and ``--max-drop``);
- the **int8 file** is the no-harm rule's pick (qad.json ``ship``: QAD's file or plain PTQ's, docs/qad.md), when a
  ``distill qad`` result of the same checkpoint (and, when the recommendation is int8, of its flavour) is at hand.
  The rule never decides whether int8 beats fp32.

So when the recommendation is int8, the rule's file is the one to ship; otherwise the precision recommended ships and
the rule's file is named as the int8 to use where int8 is needed anyway. Reasons are the records' own, not recomputed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from distill.records import ExportReport, QADRecord, ShipRecommendation, same_checkpoint
from distill.report.charts import esc
from distill.report.data import ExportEntry, QADEntry, ReportData
from distill.report.locate import existing

ELSEWHERE = "if int8 is needed anyway (another runtime)"


@dataclass(frozen=True)
class Int8File:
    """The int8 file the no-harm rule picked, as the decision names it."""

    path: str  # relative to the export folder when the QAD folder is inside it, else the QAD folder's path + file
    arm: str   # "QAD" | "PTQ"
    reason: str  # qad.json ``ship_reason`` ("" in files written before the rule)
    flavour: str  # the int8 flavour (ort-cpu | tensorrt)
    against: str = ""  # what the PTQ arm was, when it was not the export's own int8 file (plain PTQ)

    @property
    def detail(self) -> str:
        """``(QAD int8; no-harm rule: REASON)``: whose file it is and why the rule picked it."""
        why = f"no-harm rule: {self.reason}" if self.reason else "no-harm rule not recorded: the QAD file"
        return f"({self.arm} int8; {self.against + '; ' if self.against else ''}{why})"

    @property
    def label(self) -> str:
        """What the accuracy tables call this file: ``int8/ort-cpu (QAD file qad/model.int8-ort-cpu.onnx)``."""
        return f"int8/{self.flavour} ({self.arm} file {self.path})"

    def text(self) -> str:
        return f"{self.path} {self.detail}"

    @classmethod
    def of(cls, record: QADRecord, qad_dir: str | Path, export_dir: str | Path | None = None) -> Int8File:
        # a QAD without --export compared itself with plain PTQ, not with the export's int8 file: said so
        against = "compared with plain PTQ, not this export's int8" if export_dir is not None and \
            not ran_against(record) else ""
        return cls(path=_relative(Path(qad_dir) / record.ship_file, export_dir), arm=record.ship_arm,
                   reason=record.ship_reason if record.ship is not None else "", flavour=record.flavour,
                   against=against)


@dataclass(frozen=True)
class ShipDecision:
    """The precision the export recommends, and the int8 file the rule picked (None without a matching qad.json)."""

    recommendation: ShipRecommendation
    int8: Int8File | None = None

    @property
    def what(self) -> str:
        rec = self.recommendation
        return f"int8 ({rec.flavour})" if rec.precision == "int8" and rec.flavour else rec.precision

    @property
    def untimed(self) -> str:
        """The caveat of an int8 recommendation whose speed-up was not timed on its target runtime."""
        rec = self.recommendation
        return " (speed-up not measured on the target)" if rec.precision == "int8" and not rec.speedup_measured else ""

    def text(self) -> str:
        """``ship WHAT — reason`` (+ the int8 file), the words of the console and report.md."""
        return self._join(self.what, self.untimed, self.recommendation.reason,
                          self.int8.text() if self.int8 else None)

    def html(self) -> str:
        """:meth:`text` for report.html: the same words, escaped, the precision and the file in bold."""
        return self._join(f"<b>{esc(self.what)}</b>", f'<span class="muted">{esc(self.untimed)}</span>'
                          if self.untimed else "", esc(self.recommendation.reason),
                          f"<b>{esc(self.int8.path)}</b> {esc(self.int8.detail)}"
                          if self.int8 else None)

    def _join(self, what: str, untimed: str, reason: str, int8: str | None) -> str:
        if int8 is None:
            return f"ship {what}{untimed} — {reason}"
        if self.recommendation.precision == "int8":
            return f"ship {what}{untimed}: {int8} — {reason}"
        return f"ship {what} — {reason}; {ELSEWHERE}, ship {int8}"

    def shipped_file(self, export: ExportReport) -> str | None:
        """The file to ship, relative to the export folder: the rule's int8 file when int8 is recommended and there
        is one, else the export's own file of the recommended precision (and flavour); None when it has none."""
        rec = self.recommendation
        if rec.precision == "int8" and self.int8 is not None:
            return self.int8.path
        return next((m.file for m in export.models if m.precision == rec.precision
                     and (rec.precision != "int8" or m.int8_flavour == rec.flavour)), None)


def decide(recommendation: ShipRecommendation, qad: QADRecord | None, qad_dir: str | Path | None = None,
           export_dir: str | Path | None = None) -> ShipDecision:
    """The one decision: ``recommendation``'s precision and, when ``qad`` applies (an int8 recommendation of
    another flavour than QAD's does not), the rule's int8 file in ``qad_dir``."""
    if qad is None or qad_dir is None or (recommendation.precision == "int8" and recommendation.flavour != qad.flavour):
        return ShipDecision(recommendation)
    return ShipDecision(recommendation, Int8File.of(qad, qad_dir, export_dir))


def _relative(path: Path, export_dir: str | Path | None) -> str:
    """``path`` relative to the export folder when inside it (``qad/model.int8-ort-cpu.onnx``), else as given."""
    if export_dir is not None:
        inside = os.path.relpath(os.path.realpath(path), os.path.realpath(export_dir))
        if not inside.startswith(os.pardir):
            return inside
    return str(path)


# --------------------------------------------------------------------------- joining in a report
def _same_checkpoint(data: ReportData, qad: QADEntry, export: ExportEntry) -> bool:
    """Are ``qad`` and ``export`` of the same checkpoint? (:func:`distill.records.same_checkpoint`; a path, where the
    sha256s do not decide, found as :mod:`distill.report.locate` says, wherever the report runs: of two places that
    hold copies of one checkpoint, the artifact's own tree's, not the stored path of another tree)."""
    return same_checkpoint(existing(qad.places("checkpoint"), data.checkpoint_sha) or qad.record.checkpoint,
                           qad.record.checkpoint_sha256,
                           existing(export.places("checkpoint"), data.checkpoint_sha) or export.report.checkpoint,
                           export.report.provenance.get("checkpoint_sha256"))


def ran_against(record: QADRecord) -> str | None:
    """The export folder a ``distill qad --export`` result compared itself with (its PTQ arm is that folder's int8
    file), as recorded; None for a QAD whose PTQ arm is plain PTQ."""
    where = (record.config or {}).get("export_dir")
    return str(where) if where else None


def _against(data: ReportData, qad: QADEntry) -> ExportEntry | None:
    """The export among the inputs a ``distill qad --export`` result ran against (found as
    :mod:`distill.report.locate` says); None for a plain-PTQ result, or one whose export is not among them (or
    cannot be told from two)."""
    return data.export_of_qad(qad)


def qad_for(data: ReportData, export: ExportEntry) -> QADEntry | None:
    """The ``distill qad`` result of ``export``'s model: a qad.json of the same checkpoint (and, when the
    recommendation is int8, of its flavour) that ran against this export (``--export``; one made against another
    export of the checkpoint compared itself with another int8 file and is not this export's) or against plain PTQ
    (any export of the checkpoint; the decision says so); of several, the one inside the export's folder; None when
    there is none or the choice is ambiguous (the QAD section still shows every result)."""
    rec = export.report.recommendation
    found = [q for q in data.qad if _same_checkpoint(data, q, export)
             and (ran_against(q.record) is None or _against(data, q) is export)
             and (rec is None or rec.precision != "int8" or q.record.flavour == rec.flavour)]
    if len(found) > 1:
        found = [q for q in found if not os.path.relpath(os.path.realpath(q.dir),
                                                         os.path.realpath(export.dir)).startswith(os.pardir)]
    return found[0] if len(found) == 1 else None


def export_for(data: ReportData, qad: QADEntry) -> ExportEntry | None:
    """The export whose decision names ``qad``'s int8 file (:func:`qad_for` read backwards)."""
    return next((ex for ex in data.exports if qad_for(data, ex) is qad), None)


def unpaired_reason(data: ReportData, qad: QADEntry) -> str:
    """Why no export's decision names ``qad``'s int8 file, in words for its QAD section."""
    same = [ex for ex in data.exports if _same_checkpoint(data, qad, ex)]
    if not same:
        return "no export of this checkpoint in this report"
    against = ran_against(qad.record)
    if against is not None and not any(_against(data, qad) is ex for ex in same):
        return (f"it ran against the int8 file of the export {against} (qad --export), not in this report; other "
                "exports of this checkpoint have other int8 files")
    flavour = qad.record.flavour
    for ex in same:
        rec = ex.report.recommendation
        if rec is not None and rec.precision == "int8" and rec.flavour != flavour:
            return (f"the export of this checkpoint, {ex.dir}, recommends int8 ({rec.flavour}) with its own "
                    f"{rec.flavour} file, not this result's {flavour} file")
    for ex in same:
        other = qad_for(data, ex) if ex.report.recommendation is not None else None
        if other is not None and other is not qad:
            return f"the export of this checkpoint, {ex.dir}, names the int8 file of another QAD result, {other.dir}"
    if all(ex.report.recommendation is None for ex in same):
        return f"the export of this checkpoint, {same[0].dir}, has no recommendation (an export.json from before it)"
    return (f"several QAD results of this checkpoint and none inside the folder of its export, {same[0].dir}: "
            "the recommendation names none of their files")


def decision_for(data: ReportData, export: ExportEntry) -> ShipDecision | None:
    """``export``'s one decision; None for an export.json from before recommendations."""
    rec = export.report.recommendation
    if rec is None:
        return None
    qad = qad_for(data, export)
    return decide(rec, qad.record if qad else None, qad.dir if qad else None, export.dir)


class Int8Row(NamedTuple):
    """The no-harm rule's int8 file as a row of the exported models' accuracy tables (qad.json ``accuracy``)."""

    file: Int8File
    accuracy: dict[str, float]  # the arm picked (``accuracy.qad`` or ``accuracy.ptq``), fractions
    fp32: dict[str, float]      # the fp32 student's on the same images (``accuracy.fp32``)
    images: dict[str, int]      # test images per domain


def int8_file_of(data: ReportData, export: ExportEntry) -> Int8Row | None:
    """The no-harm rule's int8 file of ``export``'s model with its test accuracy, for the accuracy tables; None
    without a matching qad.json or without accuracies in it."""
    qad = qad_for(data, export)
    acc = qad.record.accuracy if qad else None
    shipped = qad.record.ship_accuracy if qad else None
    if qad is None or acc is None or shipped is None:
        return None
    return Int8Row(Int8File.of(qad.record, qad.dir, export.dir), shipped, acc.fp32, acc.count)
