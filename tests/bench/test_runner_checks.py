"""Batch vs the model's input, TensorRT profile range, ort-trt precision options (QA findings 3 and 5)."""
from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import onnx
import pytest

import distill.bench.edge_runner as edge_runner


def test_a_fixed_batch_onnx_refuses_another_batch_in_one_line(small_onnx: Path, tmp_path: Path, capsys) -> None:
    model = onnx.load(str(small_onnx))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    fixed = tmp_path / "fixed1.onnx"
    onnx.save(model, str(fixed))
    assert edge_runner.main([str(fixed), "--batch", "1,8", "--iters", "1", "--warmup", "0", "--threads", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fixed1.onnx" in err[0] and "fixed batch of 1" in err[0] and "--batch 8" in err[0], err


def _fake_tensorrt(monkeypatch, lo: int, hi: int, version: str = "10.3.0") -> dict[str, Any]:
    """A tensorrt (TensorRT 10 or 11: the tensor API the runner uses is bound alike in both) whose engines have the
    optimization profile ``lo..hi``, or the one an engine file names (``b"lo..hi"``). Returns counters: engines
    deserialized, alive now, most alive at once."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    seen: dict[str, Any] = {"deserialized": 0, "alive": 0, "peak": 0}

    class Logger:
        WARNING = 2

        def __init__(self, level: Any = None) -> None:
            pass

    class Ctx:
        def __init__(self, lo: int, hi: int) -> None:
            self.lo, self.hi = lo, hi

        def set_input_shape(self, name: str, shape: tuple) -> bool:
            return self.lo <= shape[0] <= self.hi

    class Engine:
        num_io_tensors = 2

        def __init__(self, lo: int, hi: int) -> None:
            self.lo, self.hi = lo, hi
            seen["deserialized"] += 1
            seen["alive"] += 1
            seen["peak"] = max(seen["peak"], seen["alive"])

        def __del__(self) -> None:
            seen["alive"] -= 1

        def get_tensor_name(self, i: int) -> str:
            return ["input", "logits"][i]

        def get_tensor_mode(self, n: str) -> int:
            return 1 if n == "input" else 2

        def get_tensor_shape(self, n: str) -> tuple:
            return (-1, 3, 32, 32) if n == "input" else (-1, 10)

        def get_tensor_profile_shape(self, n: str, profile: int) -> list[tuple]:
            return [(self.lo, 3, 32, 32), (self.lo, 3, 32, 32), (self.hi, 3, 32, 32)]

        def create_execution_context(self) -> Ctx:
            return Ctx(self.lo, self.hi)

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Engine:
            a, sep, b = data.decode().partition("..")
            return Engine(int(a), int(b)) if sep else Engine(lo, hi)

    trt.Logger, trt.Runtime = Logger, Runtime
    trt.TensorIOMode = types.SimpleNamespace(INPUT=1, OUTPUT=2)
    cudart = types.ModuleType("cuda.bindings.runtime")
    cudart.cudaStreamCreate = lambda: (0, object())
    cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    bindings.runtime, cuda.bindings = cudart, bindings
    for name, mod in (("tensorrt", trt), ("cuda", cuda), ("cuda.bindings", bindings), ("cuda.bindings.runtime", cudart)):
        monkeypatch.setitem(sys.modules, name, mod)
    return seen


@pytest.mark.parametrize("version", ["10.3.0", "11.1.0"])
def test_tensorrt_batch_outside_the_profile_is_named(monkeypatch, tmp_path: Path, version: str) -> None:
    _fake_tensorrt(monkeypatch, 1, 32, version)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"fake")
    runner = edge_runner.TensorRTRunner(engine)
    assert runner.input_shape(8) == [8, 3, 32, 32]
    with pytest.raises(edge_runner.RuntimeUnavailable, match=r"--batch 64 .*profile \(batch 1\.\.32\)"):
        runner.input_shape(64)


def _fake_onnxruntime(monkeypatch, precision: str | None) -> list[Any]:
    """An onnxruntime with the TensorRT EP; returns the providers each session was made with."""
    made: list[Any] = []
    ort = types.ModuleType("onnxruntime")
    ort.__version__ = "1.20.0"
    ort.get_available_providers = lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                           "CPUExecutionProvider"]

    class SessionOptions:
        def add_session_config_entry(self, k: str, v: str) -> None:
            pass

    class InferenceSession:
        def __init__(self, path: str, so: Any, providers: list[Any]) -> None:
            made.append(providers)
            self.names = [p if isinstance(p, str) else p[0] for p in providers]

        def get_providers(self) -> list[str]:
            return self.names

        def get_inputs(self) -> list[Any]:
            return [types.SimpleNamespace(name="input", shape=["batch", 3, 32, 32])]

        def get_modelmeta(self) -> Any:
            return types.SimpleNamespace(custom_metadata_map={"distill.precision": precision} if precision else {})

    ort.SessionOptions, ort.InferenceSession = SessionOptions, InferenceSession
    ort.ExecutionMode = types.SimpleNamespace(ORT_SEQUENTIAL=0)
    ort.GraphOptimizationLevel = types.SimpleNamespace(ORT_DISABLE_ALL=0)
    monkeypatch.setitem(sys.modules, "onnxruntime", ort)
    return made


@pytest.mark.parametrize(("precision", "fp16", "int8"), [("fp32", False, False), ("fp16", True, False),
                                                          ("int8", True, True), (None, False, False)])
def test_ort_trt_precision_flags_follow_the_models_precision(monkeypatch, tmp_path: Path, precision: str | None,
                                                             fp16: bool, int8: bool) -> None:
    made = _fake_onnxruntime(monkeypatch, precision)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    runner = edge_runner.OrtRunner(model, "ort-trt")
    name, opts = made[-1][0]
    assert name == "TensorrtExecutionProvider"
    assert (opts["trt_fp16_enable"], opts["trt_int8_enable"]) == (fp16, int8)
    assert runner.provider_options is opts


def test_ort_trt_options_are_noted_in_the_record(tmp_path: Path) -> None:
    class Runner:
        path, meta, runtime, providers, threads = tmp_path / "m.onnx", {}, "ort-trt", ["TensorrtExecutionProvider"], 1
        provider_options = {"trt_fp16_enable": False, "trt_int8_enable": False, "trt_engine_cache_enable": True}

        def input_shape(self, b: int) -> list[int]:
            return [b, 3]

        def run(self, x: Any) -> None:
            pass

    rec = edge_runner.bench_runners([Runner()], [1], 0, 2)[0]
    assert rec["note"] == "TensorrtExecutionProvider trt_fp16_enable=False, trt_int8_enable=False"


def test_ort_trt_cache_falls_back_when_the_model_folder_is_not_writable(monkeypatch, tmp_path: Path, capsys) -> None:
    made = _fake_onnxruntime(monkeypatch, "fp32")
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    (tmp_path / "trt_cache").write_text("not a folder")  # mkdir fails, as in a read-only model folder
    edge_runner.OrtRunner(model, "ort-trt")
    cache = Path(made[-1][0][1]["trt_engine_cache_path"])
    assert cache.is_dir() and cache != tmp_path / "trt_cache"
    assert "warning: cannot write the TensorRT cache folder" in capsys.readouterr().err
