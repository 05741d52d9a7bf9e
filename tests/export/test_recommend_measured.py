"""The recommendation's typed fields hold what was measured in every branch (QA G F4): an export that recommended fp32
because int8 was timed at 1.31x fp32 with HardSigmoid x19 left in float wrote ``speedup_measured=False,
latency_ratio=None, float_op_types={}``, so a program had to parse the English reason to learn that int8 was slower."""
from __future__ import annotations

from pathlib import Path

from distill.export.recommend import Fp16Facts, Int8Facts, recommend, recommend_for
from distill.records import ExportedModel, ExportReport, ShipRecommendation
from distill.report.decision import ShipDecision

ISLANDS = {"HardSigmoid": 19, "ReduceMean": 1}


def _cpu(ratio: float, worst: float = 0.2) -> Int8Facts:
    return Int8Facts("ort-cpu", "onnxruntime-cpu", ratio, True, worst, 1.0, dict(ISLANDS), ratio_high=ratio,
                     timed="batch 1, 1 thread")


def _trt(worst: float) -> Int8Facts:
    return Int8Facts("tensorrt", "tensorrt", 4.9, False, worst, 1.0, {"Sigmoid": 2})


def _fields(rec: ShipRecommendation) -> tuple:
    return rec.precision, rec.speedup_measured, rec.latency_ratio, rec.float_op_types, rec.measured_flavour


def test_fp32_for_a_slower_int8_keeps_its_ratio_and_float_ops() -> None:
    rec = recommend([_cpu(1.31)], None, 1.0, "mobilenetv3_large_100")
    assert "1.31x fp32 latency" in rec.reason and "HardSigmoid x19" in rec.reason  # as before
    assert _fields(rec) == ("fp32", True, 1.31, ISLANDS, "ort-cpu")
    assert rec.flavour is None  # the flavour shipped: none


def test_fp16_for_an_int8_over_budget_keeps_its_measured_speed_up() -> None:
    rec = recommend([_cpu(0.5, worst=3.5)], Fp16Facts(0.1), 1.0)
    assert _fields(rec) == ("fp16", True, 0.5, ISLANDS, "ort-cpu")


def test_two_flavours_the_fields_are_of_the_one_timed_here() -> None:
    """tensorrt over budget (so not shipped untimed), ort-cpu slower: fp32, with ort-cpu's figures."""
    rec = recommend([_trt(worst=3.0), _cpu(1.2)], None, 1.0)
    assert _fields(rec) == ("fp32", True, 1.2, ISLANDS, "ort-cpu")


def test_an_int8_not_timed_on_its_target_gives_no_ratio() -> None:
    rec = recommend([_trt(worst=3.0)], None, 1.0)
    assert _fields(rec) == ("fp32", False, None, {"Sigmoid": 2}, "tensorrt")
    assert _fields(recommend([], None, 1.0)) == ("fp32", False, None, {}, None)  # no int8 exported
    # the int8 branches name their flavour as measured too
    assert recommend([_trt(worst=0.0)], None, 1.0).measured_flavour == "tensorrt"
    assert recommend([_cpu(0.5)], None, 1.0).measured_flavour == "ort-cpu"


def test_from_export_entries_through_export_json_and_the_report_words(tmp_path: Path) -> None:
    int8 = ExportedModel(file="model.int8-ort-cpu.onnx", bytes=1, sha256="0", precision="int8", runtime="ort-cpu",
                         flavour="ort-cpu", target_runtime="onnxruntime-cpu", disagreement_pts={"a": 0.2},
                         fallback={"max_drop_pts": 1.0}, float_op_types=dict(ISLANDS),
                         latency_check={"ratio_vs_fp32": 1.31, "representative": True, "ratio_ci95": [1.2, 1.4],
                                        "batch": 1, "threads": 1})
    rec = recommend_for([int8], 1.0, "mobilenetv3_large_100")
    assert _fields(rec) == ("fp32", True, 1.31, ISLANDS, "ort-cpu")
    header = {"format": "distill.export/1", "created": "x", "status": "ok", "checkpoint": "c", "student": "s",
              "class_names": ["a"], "input": {}, "preprocess": {}}
    assert ExportReport.read(ExportReport(**header, recommendation=rec).write(tmp_path)).recommendation == rec
    # the report's words are the reason's, with no "speed-up not measured" caveat (an int8 recommendation's only)
    assert ShipDecision(rec).text() == f"ship fp32 — {rec.reason}"
    # an export.json written before: its fp32 recommendation without the fields reads, as not measured
    old = {**header, "recommendation": {"precision": "fp32", "reason": "int8 is 1.31x", "speedup_measured": False}}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "export.json").write_text(__import__("json").dumps(old))
    read = ExportReport.read(tmp_path / "old").recommendation
    assert read is not None and _fields(read) == ("fp32", False, None, {}, None)
