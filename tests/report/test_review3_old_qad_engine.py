"""Review 3: a qad folder written before fix-N (no config["tensorrt"]; its build_engine.sh built model.int8.engine
in the qad folder). A device record of that engine, the .jsonl in the export folder (run there: `bench
qad/model.int8.engine`, model_relative qad/model.int8.engine), must not take the export's int8 accuracy."""
from __future__ import annotations

from pathlib import Path

import pytest

from distill.records import QADRecord
from distill.report.write import collect

from .test_engine_join import engine_record, write_export
from .test_qad_engine_join import EXPORT_INT8, QAD_ACC, _qad_folder
from .test_qad_section import _record


def test_an_old_qad_engine_timed_from_the_export_folder_does_not_take_the_exports_accuracy(tmp_path: Path) -> None:
    export = write_export(tmp_path / "exp", "1")
    (export / "qad").mkdir()
    raw = _record(Path("/ck/best")).to_dict()
    raw["flavour"] = "tensorrt"
    QADRecord.from_dict(raw, "qad.json").write(export / "qad")  # as the release before wrote it: no engine named
    rec = engine_record("/home/nvidia/exp/qad/model.int8.engine")
    rec = rec.model_copy(update={"model_relative": "qad/model.int8.engine"})
    rec.append_to(export / "bench.jsonl")
    data = collect([export])
    (point,) = data.points
    print(point.accuracy, point.note, data.unmatched)
    assert point.accuracy is None  # QAD's engine: not the export's model.int8.engine


def _old_qad_folder(folder: Path, script: bool = True) -> Path:
    """A tensorrt-flavour qad folder as the release before wrote it: qad.json names no engine; its build_engine.sh
    (``script``) built model.int8.engine from the file the rule picked (_record: QAD's)."""
    folder.mkdir(parents=True)
    raw = _record(Path("/ck/best")).to_dict()
    raw["flavour"] = "tensorrt"
    QADRecord.from_dict(raw, "qad.json").write(folder)
    if script:
        (folder / "build_engine.sh").write_text("#!/bin/sh\n")
    return folder


def test_the_old_qad_engine_timed_from_the_export_folder_gets_qads_accuracy(tmp_path: Path) -> None:
    """Its build_engine.sh is there: the engine it built is that folder's, with the accuracy of the file it is built
    from; the .jsonl in the export folder, the record's model_relative naming qad/model.int8.engine."""
    export = write_export(tmp_path / "exp", "1")
    _old_qad_folder(export / "qad")
    rec = engine_record("/home/nvidia/exp/qad/model.int8.engine")
    rec.model_copy(update={"model_relative": "qad/model.int8.engine"}).append_to(export / "bench.jsonl")
    data = collect([export])
    (point,) = data.points
    assert point.accuracy == QAD_ACC and point.precision == "int8/tensorrt (QAD)"
    assert point.note == "TensorRT engine of model.int8-tensorrt.onnx" and data.unmatched == 0


def test_the_old_qad_engine_copied_back_beside_it_gets_qads_accuracy(tmp_path: Path) -> None:
    export = write_export(tmp_path / "exp", "1")
    qad = _old_qad_folder(export / "qad")
    rec = engine_record("/home/nvidia/exp/qad/model.int8.engine")
    rec.model_copy(update={"model_relative": "model.int8.engine"}).append_to(qad / "bench.jsonl")
    (point,) = collect([export]).points
    assert point.accuracy == QAD_ACC


@pytest.mark.parametrize("relative, accuracy", [
    (None, EXPORT_INT8),  # an older record: the name in the .jsonl's folder, as before
    ("model.int8.engine", EXPORT_INT8),  # timed in the export folder
    ("./model.int8.engine", EXPORT_INT8),
    ("../exp/model.int8.engine", EXPORT_INT8),  # the .jsonl one folder over on the device: the same place here
    ("v2/model.int8.engine", None),  # another engine of that name, in a subfolder: not the export's
    ("../other/model.int8.engine", None),
])
def test_the_export_engine_joins_by_name_only_where_the_records_own_path_says_so(
        tmp_path: Path, relative: str | None, accuracy: dict[str, float] | None) -> None:
    export = write_export(tmp_path / "exp", "1")
    rec = engine_record("/home/nvidia/exp/model.int8.engine")
    rec.model_copy(update={"model_relative": relative}).append_to(export / "bench.jsonl")
    data = collect([export])
    (point,) = data.points
    assert point.accuracy == accuracy and data.unmatched == (accuracy is None)


def test_a_new_qad_engine_of_another_folder_does_not_join_the_qad_folder_by_name(tmp_path: Path) -> None:
    """The same rule for QAD's engine: v2/model.int8-qad.engine timed from a qad folder is not that folder's."""
    export = write_export(tmp_path / "exp", "1")
    qad = _qad_folder(export / "qad")
    rec = engine_record("/home/nvidia/exp/qad/v2/model.int8-qad.engine")
    rec.model_copy(update={"model_relative": "v2/model.int8-qad.engine"}).append_to(qad / "bench.jsonl")
    data = collect([export])
    (point,) = data.points
    assert point.accuracy is None and data.unmatched == 1
