"""An int8 file timed on a runtime it was not made for says so in one line (QA H finding 11): the ort-cpu flavour
(uint8 asymmetric activations) on ort-trt, the tensorrt flavour on ort-cpu. The flavour is the file's
``distill.int8_flavour`` metadata, else its name (``model.int8-ort-cpu.onnx``)."""
from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest

import distill.bench.edge_runner as edge_runner
from distill.bench.run import bench_model
from distill.errors import DistillWarning
from distill.export.onnx import stamp


def _int8(small_onnx: Path, folder: Path, flavour: str, name: str = "student.onnx") -> Path:
    """``small_onnx`` with the metadata an int8 export stamps (the graph stays float: only the metadata is read)."""
    path = Path(shutil.copyfile(small_onnx, folder / name))
    stamp(path, {"distill.precision": "int8", "distill.int8_flavour": flavour, "distill.target_runtime": flavour})
    return path


@pytest.mark.parametrize(("flavour", "runtime", "says"), [
    ("ort-cpu", "ort-trt", "an int8 file of the ort-cpu flavour"), ("tensorrt", "ort-cpu", "of the tensorrt flavour"),
    ("tensorrt", "ort-trt", None), ("ort-cpu", "ort-cpu", None),
    # issue 21 item 3: no flavour is made for ort-cuda (its EP runs Q/DQ around float kernels): both are said
    ("ort-cpu", "ort-cuda", "an int8 file (the ort-cpu flavour) on ort-cuda"),
    ("tensorrt", "ort-cuda", "an int8 file (the tensorrt flavour) on ort-cuda")])
def test_flavour_warning_from_the_metadata(small_onnx: Path, tmp_path: Path, flavour: str, runtime: str,
                                           says: str | None) -> None:
    path = _int8(small_onnx, tmp_path, flavour)  # a neutral name: the metadata decides
    warning = edge_runner.flavour_warning(path, runtime)
    assert (warning is None) == (says is None), warning
    if says:
        assert says in warning and str(path) in warning and "\n" not in warning


def test_fp32_file_and_name_fallback(small_onnx: Path, tmp_path: Path) -> None:
    assert edge_runner.flavour_warning(small_onnx, "ort-trt") is None  # fp32: nothing to say
    model = onnx.load(str(small_onnx))
    del model.metadata_props[:]  # a file whose metadata was stripped: its name still tells
    onnx.save(model, str(tmp_path / "model.int8-ort-cpu.onnx"))
    assert edge_runner.int8_flavour(tmp_path / "model.int8-ort-cpu.onnx") == "ort-cpu"
    assert "ort-cpu flavour" in (edge_runner.flavour_warning(tmp_path / "model.int8-ort-cpu.onnx", "ort-trt") or "")


def test_edge_runner_warns_before_timing(small_onnx: Path, tmp_path: Path, capsys) -> None:
    path = _int8(small_onnx, tmp_path, "tensorrt")
    assert edge_runner.main([str(path), "--runtime", "ort-cpu", "--iters", "1", "--warmup", "0", "--threads", "1",
                             "--out", str(tmp_path / "b.jsonl")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "tensorrt flavour" in warnings[0] and "model.int8-ort-cpu.onnx" in warnings[0]


def test_ort_trt_warns_before_it_loads(small_onnx: Path, tmp_path: Path, capsys) -> None:
    """Here (no TensorRT EP) the run then stops on the missing provider; the warning came first."""
    path = _int8(small_onnx, tmp_path, "ort-cpu")
    edge_runner.main([str(path), "--runtime", "ort-trt", "--iters", "1", "--warmup", "0"])
    err = capsys.readouterr().err.splitlines()
    assert err and err[0].startswith("warning: ") and "ort-cpu flavour" in err[0] and "ort-trt" in err[0], err


def test_distill_bench_warns_too(small_onnx: Path, tmp_path: Path) -> None:
    path = _int8(small_onnx, tmp_path, "tensorrt")
    with pytest.warns(DistillWarning, match="tensorrt flavour"):
        records = bench_model(path, "ort-cpu", (1,), threads=1, warmup=0, iters=1)
    assert len(records) == 1


def test_a_folders_files_are_timed_without_the_warning(small_onnx: Path, tmp_path: Path, monkeypatch,
                                                       recwarn) -> None:
    """An export folder made with ``--int8-flavour both`` holds a tensorrt-flavour file: ``distill bench EXPORT``
    times every file on ort-cpu, as asked, and says nothing about that one (only a file named by hand is warned)."""
    folder = tmp_path / "export"
    folder.mkdir()
    path = _int8(small_onnx, folder, "tensorrt", "model.int8-tensorrt.onnx")
    monkeypatch.setattr("distill.bench.run.resolve_models", lambda model, runtime: [(path, "ort-cpu")])
    records = bench_model(folder, "ort-cpu", (1,), threads=1, warmup=0, iters=1)
    assert len(records) == 1
    assert not [w for w in recwarn.list if "flavour" in str(w.message)]


def test_ort_cuda_warns_before_it_loads_and_not_for_a_float_file(small_onnx: Path, tmp_path: Path, capsys) -> None:
    """As ort-cpu and ort-trt do for a file named on the command line: the warning before the run (which here, with no
    CUDA EP, stops on the missing provider); an fp32 file gets none."""
    path = _int8(small_onnx, tmp_path, "tensorrt")
    edge_runner.main([str(path), "--runtime", "ort-cuda", "--iters", "1", "--warmup", "0"])
    err = capsys.readouterr().err.splitlines()
    assert err and err[0].startswith("warning: ") and "on ort-cuda" in err[0] and "not int8 latency" in err[0], err
    assert edge_runner.flavour_warning(small_onnx, "ort-cuda") is None


def test_ort_cuda_warning_says_what_the_cuda_ep_lacks(small_onnx: Path, tmp_path: Path) -> None:
    """Review 1 (L4): the CUDA EP does have QuantizeLinear/DequantizeLinear kernels; what it lacks is onnxruntime's
    QDQ fusion into int8 convolutions (registered for the CPU, DirectML and ACL EPs only)."""
    warning = edge_runner.flavour_warning(_int8(small_onnx, tmp_path, "ort-cpu"), "ort-cuda") or ""
    assert "no int8 Q/DQ" not in warning
    assert "runs the Q/DQ ops but does not fuse them into int8 convolution/MatMul kernels" in warning
