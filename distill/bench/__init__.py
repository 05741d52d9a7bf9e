"""Latency benchmarks (torch / onnxruntime / TensorRT) and device info.

:mod:`~distill.bench.edge_runner` is the single implementation of timing, statistics and device
info; it is also a standalone script (numpy + onnxruntime or tensorrt) to copy to a device. The
HTML report that reads these records is :mod:`distill.report`.

>>> from distill.bench import bench_model, write_jsonl
>>> write_jsonl(bench_model("exports/kd", "ort-cpu", (1, 8)), "bench.jsonl")
"""
from __future__ import annotations

from distill.bench.edge_runner import read_jsonl, write_jsonl
from distill.bench.run import bench_model

__all__ = ["bench_model", "read_jsonl", "write_jsonl"]
