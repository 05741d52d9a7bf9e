"""What distill export recommends shipping (distill/export/recommend.py), from constructed facts."""
from __future__ import annotations

from distill.export.recommend import Fp16Facts, Int8Facts, int8_facts, recommend, recommend_for
from distill.records import ExportedModel, ExportReport, ShipRecommendation

FAMILIES = {"resnet18": "0.5x (test)", "mobilenetv4_conv_small": "0.6x (test)"}


def _int8(ratio: float | None = 0.55, worst: float = 0.4, flavour: str = "ort-cpu", representative: bool = True,
          float_ops: dict[str, int] | None = None) -> Int8Facts:
    target = "onnxruntime-cpu" if flavour == "ort-cpu" else "tensorrt"
    return Int8Facts(flavour, target, ratio, representative, worst, 1.0, float_ops or {})


def test_int8_faster_and_within_budget_is_shipped() -> None:
    rec = recommend([_int8(ratio=0.55, worst=0.4)], Fp16Facts(0.0), 1.0, "resnet18", FAMILIES)
    assert (rec.precision, rec.flavour, rec.speedup_measured, rec.latency_ratio) == ("int8", "ort-cpu", True, 0.55)
    assert "0.55x fp32" in rec.reason and "0.40 pts <= --max-drop 1" in rec.reason
    assert rec.faster_families == []


def test_int8_slower_with_float_islands_names_the_families_that_gain() -> None:
    slow = _int8(ratio=1.06, worst=0.2, float_ops={"HardSigmoid": 29, "ReduceMean": 9})
    rec = recommend([slow], None, 1.0, "mobilenetv3_large_100", FAMILIES)
    assert rec.precision == "fp32" and (rec.speedup_measured, rec.latency_ratio) == (True, 1.06)  # timed: slower
    assert "1.06x fp32 latency" in rec.reason and "HardSigmoid x29, ReduceMean x9" in rec.reason
    assert rec.faster_families == ["resnet18", "mobilenetv4_conv_small"] and "resnet18 0.5x (test)" in rec.reason
    # with fp16 exported and agreeing, fp16 (for GPU/NPU targets), with the same reason for not int8
    rec16 = recommend([slow], Fp16Facts(0.0), 1.0, "mobilenetv3_large_100", FAMILIES)
    assert rec16.precision == "fp16" and "1.06x fp32 latency" in rec16.reason
    # a family never suggests itself
    assert "resnet18" not in recommend([slow], None, 1.0, "resnet18", FAMILIES).faster_families


def test_int8_slower_without_float_islands_suggests_no_family() -> None:
    """The head's one global pooling (ReduceMean x1) is in every family: not a reason to switch."""
    rec = recommend([_int8(ratio=0.97, float_ops={"ReduceMean": 1})], None, 1.0, "resnet18", FAMILIES)
    assert rec.precision == "fp32" and rec.faster_families == [] and "no speed-up" in rec.reason
    assert "ReduceMean" not in rec.reason


def test_int8_over_budget_falls_to_fp16() -> None:
    rec = recommend([_int8(ratio=0.5, worst=3.52)], Fp16Facts(0.2), 1.0, "resnet18", FAMILIES)
    assert rec.precision == "fp16" and "3.52 pts" in rec.reason and "> --max-drop 1" in rec.reason
    # fp16 that disagrees beyond the budget too: fp32
    assert recommend([_int8(ratio=0.5, worst=3.52)], Fp16Facts(2.0), 1.0).precision == "fp32"


def test_non_representative_latency_claims_no_speed_up() -> None:
    """A tensorrt-flavour int8 timed on this CPU (0.3x here or 5x): never a measured speed-up."""
    for ratio in (0.3, 5.0):
        rec = recommend([_int8(ratio=ratio, flavour="tensorrt", representative=False)], Fp16Facts(0.0), 1.0)
        assert (rec.precision, rec.flavour, rec.speedup_measured, rec.latency_ratio) == ("int8", "tensorrt", False, None)
        assert "not measured" in rec.reason and f"{ratio:.2f}x" not in rec.reason
    # a paying ort-cpu int8 beside it wins, with its measured ratio
    both = recommend([_int8(ratio=2.0, flavour="tensorrt", representative=False), _int8(ratio=0.6)], None, 1.0)
    assert (both.flavour, both.speedup_measured) == ("ort-cpu", True)


def test_facts_read_from_export_entries() -> None:
    entry = ExportedModel(file="model.int8-ort-cpu.onnx", bytes=1, sha256="0", precision="int8", runtime="ort-cpu",
                          flavour="ort-cpu", target_runtime="onnxruntime-cpu",
                          disagreement_pts={"a": 0.5, "b": 1.5}, fallback={"max_drop_pts": 2.0},
                          float_op_types={"HardSigmoid": 3},
                          latency_check={"ratio_vs_fp32": 1.2, "representative": True})
    facts = int8_facts(entry, 1.0)
    assert (facts.ratio_vs_fp32, facts.worst_disagreement_pts, facts.max_drop_pts) == (1.2, 1.5, 2.0)
    assert facts.within_budget and not facts.pays and facts.float_op_types == {"HardSigmoid": 3}
    fp16 = ExportedModel(file="model.fp16.onnx", bytes=1, sha256="0", precision="fp16", runtime="ort-cpu",
                         parity={"top1_agreement": 0.995})
    rec = recommend_for([entry, fp16], 1.0, "mobilenetv3_small_050")
    assert rec.precision == "fp16" and "0.50 pts" in rec.reason


def test_recommendation_round_trips_through_export_json(tmp_path) -> None:
    rec = ShipRecommendation(precision="fp32", reason="int8 is 1.06x", speedup_measured=False,
                             float_op_types={"HardSigmoid": 29}, faster_families=["resnet18"])
    header = {"format": "distill.export/1", "created": "x", "status": "ok", "checkpoint": "c", "student": "s",
              "class_names": ["a"], "input": {}, "preprocess": {}}
    path = ExportReport(**header, recommendation=rec).write(tmp_path)
    assert ExportReport.read(path).recommendation == rec
    assert rec.line() == "recommendation: ship fp32 — int8 is 1.06x"
    # an export.json written before the block existed still loads
    (tmp_path / "old").mkdir()
    old = ExportReport(**header).write(tmp_path / "old")
    assert ExportReport.read(old).recommendation is None


def test_the_families_named_are_measured_in_results_md() -> None:
    """Every family the recommendation suggests, with each figure it quotes, is in benchmarks/RESULTS.md."""
    import re
    from pathlib import Path

    from distill.export.recommend import INT8_FASTER_FAMILIES

    results = (Path(__file__).resolve().parents[2] / "benchmarks" / "RESULTS.md").read_text()
    section = results[results.index("## int8 per student"):]
    for family, figures in INT8_FASTER_FAMILIES.items():
        assert f"| {family} |" in section, family
        for low, high in re.findall(r"(\d\.\d\d)-(\d\.\d\d)x", figures):
            assert low in results and high in results, (family, low, high)


def test_a_speed_up_counts_only_when_its_interval_clears_the_bar() -> None:
    """The ratio of two medians moves by 0.1-0.3 between 20-run checks on a shared machine: int8 is shipped for
    speed only when the top of the ratio's 95 % interval is at or below 0.9, and the reason says what it holds for."""
    timed = "batch 1, 2 threads"
    sure = Int8Facts("ort-cpu", "onnxruntime-cpu", 0.80, True, 0.4, 1.0, {}, ratio_high=0.86, timed=timed)
    unsure = Int8Facts("ort-cpu", "onnxruntime-cpu", 0.80, True, 0.4, 1.0, {}, ratio_high=0.95, timed=timed)
    rec = recommend([sure], None, 1.0, "resnet18", FAMILIES)
    assert rec.precision == "int8"
    assert "0.80x fp32 latency (p50s; per-round ratio's 95 % interval up to 0.86; batch 1, 2 threads)" in rec.reason
    rec = recommend([unsure], None, 1.0, "resnet18", FAMILIES)
    assert rec.precision == "fp32"
    assert "interval up to 0.95; batch 1, 2 threads) on this CPU (> 0.9: no speed-up shown)" in rec.reason
    assert _int8(ratio=0.80).pays  # an export.json from before the interval: the ratio alone, as then


def test_the_interval_and_the_threads_are_read_from_export_json() -> None:
    entry = ExportedModel(file="model.int8-ort-cpu.onnx", bytes=1, sha256="0", precision="int8", runtime="ort-cpu",
                          flavour="ort-cpu", target_runtime="onnxruntime-cpu", disagreement_pts={"a": 0.1},
                          latency_check={"ratio_vs_fp32": 0.8, "ratio_ci95": [0.7, 0.93], "representative": True,
                                         "batch": 8, "threads": None})
    facts = int8_facts(entry, 1.0)
    assert (facts.ratio_high, facts.timed, facts.pays) == (0.93, "batch 8, threads: the runtime's default, count not recorded", False)


def test_an_int8_entry_without_its_flavour_key_reads_as_none() -> None:
    """int8_facts reads the flavour through ExportedModel.int8_flavour, as every other reader of export.json: an int8
    entry that lacks the key (a hand-made or truncated export.json) has no flavour, not the flavour "None"; the
    recommendation then says plain "int8" and the ship decision finds that file by it."""
    from distill.report.decision import ShipDecision

    entry = ExportedModel(file="model.int8.onnx", bytes=1, sha256="0", precision="int8", runtime="ort-cpu",
                          target_runtime="onnxruntime-cpu", disagreement_pts={"a": 0.1},
                          latency_check={"ratio_vs_fp32": 0.5, "representative": True})
    assert int8_facts(entry, 1.0).flavour is None
    rec = recommend_for([entry], 1.0)
    assert (rec.precision, rec.flavour) == ("int8", None) and rec.line().startswith("recommendation: ship int8 — ")
    header = {"format": "distill.export/1", "created": "x", "status": "ok", "checkpoint": "c", "student": "s",
              "class_names": ["a"], "input": {}, "preprocess": {}}
    export = ExportReport.from_dict({**header, "models": [entry.model_dump()], "recommendation": rec.model_dump()})
    assert ShipDecision(rec).shipped_file(export) == "model.int8.onnx"
