"""Latency benchmarks (torch / onnxruntime / TensorRT), device info, and the HTML report.

:mod:`~distill.bench.edge_runner` is the single implementation of timing, statistics and device
info; it is also a standalone script (numpy + onnxruntime or tensorrt) to copy to a device.

>>> from distill.bench import bench_model, write_jsonl, write_report
>>> write_jsonl(bench_model("exports/kd", "ort-cpu", (1, 8)), "bench.jsonl")
>>> write_report(["runs/kd", "exports/kd", "bench.jsonl"], "report.html")
"""
from __future__ import annotations

from distill.bench.edge_runner import read_jsonl, write_jsonl
from distill.bench.report import write_report
from distill.bench.run import bench_model

__all__ = ["bench_model", "read_jsonl", "write_jsonl", "write_report"]
