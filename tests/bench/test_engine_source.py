"""The edge runner records the ONNX file an export's TensorRT engine was built from (``engine_source``), found in the
export.json beside the engine, so ``distill report`` can join the engine's timings wherever the .jsonl is put (QA H
finding 3). TensorRT itself is not needed: :func:`engine_source` reads export.json and hashes a file."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from distill.bench import edge_runner
from distill.records import BenchRecord
from tests.report.test_engine_join import write_export


def _export_with_files(folder: Path) -> Path:
    ex = write_export(folder, "1")
    for name in ("model.fp32.onnx", "model.fp16.onnx", "model.int8-tensorrt.onnx"):
        (ex / name).write_bytes(name.encode())
    return ex


def test_engine_source_is_the_onnx_build_engine_sh_builds_it_from(tmp_path: Path) -> None:
    ex = _export_with_files(tmp_path / "fmu")
    sha = {n: hashlib.sha256(n.encode()).hexdigest() for n in ("model.fp32.onnx", "model.fp16.onnx")}
    # fp16: from the fp32 ONNX with --fp16 on TensorRT 10, from model.fp16.onnx on 11 (strongly typed)
    assert edge_runner.engine_source(ex / "model.fp16.engine", 10) == {"onnx": "model.fp32.onnx", "sha256": sha["model.fp32.onnx"]}
    assert edge_runner.engine_source(ex / "model.fp16.engine", 11) == {"onnx": "model.fp16.onnx", "sha256": sha["model.fp16.onnx"]}
    assert edge_runner.engine_source(ex / "model.int8.engine", 10)["onnx"] == "model.int8-tensorrt.onnx"


def test_no_engine_source_without_an_export_json_listing_the_engine_and_its_onnx(tmp_path: Path) -> None:
    ex = _export_with_files(tmp_path / "fmu")
    assert edge_runner.engine_source(ex / "other.engine", 10) is None  # not listed
    (ex / "model.int8-tensorrt.onnx").unlink()
    assert edge_runner.engine_source(ex / "model.int8.engine", 10) is None  # its ONNX not copied along
    (tmp_path / "loose").mkdir()
    assert edge_runner.engine_source(tmp_path / "loose" / "model.int8.engine", 10) is None  # no export.json
    (ex / "export.json").write_text("{half")
    assert edge_runner.engine_source(ex / "model.fp16.engine", 10) is None  # unreadable: not an error


class _Engine:
    """A runner as TensorRTRunner is to bench_runners, taking no time."""

    def __init__(self, path: Path, source: dict[str, str] | None) -> None:
        self.path, self.source, self.meta = path, source, {}
        self.runtime, self.providers, self.threads = "tensorrt", ["TensorRT 10.3.0"], None

    def input_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, 3, 4, 4)

    def run(self, x) -> None:
        return None

    def profiled(self) -> None:
        return None


def test_an_engine_record_carries_its_source_and_reads_back_as_a_bench_record(tmp_path: Path) -> None:
    ex = _export_with_files(tmp_path / "fmu")
    source = edge_runner.engine_source(ex / "model.int8.engine", 10)
    (ex / "model.int8.engine").write_bytes(b"engine")
    records = edge_runner.bench_runners([_Engine(ex / "model.int8.engine", source)], (1,), warmup=1, iters=2)
    assert records[0]["engine_source"] == source
    edge_runner.write_jsonl(records, tmp_path / "bench.jsonl")
    back = next(BenchRecord.read_lines(tmp_path / "bench.jsonl"))
    assert back.engine_source is not None and back.engine_source.sha256 == source["sha256"]
    plain = edge_runner.bench_runners([_Engine(ex / "model.int8.engine", None)], (1,), warmup=1, iters=2)
    assert plain[0]["engine_source"] is None  # an engine of no export: null, so the report tells it from an old runner's
    edge_runner.write_jsonl(plain, tmp_path / "plain.jsonl")
    back = next(BenchRecord.read_lines(tmp_path / "plain.jsonl"))
    assert back.engine_source is None and "engine_source" in back.model_fields_set



def _sidecar(engine: Path, onnx: str, onnx_bytes: bytes) -> None:
    (engine.parent / (engine.name + ".source.json")).write_text(json.dumps(
        {"engine": engine.name, "engine_sha256": hashlib.sha256(engine.read_bytes()).hexdigest(), "onnx": onnx,
         "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(), "trt_major": 10}))


def test_the_build_record_beside_the_engine_names_its_source_not_the_onnx_there_now(tmp_path: Path, capsys) -> None:
    ex = _export_with_files(tmp_path / "fmu")
    engine = ex / "model.int8.engine"
    engine.write_bytes(b"engine")
    _sidecar(engine, "model.int8-tensorrt.onnx", b"model.int8-tensorrt.onnx")
    (ex / "model.int8-tensorrt.onnx").write_bytes(b"another export's qdq")  # copied over since the build
    assert edge_runner.engine_source(engine, 10) == {
        "onnx": "model.int8-tensorrt.onnx", "sha256": hashlib.sha256(b"model.int8-tensorrt.onnx").hexdigest()}
    assert "built from other bytes of model.int8-tensorrt.onnx" in capsys.readouterr().err
    engine.write_bytes(b"another engine")  # replaced since its build record was written: no source claimed
    assert edge_runner.engine_source(engine, 10) is None
    assert "not the engine model.int8.engine.source.json records" in capsys.readouterr().err


def test_without_a_build_record_an_onnx_newer_than_the_engine_is_not_claimed(tmp_path: Path, capsys) -> None:
    ex = _export_with_files(tmp_path / "fmu")
    engine = ex / "model.int8.engine"
    engine.write_bytes(b"engine")
    os.utime(engine, (1_000_000, 1_000_000))  # built long before the export was copied over the folder
    assert edge_runner.engine_source(engine, 10) is None
    assert "the engine may be stale" in capsys.readouterr().err
    os.utime(engine, None)  # built after the copy: the ONNX beside it, as before
    assert edge_runner.engine_source(engine, 10)["onnx"] == "model.int8-tensorrt.onnx"
