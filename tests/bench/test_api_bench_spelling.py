"""``distill.api.bench`` names its options as a Python caller spelled them (``runtime=torch``, ``iters``), as the
other API functions do (:mod:`distill.spelling`); ``distill bench`` still names its flags (``--runtime torch``).

Before: bench's checks named the command's flags (``--runtime``, ``--iters``, ``--device``...) to a Python caller,
who passed no flag.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import distill.bench.edge_runner as edge_runner
from distill import api
from distill.cli import main
from distill.errors import DistillError, DistillWarning


@pytest.mark.parametrize(("keywords", "said"), [
    ({"runtime": "torch"}, "small.fp32.onnx: runtime=torch runs a checkpoint folder, not an ONNX file"),
    ({"runtime": "tpu"}, "runtime: unknown runtime 'tpu' (have: "),
    ({"iters": 0}, "iters must be >= 1 (got 0)"),
    ({"warmup": -1}, "warmup must be >= 0 (got -1)"),
    ({"topk": 0}, "topk must be >= 1 (got 0)"),
    ({"threads": 0}, "threads must be >= 1, or left out for the runtime's choice (got 0)"),
    ({"device": "cpu"}, "device, precision, compile and memory_format apply to runtime=torch only"),
])
def test_the_api_names_its_keywords(small_onnx: Path, keywords: dict, said: str) -> None:
    with pytest.raises(DistillError) as e:
        api.bench(small_onnx, **keywords)
    message = str(e.value)
    assert said in message and "--" not in message, message


def test_the_api_names_the_torch_options_as_keywords(small_checkpoint: Path) -> None:
    with pytest.raises(DistillError) as e:
        api.bench(small_checkpoint, compile="fast")
    assert str(e.value) == "compile='fast': use one of none, default, reduce-overhead, max-autotune"
    with pytest.raises(DistillError) as e:
        api.bench(small_checkpoint, memory_format="nhwc")
    assert str(e.value).startswith("memory_format='nhwc': use one of ")


def test_the_threads_warning_names_the_keyword(small_onnx: Path, monkeypatch) -> None:
    monkeypatch.setattr(edge_runner, "usable_cores", lambda: 1)
    with pytest.warns(DistillWarning) as caught:
        api.bench(small_onnx, threads=2, warmup=0, iters=1)
    (warning,) = [str(w.message) for w in caught if issubclass(w.category, DistillWarning)]
    assert warning.startswith("threads=2 is more than the 1 core(s) this process may use") and \
        warning.endswith("pass threads=1 or fewer"), warning


def test_the_command_still_names_its_flags(small_onnx: Path, capsys) -> None:
    assert main(["bench", str(small_onnx), "--runtime", "torch"]) == 1
    assert capsys.readouterr().err.strip() == \
        f"error: {small_onnx}: --runtime torch runs a checkpoint folder, not an ONNX file"
    assert main(["bench", str(small_onnx), "--iters", "0"]) == 1
    assert capsys.readouterr().err.strip() == "error: --iters must be >= 1 (got 0)"


def test_the_commands_flag_table_has_every_keyword() -> None:
    from distill.cli.bench import FLAGS

    assert set(FLAGS) == set(inspect.signature(api.bench).parameters) - {"models"}
    assert FLAGS["memory_format"] == "--memory-format"


def test_the_fixed_batch_refusal_names_the_keyword(small_onnx: Path, tmp_path: Path) -> None:
    """``api.bench`` of a fixed-batch ONNX at another batch said ``--batch 8`` (review 1, finding 5)."""
    import onnx

    model = onnx.load(str(small_onnx))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    fixed = tmp_path / "fixed.onnx"
    onnx.save(model, str(fixed))
    with pytest.raises(DistillError) as e:
        api.bench(fixed, batch=[1, 8], warmup=0, iters=1)
    assert str(e.value) == (f"{fixed}: input 'input' has a fixed batch of 1; batch=8 cannot run (export with a "
                            "dynamic batch, or use batch=1)")


def test_the_engine_batch_refusals_name_the_keyword() -> None:
    """The engine's fixed batch and optimization profile, as ``api.bench`` checks them (``flag``)."""
    from distill.spelling import option

    with pytest.raises(edge_runner.RuntimeUnavailable, match=r"fixed batch of 1; batch=8 cannot run$"):
        edge_runner.engine_batch_shape("m.engine", "x", [1, 3, 8, 8], None, 8, option)
    with pytest.raises(edge_runner.RuntimeUnavailable, match=r"^m\.engine: batch=8 is outside the engine's "):
        edge_runner.engine_batch_shape("m.engine", "x", [-1, 3, 8, 8], (1, 4), 8, option)
    with pytest.raises(edge_runner.RuntimeUnavailable, match=r"^m\.engine: --batch 8 is outside"):  # the runner's
        edge_runner.engine_batch_shape("m.engine", "x", [-1, 3, 8, 8], (1, 4), 8)


def test_the_torch_profile_note_names_the_keyword(small_checkpoint: Path) -> None:
    """A torch record's note said ``--profile`` to ``api.bench(..., profile=True)`` (review 1, finding 5)."""
    records = api.bench(small_checkpoint, runtime="torch", profile=True, warmup=0, iters=1, threads=1)
    assert [getattr(r, "note", None) for r in records] == ["profile reports onnxruntime op times; not available for runtime torch"]
