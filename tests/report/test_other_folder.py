"""``distill report`` run from another folder than the one the runs, exports and benchmarks were made in.

export.json's ``provenance.run``, qad.json's ``config.export_dir`` and a bench record's ``model`` were stored as typed,
relative to the folder the command ran in, and the report resolved them against its own current folder: from
elsewhere, exports lost their run's label (two students of one strategy were both 'test_resnet (kd)'), a TensorRT
engine timed there joined no export, and a ``distill qad`` file timed there was taken for the export's int8 file
(the same bytes, another file). distill/report/locate.py finds each stored path wherever the report runs."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from distill.bench.edge_runner import SCHEMA
from distill.records import BenchRecord, ExportedModel, ExportReport
from distill.report.decision import qad_for
from distill.report.write import collect

from .conftest import write_run
from .test_ship_decision import _qad

ACC = {"clean": 0.9, "dark": 0.8, "noisy": 0.6}
ENGINE = {"onnx": "model.fp32.onnx", "onnx_strongly_typed": "model.fp32.onnx", "engine": "model.fp32.engine",
          "precision": "fp32"}  # built on the device by build_engine.sh: no sha256 in export.json


def old_export(folder: Path, checkpoint: Path, run: str, tag: str) -> Path:
    """An export.json as written before paths were stored for other folders: ``provenance.run`` as typed."""
    models = [ExportedModel(file="model.fp32.onnx", bytes=1, sha256=f"{tag}0" * 32, precision="fp32",
                            runtime="onnxruntime", accuracy=ACC),
              ExportedModel(file="model.int8-ort-cpu.onnx", bytes=1, sha256=f"{tag}1" * 32, precision="int8",
                            runtime="onnxruntime", flavour="ort-cpu", accuracy={d: a - 0.05 for d, a in ACC.items()})]
    ExportReport(format="distill.export/1", created="x", status="ok", checkpoint=str(checkpoint), student="test_resnet",
                 class_names=["a"], input={}, preprocess={}, models=models,
                 provenance={"strategy": "kd", "run": run, "checkpoint_sha256": f"c{tag}" * 32},
                 data={"eval_domains": list(ACC), "eval_count": {d: 10 for d in ACC}},
                 tensorrt={"engines": [ENGINE], "built_here": False}).write(folder)
    return folder


def record(model: str, sha: str | None, runtime: str = "ort-cpu", **meta: Any) -> BenchRecord:
    return BenchRecord(**{
        "schema": SCHEMA, "model": model, "model_name": Path(model).name, "model_sha256": sha, "model_meta": meta,
        "runtime": runtime, "batch": 1, "input_shape": [1, 3, 32, 32], "threads": 1, "warmup": 1, "iters": 5,
        "latency_ms": {"mean": 1.0, "std": 0.1, "min": 0.9, "p50": 1.0, "p90": 1.1, "p99": 1.2, "max": 1.2},
        "throughput_ips": 1000.0, "timestamp": "2026-01-01T00:00:00+0000", "device": {"cpu": {"model": "x"}}})


def made_in(start: Path) -> Path:
    """START/out/{runs/kd-t4, runs/kd-t2, export/t4, export/t4/qad, export/t2, bench.jsonl}, every path in them as
    typed in START (``distill export runs/... --out out/export/t4`` and so on). Returns START/out."""
    out = start / "out"
    runs = {t: write_run(out / "runs" / f"kd-t{t}", strategy="kd", acc=ACC, seed=0, options={"temperature": t})
            for t in (4, 2)}
    for t, run in runs.items():
        old_export(out / "export" / f"t{t}", run / "checkpoints" / "best", f"out/runs/kd-t{t}", str(t))
    qad = _qad(out / "export" / "t4" / "qad", runs[4] / "checkpoints" / "best", "ptq")
    qad = qad.model_copy(update={"checkpoint_sha256": "c4" * 32, "config": {**qad.config, "export_dir": "out/export/t4"}})
    qad.write(out / "export" / "t4" / "qad")
    bench = out / "bench.jsonl"
    record("out/export/t4/model.fp32.onnx", "40" * 32).append_to(bench)
    record("out/export/t4/model.fp32.engine", "ee" * 32, "tensorrt").append_to(bench)
    # the PTQ file qad --export picked: a byte copy of the export's int8 file, timed as the qad folder's file
    record("out/export/t4/qad/model.int8-ort-cpu.ptq.onnx", "41" * 32).append_to(bench)
    record("out/runs/kd-t2/checkpoints/best", "99" * 32, "torch", arch="test_resnet").append_to(bench)
    return out


def joined(out: Path) -> dict[str, Any]:
    data = collect([*(out / "runs").iterdir(), *(out / "export").iterdir(), out / "bench.jsonl"])
    points = {p.model: p for p in data.points}
    return {"labels": {Path(ex.dir).name: data.export_label(ex.report) for ex in data.exports},
            "runs": {Path(r.dir).name: r.label for r in data.runs},
            "qad": {Path(ex.dir).name: qad_for(data, ex) is not None for ex in data.exports},
            "points": {m: (p.student, p.precision, p.file, p.note) for m, p in points.items()},
            "unmatched": data.unmatched}


@pytest.mark.parametrize("where", ["start", "elsewhere"])
def test_old_relative_paths_join_alike_from_the_folder_they_were_made_in_and_from_another(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    out = made_in(tmp_path / "start")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / where)
    got = joined(out)
    t4, t2 = got["runs"]["kd-t4"], got["runs"]["kd-t2"]
    assert t4 == "test_resnet (kd; temperature=4)" and t2 == "test_resnet (kd; temperature=2)"
    assert got["labels"] == {"t4": t4, "t2": t2}
    assert got["qad"] == {"t4": True, "t2": False}
    assert got["points"] == {
        "out/export/t4/model.fp32.onnx": (t4, "fp32", "t4/model.fp32.onnx", ""),
        "out/export/t4/model.fp32.engine": (t4, "fp32", "t4/model.fp32.engine", "TensorRT engine of model.fp32.onnx"),
        "out/export/t4/qad/model.int8-ort-cpu.ptq.onnx": (t4, "int8/ort-cpu (PTQ)", "qad/model.int8-ort-cpu.ptq.onnx", ""),
        "out/runs/kd-t2/checkpoints/best": (t2, "fp32", "checkpoints/best", "")}
    assert got["unmatched"] == 0


def test_an_old_relative_path_two_folders_above_its_artifact_both_hold_joins_neither(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never the wrong one silently: 'e/model.fp32.engine' in X/y/bench.jsonl names X/y/e's engine or X/e's (the
    folder the bench ran in is not recorded); with both exports among the inputs the record joins neither."""
    run = write_run(tmp_path / "run", strategy="kd", acc=ACC, seed=0)
    inner = old_export(tmp_path / "x" / "y" / "e", run / "checkpoints" / "best", str(run), "1")
    outer = old_export(tmp_path / "x" / "e", run / "checkpoints" / "best", str(run), "2")
    record("e/model.fp32.engine", "ee" * 32, "tensorrt").append_to(tmp_path / "x" / "y" / "bench.jsonl")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    data = collect([inner, outer, tmp_path / "x" / "y" / "bench.jsonl"])
    assert [p.note for p in data.points] == ["ambiguous: two timed files fit"] and data.unmatched == 1
    said = [w for w in data.warnings if w.startswith("ambiguous: two timed files fit")]  # naming both
    assert len(said) == 1 and all(str(e.resolve() / "model.fp32.engine") in said[0] for e in (inner, outer))
    data = collect([inner, tmp_path / "x" / "y" / "bench.jsonl"])  # one of them: that one
    assert [p.note for p in data.points] == ["TensorRT engine of model.fp32.onnx"]


def test_a_tree_of_results_moved_whole_still_joins_within_itself(report_inputs: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """export.json, qad.json and bench .jsonl files store each path absolute and relative to their own folder: a tree
    of results copied or moved elsewhere (another machine, an archive) joins its own run, export and engine, not the
    originals (export.json's absolute paths still name report_inputs; an engine's record names the tree's old place)."""
    from distill.bench.edge_runner import write_jsonl

    from .test_engine_join import engine_record

    made, moved = tmp_path / "made", tmp_path / "moved"
    shutil.copytree(report_inputs, made, symlinks=True)
    engine = ExportReport.read(made / "export").tensorrt["engines"][0]  # built on the device: no sha256 in export.json
    (made / "export" / engine["engine"]).write_bytes(b"engine")
    write_jsonl([engine_record(str(made / "export" / engine["engine"])).to_dict()], made / "bench" / "trt.jsonl")
    os.rename(made, moved)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    data = collect([moved])
    [export] = data.exports
    run = data.run_of(export.report)
    assert run is not None and os.path.realpath(run.dir) == os.path.realpath(moved / "run")
    assert data.export_label(export.report) == run.label
    assert data.unmatched == 0
    assert [p.note for p in data.points if p.runtime == "tensorrt"] == [f"TensorRT engine of {engine['onnx_strongly_typed']}"]
