"""A record the report cannot join shows the precision it recorded, or its engine's build_engine.sh name's, or ``?``:
never fp32 by default (QA H finding 4: unjoined int8 and fp16 engines were shown as fp32)."""
from __future__ import annotations

from pathlib import Path

from distill.report.write import collect, write_report
from tests.report.test_engine_join import engine_record


def test_unjoined_engines_take_their_names_precision_and_other_files_are_unknown(tmp_path: Path) -> None:
    for i, name in enumerate(("model.int8.engine", "model.fp16.engine", "model.fp32.plan", "resnet.engine")):
        engine_record(f"/home/nvidia/fmu/{name}", f"{i}e" * 32).append_to(tmp_path / "bench.jsonl")
    engine_record("/home/nvidia/foreign.onnx", "ab" * 32).model_copy(update={"runtime": "ort-cpu"}).append_to(
        tmp_path / "bench.jsonl")
    data = collect([tmp_path / "bench.jsonl"])
    assert {Path(p.model).name: p.precision for p in data.points} == {
        "model.int8.engine": "int8/tensorrt", "model.fp16.engine": "fp16", "model.fp32.plan": "fp32",
        "resnet.engine": "?", "foreign.onnx": "?"}
    md = write_report([tmp_path / "bench.jsonl"], tmp_path / "r.html").markdown.read_text()
    assert "| ? | fp32 | tensorrt | fmu/model.int8.engine" not in md and "| ? | int8/tensorrt | tensorrt | fmu/model.int8.engine" in md
