"""Two timed files whose folders have one name (QA F5): ``export/erm/model.int8-ort-cpu.onnx`` and a ``distill qad``
folder's ``qad/erm/model.int8-ort-cpu.onnx`` were both shown as ``erm/model.int8-ort-cpu.onnx``. Each is now named
by as many folders as tell them apart; a name no other file shares keeps its one folder."""
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
    assert names == {"fp32": "erm/model.fp32.onnx", "int8/ort-cpu": "export/erm/model.int8-ort-cpu.onnx",
                     "int8/ort-cpu (QAD)": "qad/erm/model.int8-ort-cpu.onnx"}, names
    assert sorted(m.file for m in data.records) == sorted(names.values())  # the latency tables' names too
