"""`distill bench --threads N` (and the edge runner) with N above the cores this process may use (QA F8): no hint
was given, and the latency tail measured the threads taking turns (p90 40x p50 with 4 threads on 2 cores). One
`warning:` line names N and the core count; N within the cores says nothing."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import distill
import distill.bench.edge_runner as edge_runner

FAST = ["--batch", "1", "--warmup", "0", "--iters", "2"]


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


@pytest.mark.parametrize("over", [True, False])
def test_distill_bench_warns_once_when_threads_exceed_the_cores(small_onnx: Path, tmp_path: Path, over: bool) -> None:
    """As a user runs it (a process of its own: the CLI prints a DistillWarning as a `warning:` line)."""
    cores = _cores()
    threads = cores + 1 if over else cores
    env = {**os.environ, "PYTHONPATH": str(Path(distill.__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-m", "distill", "bench", str(small_onnx), "--threads", str(threads), *FAST],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    said = _warnings(r.stderr)
    if over:
        assert len(said) == 1, r.stderr
        assert f"--threads {threads} " in said[0] and f"the {cores} core(s)" in said[0], said
    else:
        assert said == [], said


def test_the_edge_runner_copied_alone_warns_when_threads_exceed_the_cores(small_onnx: Path, tmp_path: Path) -> None:
    device = tmp_path / "device"  # the file alone, outside the repo: no distill to import
    device.mkdir()
    runner = shutil.copy(edge_runner.__file__, device / "edge_runner.py")
    cores = _cores()  # the child inherits this process's affinity mask
    r = subprocess.run([sys.executable, "-I", str(runner), str(small_onnx), "--threads", str(cores + 1), *FAST],
                       capture_output=True, text=True, timeout=120, cwd=device)
    assert r.returncode == 0, r.stderr
    said = _warnings(r.stderr)
    assert len(said) == 1 and f"--threads {cores + 1} " in said[0] and f"the {cores} core(s)" in said[0], r.stderr


def test_a_tensorrt_engine_gets_no_threads_warning() -> None:
    """The engine runs on the GPU: its runner starts no intra-op threads."""
    assert edge_runner.threads_warning(10_000, "tensorrt") is None
    assert edge_runner.threads_warning(10_000, "ort-cpu") is not None
