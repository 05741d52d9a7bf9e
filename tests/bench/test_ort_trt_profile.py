"""``--runtime ort-trt`` gives TensorRT's EP an explicit optimization profile covering the batches timed (issue 21,
item 1): without one, onnxruntime's TensorRT EP built an engine for the first batch and rebuilt it for each new batch
size of ``--batch 1,8,32``, inside that batch's timed warm-up. A fake onnxruntime records the provider options."""
from __future__ import annotations

from pathlib import Path

import pytest

import distill.bench.edge_runner as edge_runner
from tests.bench.test_runner_checks import _fake_onnxruntime

PROFILE_KEYS = ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")


def _options(made: list) -> dict:
    name, opts = made[-1][0]
    assert name == "TensorrtExecutionProvider"
    return opts


def test_the_profile_covers_every_batch_timed(monkeypatch, tmp_path: Path) -> None:
    made = _fake_onnxruntime(monkeypatch, "int8")  # input "input", shape [batch, 3, 32, 32]
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    runner = edge_runner.open_runner(model, "ort-trt", batches=[8, 1, 32])
    opts = _options(made)
    assert [opts[k] for k in PROFILE_KEYS] == ["input:1x3x32x32", "input:32x3x32x32", "input:32x3x32x32"]
    assert opts["trt_engine_cache_enable"] is True and opts["trt_int8_enable"] is True  # the cache as before
    runner.profiled()  # --profile's second session: the same profile, so the cached engine serves it
    assert [_options(made)[k] for k in PROFILE_KEYS] == [opts[k] for k in PROFILE_KEYS]


def test_one_batch_is_min_opt_and_max(monkeypatch, tmp_path: Path) -> None:
    made = _fake_onnxruntime(monkeypatch, "fp16")
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    edge_runner.OrtRunner(model, "ort-trt", batches=[8])
    assert {_options(made)[k] for k in PROFILE_KEYS} == {"input:8x3x32x32"}


def test_bench_file_passes_its_batches_and_the_record_notes_the_profile(monkeypatch, tmp_path: Path) -> None:
    """The note is the one bench_file's own records carry (review 1, L5: it was built by a stub in this test)."""
    made = _fake_onnxruntime(monkeypatch, "fp32")
    ran: list[tuple[int, ...]] = []
    session = edge_runner.sys.modules["onnxruntime"].InferenceSession
    monkeypatch.setattr(session, "run", lambda self, out, feed: ran.append(feed["input"].shape) or [], raising=False)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    records = edge_runner.bench_file(model, "ort-trt", (1, 4), warmup=0, iters=1)
    assert _options(made)["trt_profile_max_shapes"] == "input:4x3x32x32"
    assert (1, 3, 32, 32) in ran and (4, 3, 32, 32) in ran  # timed for real, through the fake session
    assert [r["batch"] for r in records] == [1, 4]
    profile = ("trt_profile_min_shapes=input:1x3x32x32, trt_profile_opt_shapes=input:4x3x32x32, "
               "trt_profile_max_shapes=input:4x3x32x32")
    assert all(profile in r["note"] for r in records), [r["note"] for r in records]


@pytest.mark.parametrize(("shape", "expected"), [
    (["batch", 3, 224, 224], {"trt_profile_min_shapes": "x:1x3x224x224", "trt_profile_opt_shapes": "x:8x3x224x224",
                              "trt_profile_max_shapes": "x:8x3x224x224"}),
    ([None, 3, 224, 224], {"trt_profile_min_shapes": "x:1x3x224x224", "trt_profile_opt_shapes": "x:8x3x224x224",
                           "trt_profile_max_shapes": "x:8x3x224x224"}),
    ([1, 3, 224, 224], {}),          # a fixed batch: a static input needs no profile
    (["batch", 3, "h", "w"], {}),    # dynamic height/width: refused at its batch by onnx_batch_shape, not here
])
def test_profile_shapes(shape: list, expected: dict) -> None:
    assert edge_runner.trt_profile_shapes("x", shape, [8, 1]) == expected


def test_the_record_notes_the_profile(tmp_path: Path) -> None:
    class Runner:
        path, meta, runtime, providers, threads = tmp_path / "m.onnx", {}, "ort-trt", ["TensorrtExecutionProvider"], 1
        provider_options = {"trt_fp16_enable": False, "trt_int8_enable": False, "trt_engine_cache_enable": True,
                            **edge_runner.trt_profile_shapes("input", ["b", 3], [1, 2])}

        def input_shape(self, b: int) -> list[int]:
            return [b, 3]

        def run(self, x) -> None:
            pass

    rec = edge_runner.bench_runners([Runner()], [1, 2], 0, 1)[0]
    assert rec["note"] == ("TensorrtExecutionProvider trt_fp16_enable=False, trt_int8_enable=False, "
                           "trt_profile_min_shapes=input:1x3, trt_profile_opt_shapes=input:2x3, "
                           "trt_profile_max_shapes=input:2x3")


def test_a_graph_the_ep_partitions_is_timed_without_the_profile(monkeypatch, tmp_path: Path, capsys) -> None:
    """Review 1: onnxruntime's TensorRT EP refuses explicit profiles that leave a TensorRT subgraph's dynamic input
    out, as in any graph it partitions (an op TensorRT does not take runs on CUDA or the CPU): such a model, timed
    before the profile was given, is timed without it (a warning), not refused."""
    made = _fake_onnxruntime(monkeypatch, "int8")
    session = edge_runner.sys.modules["onnxruntime"].InferenceSession

    class Partitioned(session):
        def __init__(self, path, so, providers) -> None:
            super().__init__(path, so, providers)
            if isinstance(providers[0], tuple) and any(k.startswith("trt_profile_") for k in providers[0][1]):
                raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : User needs to provide all the dynamic shape "
                                   "inputs with associated profiles if they want to explicitly set profiles through "
                                   "provider options.\nFollowing input(s) has no associated shape profiles provided: "
                                   "/conv/Conv_output_0")
    monkeypatch.setattr(edge_runner.sys.modules["onnxruntime"], "InferenceSession", Partitioned)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    runner = edge_runner.OrtRunner(model, "ort-trt", batches=[1, 8])
    assert not any(k in runner.provider_options for k in PROFILE_KEYS)
    assert len([p for p in made if isinstance(p[0], tuple)]) == 2  # tried with the profile, then made without it
    assert runner.provider_options["trt_int8_enable"] is True  # the rest as before
    err = capsys.readouterr().err
    assert err.count("warning: ") == 1 and "timed without one" in err
    monkeypatch.setattr(edge_runner.sys.modules["onnxruntime"], "InferenceSession", session)  # other errors: as before

    class Corrupt(session):
        def __init__(self, path, so, providers) -> None:
            raise RuntimeError("[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model failed")
    monkeypatch.setattr(edge_runner.sys.modules["onnxruntime"], "InferenceSession", Corrupt)
    with pytest.raises(edge_runner.RuntimeUnavailable, match="cannot load it: .*INVALID_PROTOBUF"):
        edge_runner.OrtRunner(model, "ort-trt", batches=[1, 8])


@pytest.mark.parametrize("name", ["input:0", "a,b"])
def test_a_name_onnxruntime_cannot_parse_gets_no_profile(name: str) -> None:
    """Review 1: onnxruntime reads ``trt_profile_*_shapes`` as ``name:dims`` pairs split at "," and each at its first
    ":" (``MakeInputNameShapePair``), so ``input:0:1x3x224x224`` names input ``input`` with the dims ``0``."""
    assert edge_runner.trt_profile_shapes(name, ["batch", 3, 224, 224], [1, 8]) == {}
