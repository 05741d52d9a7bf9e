"""One decision of what ships (distill/report/decision.py): the precision from export.json's recommendation, the int8
file from qad.json's no-harm rule, worded the same in report.md, report.html and the demo's console.

Before it, an export recommended fp32 while the QAD section said "ships QAD int8", and the exported models' accuracy
table showed the export's own int8, not the file the rule picked.
"""
from __future__ import annotations

import html as html_lib
import re
from pathlib import Path

from distill.records import ExportedModel, ExportReport, QADRecord, ShipRecommendation
from distill.report.write import collect, write_report

from .conftest import write_run
from .test_qad_section import _record

LABEL = "test_resnet (kd)"
FP32_REASON = "int8 (ort-cpu) is 1.14x fp32 latency on this CPU (> 0.9: no speed-up)"
INT8_REASON = "int8 (ort-cpu) is 0.55x fp32 latency on onnxruntime-cpu here and disagrees with fp32 on 0.40 pts"
QAD_WINS = "mean top-1 disagreement with fp32 on 40 hold-out images (2 domains): QAD 2.50 < PTQ 3.00 pts"
PTQ_WINS = "mean top-1 disagreement with fp32 on 40 hold-out images (2 domains): QAD 2.75 >= PTQ 1.50 pts, so QAD did not help"
PLAIN = "compared with plain PTQ, not this export's int8; "  # a QAD without --export: its PTQ arm was not the export's file


def _export(folder: Path, checkpoint: Path, rec: ShipRecommendation, flavour: str = "ort-cpu") -> Path:
    """An export.json of ``checkpoint`` (fp32 + int8 of ``flavour``) with its recommendation."""
    acc = {"clean": 0.9, "dark": 0.8, "noisy": 0.6}
    models = [ExportedModel(file="model.fp32.onnx", bytes=1, sha256="a" * 64, precision="fp32", runtime="onnxruntime",
                            accuracy=acc),
              ExportedModel(file=f"model.int8-{flavour}.onnx", bytes=1, sha256="b" * 64, precision="int8",
                            runtime="onnxruntime", flavour=flavour, target_runtime="onnxruntime-cpu",
                            accuracy={"clean": 0.85, "dark": 0.75, "noisy": 0.55})]
    ExportReport(format="distill.export/1", created="x", status="ok", checkpoint=str(checkpoint),
                 student="test_resnet", class_names=["a"], input={}, preprocess={}, models=models,
                 provenance={"strategy": "kd", "run": str(checkpoint.parents[1])},
                 data={"eval_domains": list(acc), "eval_count": {d: 10 for d in acc}}, recommendation=rec).write(folder)
    return folder


def _qad(folder: Path, checkpoint: Path, ship: str, flavour: str = "ort-cpu") -> QADRecord:
    """A qad.json of ``checkpoint`` whose no-harm rule picked ``ship`` ("qad" | "ptq"), in ``folder``."""
    base = _record(checkpoint)
    raw = base.to_dict()
    raw["ptq"]["holdout"] = {"clean": 3.0, "dark": 3.0} if ship == "qad" else {"clean": 1.0, "dark": 2.0}
    raw["qad"]["holdout"] = {"clean": 2.0, "dark": 3.0} if ship == "qad" else {"clean": 3.0, "dark": 2.5}
    raw.update(flavour=flavour, qad_file=f"model.int8-{flavour}.onnx", holdout_images=40, ship=ship,
               ship_reason=QAD_WINS if ship == "qad" else PTQ_WINS,
               ptq_file=f"model.int8-{flavour}.ptq.onnx" if ship == "ptq" else None)
    record = QADRecord.from_dict(raw, "qad.json")
    folder.mkdir(parents=True)
    record.write(folder)
    return record


def _inputs(root: Path, rec: ShipRecommendation, ship: str | None, export_flavour: str = "ort-cpu") -> Path:
    """ROOT/{run, export, export/qad}: a run, its export with ``rec`` and (``ship`` given) a QAD result inside it."""
    run = write_run(root / "run", strategy="kd", acc={"clean": 0.9, "dark": 0.8, "noisy": 0.6}, seed=0)
    checkpoint = run / "checkpoints" / "best"
    _export(root / "export", checkpoint, rec, export_flavour)
    if ship is not None:
        _qad(root / "export" / "qad", checkpoint, ship)
    return root


def _report(root: Path, out: Path) -> tuple[str, str]:
    res = write_report([root], out / "r.html", "r")
    return Path(res.markdown).read_text(), Path(res.html).read_text()


def _text(html: str) -> str:
    """What a reader sees of an HTML fragment: tags dropped, entities unescaped, line-break hints removed."""
    return html_lib.unescape(re.sub(r"<[^>]+>", "", html.replace("<wbr>", "")))


def _recommended(md: str, html: str) -> tuple[str, str]:
    """The "Recommended to ship" item of the student, in report.md and (as read) in report.html."""
    md_item = next(ln for ln in md.splitlines() if ln.startswith(f"- {LABEL}: ship "))
    section = html[html.index("<h3>Recommended to ship</h3>"):]
    html_item = _text(section[section.index("<li>"):section.index("</li>")])
    return md_item.removeprefix(f"- {LABEL}: "), html_item.removeprefix(f"{LABEL}: ")


FP32 = ShipRecommendation(precision="fp32", speedup_measured=False, reason=FP32_REASON)
INT8 = ShipRecommendation(precision="int8", flavour="ort-cpu", speedup_measured=True, latency_ratio=0.55,
                          reason=INT8_REASON)


def test_fp32_recommended_and_the_qad_file_picked_is_one_decision(tmp_path: Path) -> None:
    """(a) The demo's case: fp32 ships; the QAD file is named as the int8 to use where int8 is needed anyway."""
    root = _inputs(tmp_path / "in", FP32, "qad")
    md, html = _report(root, tmp_path)
    want = (f"ship fp32 — {FP32_REASON}; if int8 is needed anyway (another runtime), ship qad/model.int8-ort-cpu.onnx "
            f"(QAD int8; {PLAIN}no-harm rule: {QAD_WINS})")
    assert _recommended(md, html) == (want, want)  # the same words in both
    for text in (md, _text(html)):
        assert "ships QAD int8" not in text and "ships PTQ int8" not in text
        # the QAD section names the file, not what ships, and points to the recommendation for the precision
        assert (f"No-harm rule: int8 file: QAD's, model.int8-ort-cpu.onnx ({QAD_WINS}). Precision to ship: fp32, the "
                "export's recommendation (Recommended to ship).") in text
    # the exported models' table: the export's own int8 row stays, the rule's file gets its own row (qad.json's
    # accuracy.qad; the export's int8 scored 85/75/55)
    assert f"| {LABEL} | int8/ort-cpu | 85.0 | 75.0 | 55.0 |" in md
    assert f"| {LABEL} | int8/ort-cpu (QAD file qad/model.int8-ort-cpu.onnx) | 90.0 | 80.0 | 70.0 |" in md
    table = html[html.index('<section id="accuracy">'):]
    table = table[:table.index("</section>")]
    row = next(r for r in table.split("<tr>") if "QAD file" in r)
    assert "int8/ort-cpu (QAD file qad/model.int8-ort-cpu.onnx)" in _text(row)
    # in brackets: points vs qad.json's fp32 on the same images (noisy 70 vs 60)
    assert '<td class="num" data-v="0.7" title="10 test images">70.0 <span class="sd">(+10.0)</span></td>' in row


def test_int8_recommended_and_the_ptq_file_picked_ships_that_file(tmp_path: Path) -> None:
    """(b) int8 is the precision, and the file to ship is the one the rule picked (here plain PTQ's)."""
    root = _inputs(tmp_path / "in", INT8, "ptq")
    md, html = _report(root, tmp_path)
    want = f"ship int8 (ort-cpu): qad/model.int8-ort-cpu.ptq.onnx (PTQ int8; {PLAIN}no-harm rule: {PTQ_WINS}) — {INT8_REASON}"
    assert _recommended(md, html) == (want, want)
    for text in (md, _text(html)):
        assert "ships QAD int8" not in text and "ships PTQ int8" not in text
        assert (f"No-harm rule: int8 file: PTQ's, model.int8-ort-cpu.ptq.onnx ({PTQ_WINS}). Precision to ship: "
                "int8 (ort-cpu), the export's recommendation") in text
    assert f"| {LABEL} | int8/ort-cpu (PTQ file qad/model.int8-ort-cpu.ptq.onnx) | 80.0 | 70.0 | 50.0 |" in md


def test_an_export_without_qad_keeps_its_recommendation_alone(tmp_path: Path) -> None:
    """(c) No qad.json of the model (or one of another int8 flavour than the one recommended): the recommendation
    reads as the export wrote it, and no rule row joins the table."""
    md, html = _report(_inputs(tmp_path / "a", FP32, None), tmp_path / "a")
    assert _recommended(md, html) == (f"ship fp32 — {FP32_REASON}",) * 2
    assert "QAD file" not in md and "No-harm rule" not in md
    # int8 (tensorrt) recommended, QAD made an ort-cpu file: that file is not tensorrt's int8
    trt = INT8.model_copy(update={"flavour": "tensorrt", "speedup_measured": False})
    md, html = _report(_inputs(tmp_path / "b", trt, "qad", export_flavour="tensorrt"), tmp_path / "b")
    want = f"ship int8 (tensorrt) (speed-up not measured on the target) — {INT8_REASON}"
    assert _recommended(md, html) == (want, want)
    assert "QAD file" not in md
    # the export is in the report: the QAD section says why its file is not named, not "no export" (the QA's nit)
    assert ("Precision to ship (int8 or not): the export's recommendation (Recommended to ship; the export of this "
            f"checkpoint, {tmp_path / 'b' / 'export'}, recommends int8 (tensorrt) with its own tensorrt file, not this "
            "result's ort-cpu file)") in md
    assert "no export of this checkpoint" not in md


def test_a_qad_result_of_another_checkpoint_is_not_joined(tmp_path: Path) -> None:
    root = _inputs(tmp_path / "in", FP32, None)
    other = write_run(tmp_path / "in" / "other", strategy="erm", acc={"clean": 0.5}, seed=1)
    _qad(tmp_path / "in" / "qad", other / "checkpoints" / "best", "qad")
    md, html = _report(root, tmp_path)
    assert _recommended(md, html)[0] == f"ship fp32 — {FP32_REASON}"


def test_the_file_that_ships_and_the_console_words(tmp_path: Path) -> None:
    """:meth:`ShipDecision.shipped_file`: the export's fp32 file when fp32 is recommended, the rule's int8 file when
    int8 is; :meth:`ShipDecision.text` is what the demo prints after ``fm_unlabeled:``, the report.md item."""
    from distill.report.decision import ShipDecision, decide  # here: the other tests run on code from before it

    root = _inputs(tmp_path / "in", FP32, "qad")
    data = collect([root])
    export, qad = data.exports[0], data.qad[0]
    decision = decide(FP32, qad.record, qad.dir, export.dir)
    assert decision.shipped_file(export.report) == "model.fp32.onnx"
    assert f"- {LABEL}: {decision.text()}" in _report(root, tmp_path)[0]
    int8 = decide(INT8, qad.record, qad.dir, export.dir)
    assert int8.shipped_file(export.report) == "qad/model.int8-ort-cpu.onnx"
    assert ShipDecision(INT8).shipped_file(export.report) == "model.int8-ort-cpu.onnx"  # no QAD: the export's own


def test_the_shipped_arm_and_its_accuracy(tmp_path: Path) -> None:
    """QADRecord.ship_arm / ship_accuracy follow the file the rule picked (a record from before the rule: QAD's)."""
    ckpt = tmp_path / "ckpt"
    qad, ptq = _qad(tmp_path / "q", ckpt, "qad"), _qad(tmp_path / "p", ckpt, "ptq")
    assert (qad.ship_arm, qad.ship_accuracy) == ("QAD", qad.accuracy.qad)
    assert (ptq.ship_arm, ptq.ship_accuracy) == ("PTQ", ptq.accuracy.ptq)
    old = _record(ckpt)  # ship unset: its int8 file is QAD's
    assert (old.ship_file, old.ship_arm, old.ship_accuracy) == ("model.int8-tensorrt.onnx", "QAD", old.accuracy.qad)
    assert _record(ckpt, accuracy=False).ship_accuracy is None


def test_a_qad_result_and_an_export_typed_from_different_folders_pair_by_the_checkpoint_sha256(tmp_path: Path) -> None:
    """Bug: `distill export qaB/demo_out/.../best` run from /tmp and `distill qad demo_out/.../best` run from /tmp/qaB
    stored two different relative strings, and the report found "no export of this checkpoint". Both records carry
    the weights' sha256: it decides; records without one (older files) still pair by path."""
    root = _inputs(tmp_path / "in", FP32, None)
    export_json = root / "export" / "export.json"
    raw = ExportReport.read(export_json).to_dict()
    raw["checkpoint"] = "qaB/demo_out/runs/kd/checkpoints/best"  # as typed from another folder
    raw["provenance"]["checkpoint_sha256"] = "c" * 64
    ExportReport.from_dict(raw).write(root / "export")
    record = _qad(root / "export" / "qad", Path("demo_out/runs/kd/checkpoints/best"), "qad")
    record.model_copy(update={"checkpoint_sha256": "c" * 64}).write(root / "export" / "qad")
    md, html = _report(root, tmp_path)
    want = (f"ship fp32 — {FP32_REASON}; if int8 is needed anyway (another runtime), ship qad/model.int8-ort-cpu.onnx "
            f"(QAD int8; {PLAIN}no-harm rule: {QAD_WINS})")
    assert _recommended(md, html) == (want, want)
    # another checkpoint's weights at the same path (retrained in place): not this export's QAD result
    same_path = record.model_copy(update={"checkpoint": raw["checkpoint"], "checkpoint_sha256": "d" * 64})
    same_path.write(root / "export" / "qad")
    md, html = _report(root, tmp_path)
    assert _recommended(md, html)[0] == f"ship fp32 — {FP32_REASON}"


def test_the_qad_section_says_why_an_export_in_the_report_names_no_qad_file(tmp_path: Path) -> None:
    """"no export of this checkpoint in this report" only when there is none: an export.json from before
    recommendations, or several QAD results none of which is inside the export's folder, are said as such."""
    root = _inputs(tmp_path / "old", FP32, "qad")
    raw = ExportReport.read(root / "export").to_dict()
    raw["recommendation"] = None
    ExportReport.from_dict(raw).write(root / "export")
    md = _report(root, tmp_path / "old")[0]
    assert (f"(Recommended to ship; the export of this checkpoint, {root / 'export'}, has no recommendation (an "
            "export.json from before it))") in md
    root = _inputs(tmp_path / "two", FP32, None)
    checkpoint = root / "run" / "checkpoints" / "best"
    _qad(root / "qad1", checkpoint, "qad")
    _qad(root / "qad2", checkpoint, "ptq")
    md = _report(root, tmp_path / "two")[0]
    assert md.count(f"(Recommended to ship; several QAD results of this checkpoint and none inside the folder of its "
                    f"export, {root / 'export'}: the recommendation names none of their files)") == 2
    md = _report(_inputs(tmp_path / "none", FP32, None), tmp_path / "none")[0]  # no qad: no section at all
    assert "no export of this checkpoint" not in md and "No-harm rule" not in md
    lone = tmp_path / "lone"
    _qad(lone / "qad", tmp_path / "elsewhere" / "checkpoints" / "best", "qad")
    assert "(Recommended to ship; no export of this checkpoint in this report)" in _report(lone, lone)[0]
