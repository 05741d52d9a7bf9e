"""Two timed files whose folders have one name (QA F5): ``export/erm/model.int8-ort-cpu.onnx`` and a ``distill qad``
folder's ``qad/erm/model.int8-ort-cpu.onnx`` were both shown as ``erm/model.int8-ort-cpu.onnx``. Then only names two
files shared got more folders, so one folder's files read ``kd/model.fp32.onnx`` and ``exp/kd/model.int8-ort-cpu.onnx``,
and the qad folder's PTQ copy ``kd/model.int8-ort-cpu.ptq.onnx`` read as exp/kd's (QA G F10). Every file of a folder now
has the one folder name that tells the folders apart, as short as it can be."""
from __future__ import annotations

from pathlib import Path

from distill.bench.edge_runner import write_jsonl
from distill.report.write import collect

from .conftest import write_run
from .test_other_folder import record
from .test_ship_decision import FP32, _export, _qad


def test_files_in_folders_of_one_name_are_told_apart(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", strategy="kd", acc={"clean": 0.9, "dark": 0.8, "noisy": 0.6}, seed=0)
    ex = _export(tmp_path / "export" / "erm", run / "checkpoints" / "best", FP32)
    _qad(tmp_path / "qad" / "erm", run / "checkpoints" / "best", "qad")
    write_jsonl([record(str(ex / "model.fp32.onnx"), "a" * 64).to_dict(),
                 record(str(ex / "model.int8-ort-cpu.onnx"), "b" * 64).to_dict(),
                 record(str(tmp_path / "qad" / "erm" / "model.int8-ort-cpu.onnx"), "c" * 64).to_dict()],
                tmp_path / "bench.jsonl")
    data = collect([tmp_path])
    names = {p.precision: p.file for p in data.points}
    assert names == {"fp32": "export/erm/model.fp32.onnx", "int8/ort-cpu": "export/erm/model.int8-ort-cpu.onnx",
                     "int8/ort-cpu (QAD)": "qad/erm/model.int8-ort-cpu.onnx"}, names
    assert sorted(m.file for m in data.records) == sorted(names.values())  # the latency tables' names too


def test_every_file_of_a_folder_has_one_prefix_and_the_ptq_copy_reads_as_the_qad_folders(tmp_path: Path) -> None:
    """QA G F10's layout: exp/kd (fp32 + int8), qad/kd (qad --export exp/kd: QAD's int8 and the PTQ copy)."""
    run = write_run(tmp_path / "runs" / "kd", strategy="kd", acc={"clean": 0.9, "dark": 0.8, "noisy": 0.6}, seed=0)
    ex = _export(tmp_path / "exp" / "kd", run / "checkpoints" / "best", FP32)
    qad = tmp_path / "qad" / "kd"
    _qad(qad, run / "checkpoints" / "best", "ptq")
    write_jsonl([record(str(ex / "model.fp32.onnx"), "a" * 64).to_dict(),
                 record(str(ex / "model.int8-ort-cpu.onnx"), "b" * 64).to_dict(),
                 record(str(qad / "model.int8-ort-cpu.onnx"), "c" * 64).to_dict(),
                 record(str(qad / "model.int8-ort-cpu.ptq.onnx"), "d" * 64).to_dict()], tmp_path / "bench.jsonl")
    data = collect([tmp_path])
    assert sorted(p.file for p in data.points) == ["exp/kd/model.fp32.onnx", "exp/kd/model.int8-ort-cpu.onnx",
                                                   "qad/kd/model.int8-ort-cpu.onnx",
                                                   "qad/kd/model.int8-ort-cpu.ptq.onnx"]


def test_one_folder_alone_keeps_its_one_name(tmp_path: Path) -> None:
    run = write_run(tmp_path / "runs" / "kd", strategy="kd", acc={"clean": 0.9, "dark": 0.8, "noisy": 0.6}, seed=0)
    ex = _export(tmp_path / "exp" / "kd", run / "checkpoints" / "best", FP32)
    write_jsonl([record(str(ex / "model.fp32.onnx"), "a" * 64).to_dict(),
                 record(str(ex / "model.int8-ort-cpu.onnx"), "b" * 64).to_dict()], tmp_path / "bench.jsonl")
    assert sorted(p.file for p in collect([tmp_path]).points) == ["kd/model.fp32.onnx", "kd/model.int8-ort-cpu.onnx"]
