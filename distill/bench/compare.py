"""Side-by-side latency of several ONNX models, interleaved so shared-machine noise hits all alike.

Used by ``distill export`` (is int8 faster than its fp32 parent here? what does the fp32
fallback cost?) and by ``benchmarks/export_latency.py``. Timing and statistics come from the
edge runner, so every number in this project is measured by one implementation.

The onnxruntime session created last runs 1-2.5 % faster than the same file's session created
first, whatever order they are timed in (benchmarks/session_order.py; RESULTS.md, "onnxruntime
sessions created later run faster"). So the models are timed in one pass per model, the runs split
evenly: each pass creates the sessions in the given order rotated by one more place, so every
model is created last (and first) once, and each model's runs of all passes are pooled. (Two
passes, given order then reverse, left the middle one of three never created last: with the
edge only on the newest session that is a bias again.)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from distill.bench.edge_runner import OrtRunner, interleaved_times, latency_stats


def compare_latency(models: dict[str, str | Path], batch: int = 1, runtime: str = "ort-cpu",
                    threads: int | None = None, warmup: int = 3, iters: int = 20, seed: int = 0) -> dict[str, Any]:
    """Interleaved latency of ``models`` (name -> .onnx) on the same random input: ``iters`` timed runs of each,
    split over one pass per model with the sessions created in a rotated order (see the module docstring).

    Spin-waiting of idle worker threads is off: with it, the session just timed keeps its
    workers spinning and steals cores from the next one (on a 2-core machine this alone made
    fp32 look 10x slower than int8). Single-model ``distill bench`` keeps onnxruntime's default.

    Returns:
        ``{"batch", "runtime", "threads", "iters", "stats": {name: latency_stats}, "ratio_p50":
        {name: p50 / p50 of the first model}}`` — the first model is the baseline.
    """
    times: dict[str, list[float]] = {k: [] for k in models}
    x = None
    names = list(models)
    for i in range(len(names)):
        created, runs = names[i:] + names[:i], iters // len(names) + (1 if i < iters % len(names) else 0)
        if runs == 0:
            continue
        runners = {k: OrtRunner(models[k], runtime, threads=threads, spin=False) for k in created}
        if x is None:
            shape = runners[next(iter(models))].input_shape(batch)
            x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
        # timed in the given order (the timing order does not matter; the creation order does)
        got = interleaved_times({k: (lambda r=runners[k]: r.run(x)) for k in models}, warmup, runs)
        for k in models:
            times[k] += got[k]
        del runners  # one pass's sessions alive at a time
    stats = {k: latency_stats(v) for k, v in times.items()}
    base = stats[next(iter(stats))]["p50"]
    return {"batch": batch, "runtime": runtime, "threads": threads, "iters": iters, "stats": stats,
            "ratio_p50": {k: s["p50"] / base for k, s in stats.items()}}
