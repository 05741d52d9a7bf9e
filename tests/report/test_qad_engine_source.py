"""A ``distill qad`` folder's engine (``model.int8-qad.engine``, built on the device by its build_engine.sh) timed by the
edge runner in a copy of the qad folder carries ``engine_source`` from the qad.json beside it, and the report joins
it by those ONNX bytes wherever its .jsonl lies, as an export's engine (before: only by the folder rule)."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from distill.bench import edge_runner
from distill.report.write import collect

from .test_engine_join import engine_record
from .test_engine_source_join import _line
from .test_qad_engine_join import QAD_ACC, _qad_folder

SHIP = b"qad int8 qdq"  # the bytes of the file the rule picked (model.int8-tensorrt.onnx)


def _qad_with_file(folder: Path) -> Path:
    qad = _qad_folder(folder)
    (qad / "model.int8-tensorrt.onnx").write_bytes(SHIP)
    return qad


def test_the_runner_records_the_onnx_a_qad_engine_is_built_from(tmp_path: Path) -> None:
    qad = _qad_with_file(tmp_path / "host" / "qad")
    device = tmp_path / "device" / "qad"  # the qad folder copied to the device, build_engine.sh run there
    shutil.copytree(qad, device)
    want = {"onnx": "model.int8-tensorrt.onnx", "sha256": hashlib.sha256(SHIP).hexdigest()}
    assert edge_runner.engine_source(device / "model.int8-qad.engine", 10) == want
    assert edge_runner.engine_source(device / "model.int8-qad.engine", 11) == want
    assert edge_runner.engine_source(device / "model.int8.engine", 10) is None  # qad.json lists no such engine


def test_a_qad_engine_joins_its_qad_folder_by_source_wherever_its_jsonl_lies(tmp_path: Path) -> None:
    qad = _qad_with_file(tmp_path / "host" / "qad")
    source = {"onnx": "model.int8-tensorrt.onnx", "sha256": hashlib.sha256(SHIP).hexdigest()}
    jsonl = _line(engine_record("/home/nvidia/qad/model.int8-qad.engine"), source, tmp_path / "jet_home" / "bench.jsonl",
                  "qad/model.int8-qad.engine")  # cd ~ && edge_runner.py qad/model.int8-qad.engine; copied back
    data = collect([qad, jsonl])
    [p] = data.points
    assert (p.precision, p.accuracy, p.note) == ("int8/tensorrt (QAD)", QAD_ACC,
                                                 "TensorRT engine of model.int8-tensorrt.onnx")
    assert data.unmatched == 0


def test_a_qad_engine_built_from_other_bytes_is_not_joined(tmp_path: Path) -> None:
    qad = _qad_with_file(tmp_path / "host" / "qad")
    other = {"onnx": "model.int8-tensorrt.onnx", "sha256": "0f" * 32}  # a rerun of qad wrote other bytes
    jsonl = _line(engine_record("/home/nvidia/qad/model.int8-qad.engine"), other, tmp_path / "jet_home" / "bench.jsonl",
                  "qad/model.int8-qad.engine")
    data = collect([qad, jsonl])
    [p] = data.points
    assert p.accuracy is None and data.unmatched == 1


def test_a_qad_engine_of_other_bytes_is_not_joined_even_beside_its_folders_engine(tmp_path: Path) -> None:
    """As an export's engine: a rerun of distill qad rewrote the file; the engine timed was built from the old one."""
    qad = _qad_with_file(tmp_path / "host" / "qad")
    old = {"onnx": "model.int8-tensorrt.onnx", "sha256": hashlib.sha256(b"before the rerun").hexdigest()}
    now = {"onnx": "model.int8-tensorrt.onnx", "sha256": hashlib.sha256(SHIP).hexdigest()}
    _line(engine_record("/home/nvidia/qad/model.int8-qad.engine"), old, qad / "bench.jsonl")
    _line(engine_record(str(qad / "model.int8-qad.engine")), old, qad / "bench.jsonl")  # at its path, too
    data = collect([qad])
    assert [p.accuracy for p in data.points] == [None, None] and data.unmatched == 2
    assert {p.note for p in data.points} == {
        "not joined: built from a model.int8-tensorrt.onnx that no export or qad folder given holds"}
    (qad / "bench.jsonl").unlink()
    _line(engine_record("/home/nvidia/qad/model.int8-qad.engine"), now, qad / "bench.jsonl")
    [p] = collect([qad]).points
    assert p.accuracy == QAD_ACC


def test_a_by_path_hit_of_other_bytes_is_looked_up_by_source(tmp_path: Path) -> None:
    """Review 4 finding 5: the record's path hits the host's qad folder, whose file a rerun of distill qad rewrote; the
    copy of the folder brought back from the device still holds the bytes the engine was built from. The by-path hit
    was dropped for its bytes and the source never tried: not joined."""
    host = _qad_with_file(tmp_path / "host" / "qad")
    device = Path(shutil.copytree(host, tmp_path / "back" / "qad"))  # brought back before the rerun
    (host / "model.int8-tensorrt.onnx").write_bytes(b"the rerun's qdq bytes")
    built_from = {"onnx": "model.int8-tensorrt.onnx", "sha256": hashlib.sha256(SHIP).hexdigest()}
    jsonl = _line(engine_record(str(host / "model.int8-qad.engine")), built_from, tmp_path / "jet" / "bench.jsonl")
    data = collect([host, device, jsonl])
    [p] = data.points
    assert (p.accuracy, data.unmatched) == (QAD_ACC, 0)
