"""Engine records joined by ``engine_source`` (review 3): named by the ONNX they were built from (finding 5), and not
joined when two exports hold those bytes with other results (finding 1), as an ONNX record of those bytes is not."""
from __future__ import annotations

import json
from pathlib import Path

from distill.records import BenchRecord
from distill.report.write import collect
from tests.report.test_engine_join import ACC, engine_record, write_export


def _in_home(record: BenchRecord, home: Path, **extra: object) -> Path:
    """``record`` as the edge runner writes it in ``cd ~ && edge_runner.py fmu/ENGINE``, the .jsonl copied back into
    ``home`` (neither export's folder)."""
    jsonl = home / "bench.jsonl"
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    with open(jsonl, "a") as f:
        f.write(json.dumps({**record.to_dict(), "model_relative": f"fmu/{record.model_name}", **extra}) + "\n")
    return jsonl


def test_a_tensorrt_10_fp16_engine_is_named_by_the_onnx_it_was_built_from(tmp_path: Path) -> None:
    ex = write_export(tmp_path / "export" / "fmu", "1")
    source = {"onnx": "model.fp32.onnx", "sha256": "10" * 32}  # TensorRT 10: --fp16 from the fp32 file
    data = collect([ex, _in_home(engine_record("/home/nvidia/fmu/model.fp16.engine"), tmp_path / "jet_home",
                                 engine_source=source)])
    [p] = data.points
    assert (p.precision, p.accuracy) == ("fp16", {d: a - 0.01 for d, a in ACC.items()})  # the fp16 file's accuracy
    assert p.note == "TensorRT fp16 engine built from model.fp32.onnx; accuracy of model.fp16.onnx"


def test_an_engine_built_from_the_onnx_it_takes_its_accuracy_from_keeps_the_short_note(tmp_path: Path) -> None:
    ex = write_export(tmp_path / "export" / "fmu", "1")
    source = {"onnx": "model.fp16.onnx", "sha256": "11" * 32}  # TensorRT 11: from the fp16 file
    data = collect([ex, _in_home(engine_record("/home/nvidia/fmu/model.fp16.engine"), tmp_path / "jet_home",
                                 engine_source=source)])
    [p] = data.points
    assert p.note == "TensorRT engine of model.fp16.onnx"


def test_an_engine_whose_onnx_two_exports_hold_with_other_results_is_not_joined(tmp_path: Path) -> None:
    """One checkpoint exported twice (evaluated on other data): the same ONNX bytes, other accuracies. Which export's
    an engine built from them belongs to cannot be told, as for an ONNX record of those bytes: neither, said."""
    a = write_export(tmp_path / "exports" / "v1" / "fmu", "1")
    b = write_export(tmp_path / "exports" / "v2" / "fmu", "1")  # the same sha256s
    listed = json.loads((b / "export.json").read_text())
    for m in listed["models"]:
        m["accuracy"] = {d: 0.3 for d in m["accuracy"]}
    (b / "export.json").write_text(json.dumps(listed))
    home = tmp_path / "jet_home"
    _in_home(engine_record("/home/nvidia/fmu/model.int8.engine"), home,
             engine_source={"onnx": "model.int8-tensorrt.onnx", "sha256": "12" * 32})
    onnx = engine_record("/home/nvidia/fmu/model.int8-tensorrt.onnx", "12" * 32)
    jsonl = _in_home(onnx.model_copy(update={"runtime": "ort-cpu"}), home)
    data = collect([a, b, jsonl])
    by_runtime = {p.runtime: p for p in data.points}
    assert by_runtime["ort-cpu"].accuracy is None  # the ONNX record: ambiguous, not joined
    engine = by_runtime["tensorrt"]
    assert engine.accuracy is None and "ambiguous" in engine.note, engine.note
    said = [w for w in data.warnings if "/home/nvidia/fmu/model.int8.engine" in w]
    assert len(said) == 1 and "ambiguous: two exports of its bytes with other results" in said[0], data.warnings
