"""A bench record of a tensorrt-flavour qad folder's engine joins that folder's accuracy (review 2 M3).

QAD's build_engine.sh built ``model.int8.engine``, the export's own int8 engine name, and qad.json recorded no
engine: a record of it joined nothing (no accuracy), and one whose .jsonl lay in the export folder (where the qad
folder usually sits) was matched by name to the export's engine and shown with the export's int8 accuracy. The engine
is now ``model.int8-qad.engine``, recorded in qad.json's ``config["tensorrt"]``, and joined to the accuracy of the
int8 file it is built from (the one the no-harm rule picked).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from distill.records import QADRecord
from distill.report.write import collect

from .test_engine_join import ACC, engine_record, write_export
from .test_qad_section import _record

QAD_ACC = {"clean": 0.9, "dark": 0.8, "noisy": 0.7}  # _record's accuracy.qad
PTQ_ACC = {"clean": 0.8, "dark": 0.7, "noisy": 0.5}  # and accuracy.ptq
EXPORT_INT8 = {d: a - 0.05 for d, a in ACC.items()}  # the export's int8 file (test_engine_join.write_export)


def _qad_folder(folder: Path, ship: str = "qad") -> Path:
    """A tensorrt-flavour qad.json as distill qad writes it: its engine built from the file the rule picked."""
    raw = _record(Path("/ck/best")).to_dict()
    ship_file = "model.int8-tensorrt.onnx" if ship == "qad" else "model.int8-tensorrt.ptq.onnx"
    raw.update(ship=ship, ptq_file=None if ship == "qad" else ship_file)
    raw["config"]["tensorrt"] = {"build_script": "build_engine.sh", "batches": [1, 8, 32], "workspace_mib": 1024,
                                 "engines": [{"onnx": ship_file, "onnx_strongly_typed": ship_file,
                                              "engine": "model.int8-qad.engine", "precision": "int8"}]}
    folder.mkdir(parents=True)
    QADRecord.from_dict(raw, "qad.json").write(folder)
    return folder


@pytest.mark.parametrize("ship, accuracy", [("qad", QAD_ACC), ("ptq", PTQ_ACC)])
def test_a_record_of_the_qad_engine_at_its_path_gets_the_accuracy_of_the_file_it_is_built_from(
        tmp_path: Path, ship: str, accuracy: dict[str, float]) -> None:
    qad = _qad_folder(tmp_path / "qad", ship)
    engine_record(str(qad / "model.int8-qad.engine")).append_to(tmp_path / "trt.jsonl")
    data = collect([qad, tmp_path / "trt.jsonl"])
    (point,) = data.points
    assert point.accuracy == accuracy and point.count == {d: 10 for d in accuracy}
    assert point.precision == f"int8/tensorrt ({ship.upper()})" and point.runtime == "tensorrt"
    built_from = "model.int8-tensorrt.onnx" if ship == "qad" else "model.int8-tensorrt.ptq.onnx"
    assert point.note == f"TensorRT engine of {built_from}" and data.unmatched == 0


def test_a_device_record_copied_beside_the_qad_engine_joins_it_and_not_the_exports_engine(tmp_path: Path) -> None:
    """The layout of the docs: the qad folder inside its export. The export's engine and QAD's, timed on the device;
    the results copied back, one .jsonl in each folder: each engine gets its own file's accuracy."""
    export = write_export(tmp_path / "exp", "1")
    qad = _qad_folder(export / "qad")
    engine_record("/home/nvidia/exp/qad/model.int8-qad.engine").append_to(qad / "bench.jsonl")
    engine_record("/home/nvidia/exp/model.int8.engine", "dd" * 32).append_to(export / "bench.jsonl")
    data = collect([export])
    by_name = {Path(p.model).name: p for p in data.points}
    assert by_name["model.int8-qad.engine"].accuracy == QAD_ACC
    assert by_name["model.int8.engine"].accuracy == EXPORT_INT8
    assert data.unmatched == 0


def test_a_qad_engine_record_in_the_export_folder_does_not_take_the_exports_int8_accuracy(tmp_path: Path) -> None:
    export = write_export(tmp_path / "exp", "1")
    _qad_folder(export / "qad")
    engine_record("/home/nvidia/exp/qad/model.int8-qad.engine").append_to(export / "bench.jsonl")
    data = collect([export])
    (point,) = data.points
    assert point.accuracy is None and data.unmatched == 1  # not the export's model.int8.engine
