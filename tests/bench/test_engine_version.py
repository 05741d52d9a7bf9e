"""An engine's ``ENGINE.source.json`` records the TensorRT version that built it (``trt_version``, and its major,
``trt_major``, alone in older records); the runner compares it with the TensorRT loading the engine and says so in one
line when they differ (issue 21, item 2): TensorRT engines are not portable across versions, minor ones included.
The fake tensorrt of test_runner_checks stands in for TensorRT."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

import distill.bench.edge_runner as edge_runner
from tests.bench.test_runner_checks import _fake_tensorrt


def _engine(folder: Path, trt_major: int, engine_bytes: bytes = b"1..32", trt_version: str | None = None) -> Path:
    engine = folder / "model.int8.engine"
    engine.write_bytes(engine_bytes)
    (folder / "model.int8-tensorrt.onnx").write_bytes(b"qdq")
    (folder / "model.int8.engine.source.json").write_text(json.dumps({
        "engine": engine.name, "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(),
        "onnx": "model.int8-tensorrt.onnx", "onnx_sha256": hashlib.sha256(b"qdq").hexdigest(), "trt_major": trt_major,
        **({"trt_version": trt_version} if trt_version else {})}))
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


def _unreadable(monkeypatch) -> None:
    trt = sys.modules["tensorrt"]

    class Runtime:  # as TensorRT answers an engine of another version: None (its own log says why)
        def __init__(self, logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> None:
            return None

    monkeypatch.setattr(trt, "Runtime", Runtime)


def test_an_engine_of_another_minor_version_is_named_with_both_full_versions(monkeypatch, tmp_path: Path,
                                                                            capsys) -> None:
    """A 10.3 engine loaded by 10.7: the majors agree, but engines are not portable across minor versions either
    (unless built version-compatible, when it loads: a warning naming both full versions)."""
    _fake_tensorrt(monkeypatch, 1, 32, "10.7.0.23")
    engine = _engine(tmp_path, 10, trt_version="10.3.0")
    edge_runner.TensorRTRunner(engine)
    said = _warnings(capsys.readouterr().err)
    assert len(said) == 1, said
    assert said[0].startswith(f"warning: {engine}: built with TensorRT 10.3.0 (its model.int8.engine.source.json), "
                              "loaded by TensorRT 10.7.0.23"), said[0]
    assert f"cd {tmp_path} && ./build_engine.sh" in said[0]


def test_an_engine_of_another_minor_version_that_does_not_deserialize_is_an_error(monkeypatch, tmp_path: Path,
                                                                                 capsys) -> None:
    _fake_tensorrt(monkeypatch, 1, 32, "10.7.0")
    _unreadable(monkeypatch)
    engine = _engine(tmp_path, 10, trt_version="10.3.0.30")
    assert edge_runner.main([str(engine), "--runtime", "tensorrt", "--iters", "1", "--warmup", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "built with TensorRT 10.3.0.30" in err[0] and "loaded by TensorRT 10.7.0" in err[0], err
    assert "not portable across versions" in err[0] and "./build_engine.sh" in err[0], err


def test_an_engine_this_tensorrt_cannot_read_names_both_versions(monkeypatch, tmp_path: Path, capsys) -> None:
    _fake_tensorrt(monkeypatch, 1, 32, "10.3.0")
    _unreadable(monkeypatch)
    engine = _engine(tmp_path, 11)
    with pytest.raises(edge_runner.RuntimeUnavailable) as e:
        edge_runner.TensorRTRunner(engine)
    message = str(e.value)
    assert "built with TensorRT 11" in message and "loaded by TensorRT 10.3.0" in message
    assert "not portable across versions" in message and "./build_engine.sh" in message
    assert edge_runner.main([str(engine), "--runtime", "tensorrt", "--iters", "1", "--warmup", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "built with TensorRT 11" in err[0], err


@pytest.mark.parametrize("case", ["same major", "no trt_major", "engine replaced since the build",
                                  "same version, the bindings naming its build number"])
def test_nothing_is_said_without_a_recorded_other_version(monkeypatch, tmp_path: Path, capsys, case: str) -> None:
    _fake_tensorrt(monkeypatch, 1, 32, "10.3.0.30" if "bindings" in case else "10.3.0")
    if "bindings" in case:  # trtexec's banner "[TensorRT v100300]" says 10.3.0; the bindings say 10.3.0.30
        engine = _engine(tmp_path, 10, trt_version="10.3.0")
    else:
        engine = _engine(tmp_path, 10 if case == "same major" else 11)
    sidecar = tmp_path / "model.int8.engine.source.json"
    if case == "no trt_major":  # a record written before it had one
        sidecar.write_text(json.dumps({k: v for k, v in json.loads(sidecar.read_text()).items() if k != "trt_major"}))
    if case == "engine replaced since the build":  # the record is another engine's: engine_source warns about that
        engine.write_bytes(b"1..16")
    edge_runner.TensorRTRunner(engine)
    assert _warnings(capsys.readouterr().err) == []
