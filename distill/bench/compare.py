"""Side-by-side latency of several ONNX models, interleaved so shared-machine noise hits all alike.

Used by ``distill export`` (is int8 faster than its fp32 parent here? what does the fp32
fallback cost?) and by ``benchmarks/export_latency.py``. Timing and statistics come from the
edge runner, so every number in this project is measured by one implementation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from distill.bench.edge_runner import OrtRunner, interleaved_times, latency_stats


def compare_latency(models: dict[str, str | Path], batch: int = 1, runtime: str = "ort-cpu",
                    threads: int | None = None, warmup: int = 3, iters: int = 20, seed: int = 0) -> dict[str, Any]:
    """Interleaved latency of ``models`` (name -> .onnx) on the same random input.

    Spin-waiting of idle worker threads is off: with it, the session just timed keeps its
    workers spinning and steals cores from the next one (on a 2-core machine this alone made
    fp32 look 10x slower than int8). Single-model ``distill bench`` keeps onnxruntime's default.

    Returns:
        ``{"batch", "runtime", "threads", "iters", "stats": {name: latency_stats}, "ratio_p50":
        {name: p50 / p50 of the first model}}`` — the first model is the baseline.
    """
    runners = {k: OrtRunner(p, runtime, threads=threads, spin=False) for k, p in models.items()}
    first = next(iter(runners.values()))
    x = np.random.default_rng(seed).standard_normal(first.input_shape(batch)).astype(np.float32)
    times = interleaved_times({k: (lambda r=r: r.run(x)) for k, r in runners.items()}, warmup, iters)
    stats = {k: latency_stats(v) for k, v in times.items()}
    base = stats[next(iter(stats))]["p50"]
    return {"batch": batch, "runtime": runtime, "threads": threads, "iters": iters, "stats": stats,
            "ratio_p50": {k: s["p50"] / base for k, s in stats.items()}}
