"""The export's recommendation in the report (distill/report/export_sections.py, render_md.py)."""
from __future__ import annotations

from distill.records import ExportedModel, ExportReport, ShipRecommendation
from distill.report.data import ExportEntry, ReportData
from distill.report.export_sections import section_int8
from distill.report.render_md import render_markdown

HEADER = {"format": "distill.export/1", "created": "x", "status": "ok", "checkpoint": "/runs/a/checkpoints/best",
          "student": "mobilenetv3_large_100", "class_names": ["a"], "input": {}, "preprocess": {}}


def _data(rec: ShipRecommendation | None, with_int8: bool = True) -> ReportData:
    models = [ExportedModel(file="model.fp32.onnx", bytes=1, sha256="0", precision="fp32", runtime="ort-cpu")]
    if with_int8:
        models.append(ExportedModel(
            file="model.int8-ort-cpu.onnx", bytes=1, sha256="0", precision="int8", runtime="ort-cpu",
            flavour="ort-cpu", target_runtime="onnxruntime-cpu", disagreement_pts={"a": 0.2},
            fallback={"triggered": False, "max_drop_pts": 1.0},
            latency_check={"ratio_vs_fp32": 1.06, "slower_than_fp32": True, "representative": True}))
    return ReportData(exports=[ExportEntry("/exports/a", ExportReport(**HEADER, models=models, recommendation=rec))])


def test_recommendation_shown_under_the_int8_table() -> None:
    rec = ShipRecommendation(precision="fp32", speedup_measured=False, faster_families=["resnet18"],
                             reason="int8 (ort-cpu) is 1.06x fp32 latency; ops still run in float: HardSigmoid x29")
    html = section_int8(_data(rec))
    at = html.index("Recommended to ship")
    assert html.index("INT8 decisions") < html.index("</table>") < at
    assert "ship <b>fp32</b> — int8 (ort-cpu) is 1.06x fp32 latency; ops still run in float: HardSigmoid x29" in html
    md = render_markdown(_data(rec), "t", "now")
    assert "## Recommended to ship" in md and "ship fp32 — int8 (ort-cpu) is 1.06x" in md


def test_untimed_int8_says_so_and_old_exports_show_nothing() -> None:
    rec = ShipRecommendation(precision="int8", flavour="tensorrt", speedup_measured=False, reason="not measured here")
    html = section_int8(_data(rec))
    assert "ship <b>int8 (tensorrt)</b>" in html and "speed-up not measured on the target" in html
    assert "Recommended to ship" not in section_int8(_data(None))  # an export.json from before the block
    # an fp32/fp16-only export still shows its recommendation
    only = section_int8(_data(ShipRecommendation(precision="fp32", speedup_measured=False, reason="no int8"), False))
    assert "What to ship" in only and "ship <b>fp32</b> — no int8" in only
