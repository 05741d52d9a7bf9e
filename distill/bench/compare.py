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

A ratio of two medians from a few dozen runs moves on a shared machine (0.66-1.14 for one pair of files over ten
20-run checks at onnxruntime's own thread count; benchmarks/RESULTS.md, "When is int8 faster"), so a decision on it
needs its interval: :func:`ratio_interval` gives the median of the
per-round ratios (the k-th run of one model against the k-th of the other, timed back to back) and its
distribution-free 95 % interval (``scipy.stats.quantile_test``: the order statistics of a sign test).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import quantile_test

from distill.bench.edge_runner import OrtRunner, interleaved_times, latency_stats


def ratio_interval(base: list[float], other: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(median, low, high) of ``other[k] / base[k]`` over rounds k of interleaved runs: the median and its
    distribution-free ``level`` interval (the whole range when there are too few rounds for one)."""
    r = np.asarray(other, dtype=np.float64) / np.asarray(base, dtype=np.float64)
    if len(r) == 0:
        raise ValueError("no timed rounds")
    median = float(np.median(r))
    if len(r) < 6:  # 2 x 0.5^5 > 0.05: no rank gives 95 %
        return median, float(r.min()), float(r.max())
    ci = quantile_test(r, q=median, p=0.5).confidence_interval(level)
    return median, float(ci.low), float(ci.high)


def compare_latency(models: dict[str, str | Path], batch: int = 1, runtime: str = "ort-cpu",
                    threads: int | None = None, warmup: int = 3, iters: int = 20, seed: int = 0) -> dict[str, Any]:
    """Interleaved latency of ``models`` (name -> .onnx) on the same random input: ``iters`` timed runs of each,
    split over one pass per model with the sessions created in a rotated order (see the module docstring).

    Spin-waiting of idle worker threads is off: with it, the session just timed keeps its
    workers spinning and steals cores from the next one (on a 2-core machine this alone made
    fp32 look 10x slower than int8). Single-model ``distill bench`` keeps onnxruntime's default.

    Returns:
        ``{"batch", "runtime", "threads", "threads_used", "threads_basis", "iters", "stats": {name: latency_stats},
        "ratio_p50": {name: p50 / p50 of the first model}, "ratio_ci95": {name: [low, high]}}``
        (:func:`ratio_interval` of the per-round ratios) — the first model is the baseline. ``threads`` as asked
        (None: onnxruntime's default); ``threads_used`` and ``threads_basis`` as a bench record has them
        (:func:`distill.bench.edge_runner.ort_threads`), of the baseline's first session.
    """
    times: dict[str, list[float]] = {k: [] for k in models}
    used: tuple[int | None, str] | None = None  # the baseline's first session's threads (all are made alike)
    x = None
    names = list(models)
    for i in range(len(names)):
        created, runs = names[i:] + names[:i], iters // len(names) + (1 if i < iters % len(names) else 0)
        if runs == 0:
            continue
        runners = {k: OrtRunner(models[k], runtime, threads=threads, spin=False, batches=[batch]) for k in created}
        if used is None:  # as the bench records them (edge_runner.ort_threads)
            used = runners[names[0]].threads_used, runners[names[0]].threads_basis
        if x is None:
            shape = runners[next(iter(models))].input_shape(batch)
            x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
        # timed in the given order (the timing order does not matter; the creation order does)
        got = interleaved_times({k: functools.partial(runners[k].run, x) for k in models}, warmup, runs)
        for k in models:
            times[k] += got[k]
        del runners  # one pass's sessions alive at a time
    stats = {k: latency_stats(v) for k, v in times.items()}
    first = next(iter(stats))
    base = stats[first]["p50"]
    threads_used, threads_basis = used if used is not None else (threads, None)
    return {"batch": batch, "runtime": runtime, "threads": threads, "threads_used": threads_used,
            "threads_basis": threads_basis, "iters": iters, "stats": stats,
            "ratio_p50": {k: s["p50"] / base for k, s in stats.items()},
            "ratio_ci95": {k: list(ratio_interval(times[first], times[k])[1:]) for k in stats}}
