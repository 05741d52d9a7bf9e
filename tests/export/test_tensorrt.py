"""TensorRT: QDQ placement of the tensorrt flavour, trtexec commands, and the Python builder on TensorRT 10
and 11 (a fake ``tensorrt`` module: no TensorRT here). The generated script: test_tensorrt_script.py."""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import numpy_helper

from distill.bench import edge_runner
from distill.errors import DistillError
from distill.export import quantize as q
from distill.export.tensorrt import build_engine, engine_source, tensorrt_available, tensorrt_major, trtexec_command


def test_tensorrt_flavour_qdq_placement(export_dir: Path) -> None:
    path = export_dir / "model.int8-tensorrt.onnx"
    assert q.tensorrt_qdq_problems(path) == []
    rows = q.qdq_report(path)
    assert {r["op_type"] for r in rows} >= {"Conv", "Gemm"}
    for r in rows:  # every Conv/Gemm: activation and weight through an int8, zero-point-0 DequantizeLinear
        for inp in r["inputs"]:
            assert inp["dequantized"], (r["node"], inp["role"])
            assert inp["zero_point_dtype"] == "int8" and inp["zero_points"] == [0], (r["node"], inp)
        assert r["inputs"][1]["int_range"][0] >= -127  # TensorRT's weight range [-127, 127]
    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:  # no int32 bias DQ, no uint8 anywhere
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits:
            assert numpy_helper.to_array(inits[n.input[2]]).dtype.name == "int8"
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            assert inits[n.input[0]].data_type != onnx.TensorProto.INT32


def test_ort_cpu_flavour_fails_the_tensorrt_check(export_dir: Path) -> None:
    problems = q.tensorrt_qdq_problems(export_dir / "model.int8-ort-cpu.onnx")
    assert problems and any("uint8" in p for p in problems)  # u8 activations: fast on CPU, wrong for TensorRT
    assert any("int32" in p for p in problems)  # and a quantized bias


def test_trtexec_command() -> None:
    cmd = trtexec_command("m.onnx", "m.engine", "fp16", "input", (3, 224, 224), (1, 4, 16), "tc.cache", 2048, "trtexec")
    assert cmd == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine", "--minShapes=input:1x3x224x224",
                   "--optShapes=input:4x3x224x224", "--maxShapes=input:16x3x224x224", "--timingCacheFile=tc.cache",
                   "--memPoolSize=workspace:2048", "--skipInference", "--fp16"]
    for typed in (False, True):  # fp32 means fp32: TF32 (on by default in trtexec 10 and 11) off
        assert "--fp16" not in trtexec_command("m.onnx", "e", "fp32", "input", (3, 8, 8), typed=typed)
        assert trtexec_command("m.onnx", "e", "fp32", "input", (3, 8, 8), typed=typed)[-1] == "--noTF32"
        for precision in ("fp16", "int8"):
            assert "--noTF32" not in trtexec_command("m.onnx", "e", precision, "input", (3, 8, 8), typed=typed)
    with pytest.raises(DistillError):
        trtexec_command("m.onnx", "e", "int4", "input", (3, 8, 8))
    with pytest.raises(DistillError):
        trtexec_command("m.onnx", "e", "fp16", "input", (3, 8, 8), (8, 1, 32))


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed: the engine path is exercised instead")
def test_build_engine_without_tensorrt_is_one_line(export_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DistillError, match="build_engine.sh") as e:
        build_engine(export_dir / "model.fp32.onnx", tmp_path / "e.engine", "fp16", "input", (3, 32, 32))
    assert "\n" not in str(e.value)


def test_trtexec_command_strongly_typed() -> None:
    """TensorRT 11's trtexec has no --int8/--fp16/--best/--calib: the typed command carries none, nor
    --stronglyTyped ("[Deprecated] ... This flag is a no-op" in trtexec 11.0/11.1's help)."""
    for precision in ("fp32", "fp16", "int8"):
        cmd = trtexec_command("m.onnx", "e", precision, "input", (3, 8, 8), typed=True)
        assert "--stronglyTyped" not in cmd
        assert not {"--int8", "--fp16", "--best"} & set(cmd) and not any(a.startswith("--calib") for a in cmd)
    assert trtexec_command("m.onnx", "e", "int8", "input", (3, 8, 8))[-2:] == ["--int8", "--fp16"]  # TensorRT 10


def test_tensorrt_major() -> None:
    assert tensorrt_major("10.3.0.30") == 10 and tensorrt_major("11.0.0") == 11
    for bad, match in (("8.6.1", "too old"), ("dev", "does not parse")):
        with pytest.raises(DistillError, match=match) as e:
            tensorrt_major(bad)
        assert "\n" not in str(e.value) and "6.x" not in str(e.value)  # JetPack 6.0 shipped 8.6
    with pytest.raises(DistillError, match=r"JetPack 6\.1 and 6\.2 ship 10\.3"):
        tensorrt_major("8.6.2")
    entry = {"onnx": "model.fp32.onnx", "onnx_strongly_typed": "model.fp16.onnx"}
    assert (engine_source(entry, 10), engine_source(entry, 11)) == ("model.fp32.onnx", "model.fp16.onnx")


# ---------------------------------------------------------------- the Python builder, on a fake tensorrt
def fake_tensorrt(version: str, calls: dict[str, Any]) -> types.ModuleType:
    """A ``tensorrt`` module with the API surface build_engine uses, recording what it is asked.

    10.x has ``BuilderFlag.FP16/INT8`` and ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` (0, ignored)
    and ``STRONGLY_TYPED`` (1); 11.x keeps only ``STRONGLY_TYPED`` (0) and has no FP16/INT8 builder flag,
    so touching one raises AttributeError as the real 11 does.
    """
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    eleven = version.startswith("11.")
    trt.NetworkDefinitionCreationFlag = (types.SimpleNamespace(STRONGLY_TYPED=0) if eleven
                                         else types.SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1))
    trt.BuilderFlag = (types.SimpleNamespace(TF32=1, SPARSE_WEIGHTS=2) if eleven
                       else types.SimpleNamespace(FP16=0, INT8=1, TF32=2))
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    calls.update(network_flags=[], builder_flags=[], cleared_flags=[], parsed=[], profiles=[])

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            pass

    class Cache:
        def serialize(self) -> bytes:
            return b"timing"

    class Config:
        def set_memory_pool_limit(self, pool: int, size: int) -> None:
            calls["workspace"] = size

        def set_flag(self, flag: int) -> None:
            calls["builder_flags"].append(flag)

        def clear_flag(self, flag: int) -> None:
            calls["cleared_flags"].append(flag)

        def add_optimization_profile(self, profile: Any) -> None:
            calls["profiles"].append(profile.shapes)

        def create_timing_cache(self, blob: bytes) -> Cache:
            return Cache()

        def set_timing_cache(self, cache: Cache, ignore_mismatch: bool) -> None:
            pass

        def get_timing_cache(self) -> Cache:
            return Cache()

    class Profile:
        def set_shape(self, name: str, *shapes: tuple[int, ...]) -> None:
            self.shapes = (name, shapes)

    class Builder:
        def __init__(self, logger: Logger) -> None:
            pass

        def create_network(self, flags: int = 0) -> object:
            calls["network_flags"].append(flags)
            return object()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: object, config: Config) -> bytes:
            return b"engine"

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: object, logger: Logger) -> None:
            pass

        def parse(self, blob: bytes) -> bool:
            calls["parsed"].append(len(blob))
            return True

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
    return trt


@pytest.fixture
def with_tensorrt(monkeypatch: pytest.MonkeyPatch):
    def install(version: str) -> dict[str, Any]:
        calls: dict[str, Any] = {}
        monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(version, calls))
        return calls
    return install


def _build(export_dir: Path, tmp_path: Path, onnx_file: str, precision: str) -> Path:
    return build_engine(export_dir / onnx_file, tmp_path / f"{precision}.engine", precision, "input", (3, 32, 32),
                        (1, 8, 32), tmp_path / "timing.cache", 512)


def test_build_engine_on_tensorrt_10_sets_the_precision_flags(export_dir: Path, tmp_path: Path, with_tensorrt) -> None:
    calls = with_tensorrt("10.3.0.30")  # JetPack 6.2
    engine = _build(export_dir, tmp_path, "model.int8-tensorrt.onnx", "int8")
    assert engine.read_bytes() == b"engine" and (tmp_path / "timing.cache").read_bytes() == b"timing"
    assert calls["network_flags"] == [0] and sorted(calls["builder_flags"]) == [0, 1]  # weakly typed, FP16 + INT8
    assert calls["profiles"] == [("input", ((1, 3, 32, 32), (8, 3, 32, 32), (32, 3, 32, 32)))]
    assert calls["workspace"] == 512 << 20
    _build(export_dir, tmp_path, "model.fp32.onnx", "fp16")  # fp16 from the fp32 ONNX with the FP16 flag
    assert calls["network_flags"][-1] == 0 and calls["builder_flags"][-1:] == [0]


def test_build_engine_on_tensorrt_11_is_strongly_typed(export_dir: Path, tmp_path: Path, with_tensorrt) -> None:
    calls = with_tensorrt("11.0.0.114")
    _build(export_dir, tmp_path, "model.int8-tensorrt.onnx", "int8")  # int8 from the Q/DQ nodes
    _build(export_dir, tmp_path, "model.fp16.onnx", "fp16")           # fp16 from the fp16 ONNX
    _build(export_dir, tmp_path, "model.fp32.onnx", "fp32")
    assert calls["network_flags"] == [0] * 3  # no STRONGLY_TYPED: deprecated and ignored in 11 (always typed)
    assert calls["builder_flags"] == [] and len(calls["parsed"]) == 3
    with pytest.raises(DistillError, match="fp16 only from an fp16 ONNX") as e:  # no silent fp32 "fp16" engine
        _build(export_dir, tmp_path, "model.fp32.onnx", "fp16")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("version,tf32", [("10.3.0.30", 2), ("11.1.0.106", 1)])
def test_the_fp32_engine_is_built_without_tf32(export_dir: Path, tmp_path: Path, with_tensorrt, version: str,
                                              tf32: int) -> None:
    """BuilderFlag.TF32 is on by default (NvInfer.h, 10.3 and 11.1): an "fp32" engine would run its convolutions
    in TF32 on Ampere and newer (Orin). The fp32 build clears it; fp16/int8 builds leave it alone."""
    calls = with_tensorrt(version)
    _build(export_dir, tmp_path, "model.fp32.onnx", "fp32")
    assert calls["cleared_flags"] == [tf32]
    _build(export_dir, tmp_path, "model.int8-tensorrt.onnx", "int8")
    assert calls["cleared_flags"] == [tf32]


@pytest.mark.parametrize("version", ["10.3.0", "11.0.0"])
def test_int8_engine_needs_a_qdq_model(export_dir: Path, tmp_path: Path, with_tensorrt, version: str) -> None:
    with_tensorrt(version)
    with pytest.raises(DistillError, match="QDQ model") as e:
        _build(export_dir, tmp_path, "model.fp32.onnx", "int8")
    assert "\n" not in str(e.value) and "model.fp32.onnx" in str(e.value)


@pytest.mark.parametrize("version", ["8.6.1", "7.2.3.4"])
def test_build_engine_refuses_tensorrt_older_than_10(export_dir: Path, tmp_path: Path, with_tensorrt,
                                                     version: str) -> None:
    calls = with_tensorrt(version)
    with pytest.raises(DistillError, match=f"TensorRT {version} is too old") as e:
        _build(export_dir, tmp_path, "model.fp32.onnx", "fp32")
    assert "\n" not in str(e.value) and calls["network_flags"] == []


@pytest.mark.parametrize("version,fp16_source", [("10.3.0", "model.fp32.onnx"), ("11.0.0", "model.fp16.onnx")])
def test_export_builds_each_engine_from_its_versions_source(run_ckpt: Path, tmp_path: Path, with_tensorrt,
                                                            monkeypatch: pytest.MonkeyPatch, version: str,
                                                            fp16_source: str) -> None:
    from distill.export import ExportConfig, export_checkpoint, pipeline

    calls = with_tensorrt(version)
    built: list[tuple[str, str]] = []
    real = pipeline.build_engine

    def spy(onnx_path: Path, engine_path: Path, precision: str, *args: Any) -> Path:
        built.append((Path(onnx_path).name, precision))
        return real(onnx_path, engine_path, precision, *args)

    monkeypatch.setattr(pipeline, "build_engine", spy)
    rep = export_checkpoint(run_ckpt, tmp_path / "exp", ExportConfig(precisions=("fp32", "fp16"), latency_iters=1,
                                                                     threads=1), log=lambda s: None)
    assert built == [("model.fp32.onnx", "fp32"), (fp16_source, "fp16")]
    assert calls["builder_flags"] == ([] if version.startswith("11") else [0])
    assert rep.tensorrt["built_here"] and rep.tensorrt["tensorrt_version"] == version
    assert {"model.fp32.engine", "model.fp16.engine", "timing.cache"} <= set(rep.files)


def test_export_with_a_too_old_tensorrt_warns_and_writes_the_script(run_ckpt: Path, tmp_path: Path,
                                                                     with_tensorrt) -> None:
    from distill.export import ExportConfig, export_checkpoint

    calls = with_tensorrt("8.6.1")  # JetPack 5: the export finishes, the device runs build_engine.sh
    rep = export_checkpoint(run_ckpt, tmp_path / "exp", ExportConfig(precisions=("fp32",), latency_iters=1, threads=1),
                            log=lambda s: None)
    assert rep.status == "ok" and not rep.tensorrt["built_here"] and calls["network_flags"] == []
    assert any("not building engines here: TensorRT 8.6.1 is too old" in w for w in rep.warnings)
    assert (tmp_path / "exp" / "build_engine.sh").exists() and (tmp_path / "exp" / "export.json").exists()


@pytest.mark.parametrize("version", ["10.3.0.30", "11.1.0.106"])
def test_build_engine_records_the_onnx_it_built_from_as_build_engine_sh_does(export_dir: Path, tmp_path: Path,
                                                                             with_tensorrt, version: str) -> None:
    """Review 3 finding 2: ENGINE.source.json beside the engine, so the edge runner names the bytes it was built
    from, not an ONNX copied over the folder later."""
    with_tensorrt(version)
    onnx = Path(shutil.copyfile(export_dir / "model.int8-tensorrt.onnx", tmp_path / "model.int8-tensorrt.onnx"))
    built_from = hashlib.sha256(onnx.read_bytes()).hexdigest()
    engine = build_engine(onnx, tmp_path / "model.int8.engine", "int8", "input", (3, 32, 32), (1, 8, 32),
                          tmp_path / "timing.cache", 512)
    record = json.loads((tmp_path / "model.int8.engine.source.json").read_text())
    assert record == {"engine": "model.int8.engine", "engine_sha256": hashlib.sha256(b"engine").hexdigest(),
                      "onnx": "model.int8-tensorrt.onnx", "onnx_sha256": built_from, "trt_major": int(version[:2]),
                      "trt_version": version}  # the full version too: engines are not portable across minor versions
    onnx.write_bytes(b"copied over since")
    assert edge_runner.engine_source(engine, int(version[:2])) == {"onnx": "model.int8-tensorrt.onnx",
                                                                   "sha256": built_from}
