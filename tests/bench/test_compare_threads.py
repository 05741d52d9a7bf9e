"""The export's latency check (:func:`distill.bench.compare.compare_latency`) records the threads its sessions used as
a bench record does (``threads_used``, ``threads_basis``: :func:`distill.bench.edge_runner.ort_threads`), not only
``threads`` as asked, which is null for onnxruntime's default and said nothing."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from distill.bench.compare import compare_latency
from distill.bench.edge_runner import ORT_POOL_COUNTED, OrtRunner


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc/self/task (Linux)")
def test_onnxruntimes_default_threads_are_recorded_as_counted(small_onnx: Path) -> None:
    res = compare_latency({"a": small_onnx, "b": small_onnx}, threads=None, warmup=0, iters=2)
    pool = OrtRunner(small_onnx, "ort-cpu", spin=False).threads_used  # the pool such a session makes here
    assert res["threads"] is None  # as asked
    assert (res["threads_used"], res["threads_basis"]) == (pool, ORT_POOL_COUNTED)
    assert isinstance(pool, int) and pool >= 1


def test_threads_asked_are_recorded_as_asked(small_onnx: Path) -> None:
    res = compare_latency({"a": small_onnx, "b": small_onnx}, threads=1, warmup=0, iters=2)
    assert (res["threads"], res["threads_used"], res["threads_basis"]) == (1, 1, "--threads")
