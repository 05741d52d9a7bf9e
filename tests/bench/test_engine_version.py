"""An engine's ``ENGINE.source.json`` records the TensorRT major version that built it (``trt_major``); the runner
compares it with the TensorRT loading the engine and says so in one line when they differ (issue 21, item 2):
TensorRT engines are not portable across versions. The fake tensorrt of test_runner_checks stands in for TensorRT."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

import distill.bench.edge_runner as edge_runner
from tests.bench.test_runner_checks import _fake_tensorrt


def _engine(folder: Path, trt_major: int, engine_bytes: bytes = b"1..32") -> Path:
    engine = folder / "model.int8.engine"
    engine.write_bytes(engine_bytes)
    (folder / "model.int8-tensorrt.onnx").write_bytes(b"qdq")
    (folder / "model.int8.engine.source.json").write_text(json.dumps({
        "engine": engine.name, "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(),
        "onnx": "model.int8-tensorrt.onnx", "onnx_sha256": hashlib.sha256(b"qdq").hexdigest(), "trt_major": trt_major}))
    return engine


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if "not portable" in line]


def test_an_engine_of_another_tensorrt_is_named_in_one_line(monkeypatch, tmp_path: Path, capsys) -> None:
    _fake_tensorrt(monkeypatch, 1, 32, "11.1.0")
    engine = _engine(tmp_path, 10)
    edge_runner.check_batches([engine], "tensorrt", [1, 8])  # deserialized for the check, then to be timed: said once
    edge_runner.TensorRTRunner(engine)
    said = _warnings(capsys.readouterr().err)
    assert len(said) == 1, said
    line = said[0]
    assert line.startswith(f"warning: {engine}: built with TensorRT 10 (its model.int8.engine.source.json), "
                           "loaded by TensorRT 11.1.0"), line
    assert f"cd {tmp_path} && ./build_engine.sh" in line


def test_an_engine_this_tensorrt_cannot_read_names_both_versions(monkeypatch, tmp_path: Path, capsys) -> None:
    _fake_tensorrt(monkeypatch, 1, 32, "10.3.0")
    trt = sys.modules["tensorrt"]

    class Runtime:  # as TensorRT answers an engine of another version: None (its own log says why)
        def __init__(self, logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> None:
            return None

    monkeypatch.setattr(trt, "Runtime", Runtime)
    engine = _engine(tmp_path, 11)
    with pytest.raises(edge_runner.RuntimeUnavailable) as e:
        edge_runner.TensorRTRunner(engine)
    message = str(e.value)
    assert "built with TensorRT 11" in message and "loaded by TensorRT 10.3.0" in message
    assert "not portable across versions" in message and "./build_engine.sh" in message
    assert edge_runner.main([str(engine), "--runtime", "tensorrt", "--iters", "1", "--warmup", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "built with TensorRT 11" in err[0], err


@pytest.mark.parametrize("case", ["same major", "no trt_major", "engine replaced since the build"])
def test_nothing_is_said_without_a_recorded_other_version(monkeypatch, tmp_path: Path, capsys, case: str) -> None:
    _fake_tensorrt(monkeypatch, 1, 32, "10.3.0")
    engine = _engine(tmp_path, 10 if case == "same major" else 11)
    sidecar = tmp_path / "model.int8.engine.source.json"
    if case == "no trt_major":  # a record written before it had one
        sidecar.write_text(json.dumps({k: v for k, v in json.loads(sidecar.read_text()).items() if k != "trt_major"}))
    if case == "engine replaced since the build":  # the record is another engine's: engine_source warns about that
        engine.write_bytes(b"1..16")
    edge_runner.TensorRTRunner(engine)
    assert _warnings(capsys.readouterr().err) == []
