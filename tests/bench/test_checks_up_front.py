"""Several models timed one after another: every model's batches are checked before the first one is timed (a
fixed-batch ONNX given another --batch, an engine's optimization profile), by the edge runner and `distill bench`.
Before, each model was checked as it was opened, so a bad second model was found after the first one's timing."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import onnx
import pytest

import distill.bench.edge_runner as edge_runner
from distill.cli import main
from tests.bench.test_runner_checks import _fake_tensorrt

FAST = ["--warmup", "0", "--iters", "2", "--threads", "1"]


def _fixed_batch(small_onnx: Path, folder: Path, batch: int = 1) -> Path:
    model = onnx.load(str(small_onnx))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = batch
    path = folder / f"fixed{batch}.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("cli", ["edge_runner", "distill bench"])
def test_a_fixed_batch_second_onnx_is_refused_before_the_first_is_timed(small_onnx: Path, tmp_path: Path, capsys,
                                                                       cli: str) -> None:
    fixed = _fixed_batch(small_onnx, tmp_path)
    out = tmp_path / "bench.jsonl"
    argv = [str(small_onnx), str(fixed), "--batch", "1,8", *FAST, "--out", str(out)]
    assert (edge_runner.main(argv) if cli == "edge_runner" else main(["bench", *argv])) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fixed1.onnx" in err[0] and "fixed batch of 1" in err[0] and "--batch 8" in err[0], err
    assert not out.exists() or out.read_text() == ""  # nothing timed: small.fp32.onnx's records are not there


def test_the_onnx_input_is_read_without_the_onnx_package(small_onnx: Path, tmp_path: Path, monkeypatch) -> None:
    """On a device with onnxruntime only, the input comes from a CPU session (graph optimization off)."""
    fixed = _fixed_batch(small_onnx, tmp_path, 4)
    with_onnx = [edge_runner.onnx_input(p) for p in (small_onnx, fixed)]
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    assert [edge_runner.onnx_input(p) for p in (small_onnx, fixed)] == with_onnx
    assert with_onnx[1][1][0] == 4 and isinstance(with_onnx[0][1][0], str)  # fixed 4; a named dynamic batch
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(edge_runner.RuntimeUnavailable, match="bad.onnx: onnxruntime cannot load it"):
        edge_runner.check_batches([small_onnx, bad], "ort-cpu", [1])


@pytest.mark.parametrize("version", ["10.3.0", "11.1.0"])
def test_an_engine_whose_profile_misses_a_batch_is_refused_before_any_engine_is_timed(monkeypatch, tmp_path: Path,
                                                                                      capsys, version: str) -> None:
    """Each engine is deserialized once for the check and released before the next (one alive at a time)."""
    seen = _fake_tensorrt(monkeypatch, 1, 32, version)
    timed: list[Any] = []
    monkeypatch.setattr(edge_runner, "bench_runners", lambda *a, **k: timed.append(a) or [])
    good, small = tmp_path / "good.engine", tmp_path / "small.engine"
    good.write_bytes(b"1..32")
    small.write_bytes(b"1..4")
    assert edge_runner.main([str(good), str(small), "--runtime", "tensorrt", "--batch", "1,8", *FAST]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {small}: --batch 8 is outside the engine's optimization profile (batch 1..4); "
                   "rebuild the engine for it"], err
    assert timed == [] and seen["deserialized"] == 2 and seen["peak"] == 1 and seen["alive"] == 0
    edge_runner.check_batches([good, small], "tensorrt", [1, 4])  # batches both profiles take: no error


def test_a_model_the_runner_cannot_feed_is_refused_before_any_is_timed(small_onnx: Path, tmp_path: Path,
                                                                       capsys) -> None:
    """Review 1 L5: an ONNX file with two required inputs passed the check (the first model was timed, then the run
    failed at the second's first run), and an engine with dynamic height and width passed as [8, 3, -1, -1]."""
    from onnx import TensorProto, helper

    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 3, 8, 8]) for n in ("x", "y"))
    out = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 3, 8, 8])
    two = tmp_path / "two.onnx"
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Add", ["x", "y"], ["z"])], "g", [x, y], [out]),
                                opset_imports=[helper.make_opsetid("", 17)]), str(two))
    with pytest.raises(edge_runner.RuntimeUnavailable, match=r"two.onnx: 2 required inputs \('x', 'y'\); the runner "
                                                             "feeds one, the image batch"):
        edge_runner.check_batches([small_onnx, two], "ort-cpu", [1])
    assert edge_runner.main([str(small_onnx), str(two), "--batch", "1", *FAST]) == 1
    assert "small.fp32.onnx" not in capsys.readouterr().out  # nothing timed
    with pytest.raises(edge_runner.RuntimeUnavailable, match=r"has dynamic dims \[-1, 3, -1, -1\]"):
        edge_runner.engine_batch_shape("m.engine", "input", [-1, 3, -1, -1], (1, 32), 8)
    assert edge_runner.engine_batch_shape("m.engine", "input", [-1, 3, 32, 32], (1, 32), 8) == [8, 3, 32, 32]
