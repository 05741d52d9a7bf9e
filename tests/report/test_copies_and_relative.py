"""Byte copies of one export in two trees are two rows; a relative report PATH names files by their own folders."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distill.bench.edge_runner import write_jsonl
from distill.report.write import collect

from .conftest import write_run
from .test_other_folder import record
from .test_ship_decision import FP32, _export


@pytest.mark.parametrize("names", [("v1/erm", "v2/erm"), ("v1/erm", "v2/erm-copy")])
def test_two_copies_of_one_export(tmp_path: Path, names: tuple[str, str]) -> None:
    run = write_run(tmp_path / "run", strategy="kd", acc={"clean": 0.9, "dark": 0.8, "noisy": 0.6}, seed=0)
    a = _export(tmp_path / names[0], run / "checkpoints" / "best", FP32)
    b = tmp_path / names[1]
    shutil.copytree(a, b)
    write_jsonl([record(str(a / "model.int8-ort-cpu.onnx"), "b" * 64).to_dict(),
                 record(str(b / "model.int8-ort-cpu.onnx"), "b" * 64).to_dict()], tmp_path / "bench.jsonl")
    data = collect([tmp_path])
    print(names, [(p.student, p.precision, p.file) for p in data.points], data.warnings)
    assert len(data.points) == 2


def test_relative_report_paths_name_one_file_by_its_own_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`distill report .` (relative PATH): one export file timed from two bench files in two folders."""
    run = write_run(tmp_path / "run", strategy="kd", acc={"clean": 0.9, "dark": 0.8, "noisy": 0.6}, seed=0)
    ex = _export(tmp_path / "export" / "erm", run / "checkpoints" / "best", FP32)
    for sub, p50 in (("benchA", 1.0), ("benchB", 2.0)):
        (tmp_path / sub).mkdir()
        r = record(str(ex / "model.int8-ort-cpu.onnx"), "b" * 64)
        r = r.model_copy(update={"latency_ms": r.latency_ms.model_copy(update={"p50": p50}),
                                 "timestamp": f"2026-01-0{int(p50)}T00:00:00+0000"})
        write_jsonl([r.to_dict()], tmp_path / sub / "bench.jsonl")
    monkeypatch.chdir(tmp_path)
    data = collect(["."])
    files = [p.file for p in data.points]
    print(files, [m.file for m in data.records])
    assert files == ["erm/model.int8-ort-cpu.onnx"], files


def test_one_unjoined_file_benched_under_two_spellings_is_one_point(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`distill bench x/model.onnx` from one folder and `distill bench model.onnx` from inside x/: one file, a repeat."""
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "model.onnx").write_bytes(b"onnx")
    out = tmp_path / "bench.jsonl"
    for cwd, typed, day in ((tmp_path, "x/model.onnx", 1), (tmp_path / "x", "model.onnx", 2)):
        monkeypatch.chdir(cwd)
        r = record(typed, "c" * 64).model_copy(update={"timestamp": f"2026-01-0{day}T00:00:00+0000"})
        write_jsonl([r.to_dict()], out)
    monkeypatch.chdir(tmp_path)
    data = collect([tmp_path])
    assert len(data.points) == 1, [p.file for p in data.points]
