"""One x86 host with a GPU is one device, whatever the runtime, as a Jetson is (review 3 finding 4): its CPU and GPU
runtimes are choices on one box, so they share one Pareto front, and a CPU file that the GPU times faster at the same
accuracy is not on it."""
from __future__ import annotations

from pathlib import Path

from distill.records import BenchRecord
from distill.report.data import device_label, mark_pareto
from distill.report.write import collect
from tests.report.test_engine_join import engine_record, write_export

HOST = {"platform": "Linux-x86_64", "cpu": {"model": "AMD EPYC 9654", "usable_cores": 16},
        "gpus": [{"name": "NVIDIA H100 80GB HBM3"}]}


def _on_host(model: Path, sha: str, runtime: str, p50: float) -> BenchRecord:
    rec = engine_record(str(model), sha)
    return rec.model_copy(update={"runtime": runtime, "device": HOST,
                                  "latency_ms": rec.latency_ms.model_copy(update={"p50": p50})})


def test_a_gpu_host_s_cpu_and_gpu_runtimes_are_one_device() -> None:
    labels = {device_label(_on_host(Path("/x/model.fp32.onnx"), "10" * 32, rt, 1.0))
              for rt in ("ort-cpu", "ort-cuda", "ort-trt", "tensorrt")}
    assert labels == {"AMD EPYC 9654 (16 cores) · NVIDIA H100 80GB HBM3"}


def test_a_gpu_host_s_runtimes_share_one_front(tmp_path: Path) -> None:
    ex = write_export(tmp_path / "exp", "1")
    _on_host(ex / "model.fp32.onnx", "10" * 32, "ort-cpu", 3.0).append_to(ex / "bench.jsonl")
    _on_host(ex / "model.fp32.onnx", "10" * 32, "ort-cuda", 0.5).append_to(ex / "bench.jsonl")
    data = collect([ex])
    for p in data.points:  # one file, equally accurate: only the faster runtime is on the box's front
        p.score, p.score_se = 0.5, None
    mark_pareto(data.points)
    assert sorted((p.runtime, p.pareto) for p in data.points) == [("ort-cpu", False), ("ort-cuda", True)]


def test_two_gpus_of_one_kind_are_counted() -> None:
    rec = _on_host(Path("/x/model.fp32.onnx"), "10" * 32, "ort-cuda", 1.0)
    two = rec.model_copy(update={"device": {**HOST, "gpus": HOST["gpus"] * 2}})
    assert device_label(two) == "AMD EPYC 9654 (16 cores) · 2× NVIDIA H100 80GB HBM3"
