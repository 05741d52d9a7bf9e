"""`distill bench`: one JSON record per (model, runtime, batch) with every schema key."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from distill.bench.edge_runner import LATENCY_KEYS, RECORD_KEYS, SCHEMA, latency_stats, read_jsonl, sha256_file
from distill.bench.run import bench_model
from distill.cli import main


def _check_record(r: dict, batch: int) -> None:
    assert set(RECORD_KEYS) <= set(r), set(RECORD_KEYS) - set(r)
    assert r["schema"] == SCHEMA and r["batch"] == batch and r["input_shape"][0] == batch
    lat = r["latency_ms"]
    assert set(LATENCY_KEYS) <= set(lat)
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert r["throughput_ips"] > 0 and r["iters"] >= 1
    assert r["device"]["cpu"]["model"] and r["device"]["cpu"]["logical_cores"] >= 1
    assert isinstance(r["device"]["gpus"], list)
    assert "numpy" in r["versions"] and "python" in r["versions"]
    mem = r["memory"]
    assert {"rss_mb", "peak_rss_mb", "peak_rss_delta_mb", "gpu_peak_mb"} <= set(mem)
    json.dumps(r)  # serializable


def test_onnx_records_and_profile(small_onnx: Path) -> None:
    recs = bench_model(small_onnx, None, (1, 3), threads=1, warmup=2, iters=8, profile=True, topk=5)
    assert [r["batch"] for r in recs] == [1, 3]
    for r, b in zip(recs, (1, 3)):
        _check_record(r, b)
        assert r["runtime"] == "ort-cpu" and r["providers"][0] == "CPUExecutionProvider" and r["threads"] == 1
        assert r["model_sha256"] == sha256_file(small_onnx) and r["model_meta"]["precision"] == "fp32"
        assert r["model_meta"]["num_classes"] == 3 and r["versions"]["onnxruntime"] == ort.__version__
        ops = r["top_ops"]
        # the convolutions are among the top ops (which one is first depends on machine noise: a preempted
        # small op can outlast a conv on a loaded 2-core box)
        assert 1 <= len(ops) <= 5 and {"Conv", "FusedConv"} & {o["op"] for o in ops}
        assert [o["total_ms"] for o in ops] == sorted((o["total_ms"] for o in ops), reverse=True)
        assert 0 < sum(o["pct"] for o in ops) <= 100.01


def test_torch_runtime_on_checkpoint(small_checkpoint: Path) -> None:
    ckpt = small_checkpoint
    recs = bench_model(ckpt, "torch", (2,), threads=1, warmup=1, iters=3)
    _check_record(recs[0], 2)
    assert recs[0]["runtime"] == "torch" and recs[0]["model_sha256"] == sha256_file(ckpt / "model.safetensors")
    assert recs[0]["model_meta"]["arch"] == "test_resnet" and "torch" in recs[0]["versions"]


def test_cli_writes_jsonl(small_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "b.jsonl"
    argv = ["bench", str(small_onnx), "--batch", "1,2", "--warmup", "1", "--iters", "3", "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    assert main(argv) == 0  # appends
    recs = read_jsonl(out)
    assert [r["batch"] for r in recs] == [1, 2, 1, 2]
    assert "p50" in capsys.readouterr().err


@pytest.mark.parametrize("runtime,needs", [("ort-cuda", "onnxruntime-gpu"), ("ort-trt", "onnxruntime-gpu"),
                                           ("tensorrt", "tensorrt")])
def test_unavailable_runtime_is_one_line(small_onnx: Path, capsys: pytest.CaptureFixture, runtime: str, needs: str) -> None:
    providers = {"ort-cuda": "CUDAExecutionProvider", "ort-trt": "TensorrtExecutionProvider"}
    if providers.get(runtime) in ort.get_available_providers():
        pytest.skip(f"{runtime} is available here")
    if runtime == "tensorrt":
        try:
            import tensorrt  # noqa: F401  # lazy: probes whether tensorrt imports here
            pytest.skip("tensorrt is installed here")
        except ImportError:
            pass
    assert main(["bench", str(small_onnx), "--runtime", runtime]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and needs in err and runtime in err


@pytest.mark.parametrize("argv,match", [
    (["bench", "{tmp}/missing.onnx"], "not found"),
    (["bench", "{onnx}", "--batch", "0"], "--batch"),
    (["bench", "{onnx}", "--runtime", "torch"], "checkpoint folder"),
    (["bench", "{onnx}", "--iters", "0"], "--iters"),
])
def test_bench_errors_are_one_line(small_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                   argv: list[str], match: str) -> None:
    argv = [a.format(tmp=tmp_path, onnx=small_onnx) for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err


def test_latency_stats() -> None:
    s = latency_stats([0.001 * i for i in range(1, 101)])  # 1..100 ms
    assert s["min"] == pytest.approx(1.0) and s["max"] == pytest.approx(100.0)
    assert s["p50"] == pytest.approx(50.5) and s["p90"] == pytest.approx(90.1) and s["p99"] == pytest.approx(99.01)
    assert s["mean"] == pytest.approx(50.5) and s["std"] == pytest.approx(np.std(np.arange(1, 101)))
    with pytest.raises(ValueError):
        latency_stats([])


@pytest.mark.parametrize("content", ["truncated", "text"])
def test_a_file_onnxruntime_cannot_load_is_one_line(small_onnx: Path, tmp_path: Path, content: str,
                                                    capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(small_onnx.read_bytes()[:2000] if content == "truncated" else b"hello\n")
    assert main(["bench", str(bad), "--iters", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {bad}: onnxruntime cannot load it: "), err


def test_threads_zero_is_refused_as_export_refuses_it(small_onnx: Path, capsys: pytest.CaptureFixture) -> None:
    """`--threads 0` was run with the runtime's default and recorded as 0; `distill export --threads 0` is refused."""
    from distill.bench import edge_runner

    for run in (main, edge_runner.main):
        argv = ["bench"] if run is main else []
        assert run([*argv, str(small_onnx), "--threads", "0", "--iters", "1"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--threads must be >= 1" in err and "got 0" in err, err


def test_a_record_names_its_file_absolute_and_relative_to_its_jsonl(small_onnx: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A file timed as typed ('onnx0/small.fp32.onnx') was recorded as typed, and `distill report` run from another
    folder could not find it. A record names it absolute, and the .jsonl it is written to also relative to that
    file's folder (results copied back beside the files they timed, or moved whole, still name them)."""
    import os

    from distill.bench.edge_runner import write_jsonl
    from distill.records import BenchRecord

    monkeypatch.chdir(small_onnx.parent.parent)
    [rec] = bench_model(Path(small_onnx.parent.name) / small_onnx.name, None, (1,), threads=1, warmup=1, iters=2)
    assert Path(rec["model"]).is_absolute() and os.path.samefile(rec["model"], small_onnx)
    out = tmp_path / "results" / "bench.jsonl"
    write_jsonl([rec], out)
    [line] = BenchRecord.read_lines(out)
    assert line.model_relative == os.path.relpath(os.path.realpath(small_onnx), os.path.realpath(out.parent))
