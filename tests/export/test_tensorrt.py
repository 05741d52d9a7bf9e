"""TensorRT: QDQ placement of the tensorrt flavour and the generated build_engine.sh (no TensorRT here)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper

from distill.errors import DistillError
from distill.export import quantize as q
from distill.export.tensorrt import build_engine, tensorrt_available, trtexec_command


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


def test_build_script(export_dir: Path) -> None:
    script = export_dir / "build_engine.sh"
    text = script.read_text()
    assert script.stat().st_mode & 0o111
    shape = "3x32x32"
    int8 = next(line for line in text.splitlines() if "--onnx=model.int8-tensorrt.onnx" in line)
    for flag in ("--saveEngine=model.int8.engine", f"--minShapes=input:1x{shape}", f"--optShapes=input:8x{shape}",
                 f"--maxShapes=input:32x{shape}", "--timingCacheFile=timing.cache", "--memPoolSize=workspace:1024",
                 "--int8", "--fp16"):
        assert flag in int8.split(), flag
    fp16 = next(line for line in text.splitlines() if "--saveEngine=model.fp16.engine" in line)
    assert "--onnx=model.fp32.onnx" in fp16 and "--fp16" in fp16.split() and "--int8" not in fp16.split()
    assert "ON THE TARGET DEVICE" in text and "TensorRT version" in text and "/usr/src/tensorrt/bin/trtexec" in text
    if shutil.which("bash"):
        subprocess.run(["bash", "-n", str(script)], check=True)


def test_trtexec_command() -> None:
    cmd = trtexec_command("m.onnx", "m.engine", "fp16", "input", (3, 224, 224), (1, 4, 16), "tc.cache", 2048, "trtexec")
    assert cmd == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine", "--minShapes=input:1x3x224x224",
                   "--optShapes=input:4x3x224x224", "--maxShapes=input:16x3x224x224", "--timingCacheFile=tc.cache",
                   "--memPoolSize=workspace:2048", "--fp16"]
    assert "--fp16" not in trtexec_command("m.onnx", "e", "fp32", "input", (3, 8, 8))
    with pytest.raises(DistillError):
        trtexec_command("m.onnx", "e", "int4", "input", (3, 8, 8))
    with pytest.raises(DistillError):
        trtexec_command("m.onnx", "e", "fp16", "input", (3, 8, 8), (8, 1, 32))


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed: the engine path is exercised instead")
def test_build_engine_without_tensorrt_is_one_line(export_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DistillError, match="build_engine.sh") as e:
        build_engine(export_dir / "model.fp32.onnx", tmp_path / "e.engine", "fp16", "input", (3, 32, 32))
    assert "\n" not in str(e.value)
