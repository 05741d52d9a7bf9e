"""Does the order onnxruntime sessions are created in change their measured latency? Copies of one file, timed together.

    PYTHONPATH=. .venv/bin/python benchmarks/session_order.py MODEL.onnx [--copies 3] [--iters 300] [--repeats 3]

``--copies`` sessions of the same ONNX file (a, b, c, ...) are created in one order, then timed interleaved in the
fixed order a b c ... (:func:`distill.bench.edge_runner.interleaved_times`, batch 1, 1 thread) and reported as
p50 / p50 of ``a``; then again with the sessions created in reverse order, and with the timing order reversed
instead. An identical file should give ratios of 1.00 everywhere: a ratio that follows the creation order is a bias
of every interleaved comparison whose files are loaded in a fixed order. Last, the copies through
:func:`distill.bench.compare.compare_latency` (what ``distill export``'s int8 check uses) and through
:func:`distill.bench.edge_runner.bench_files` (the demo's bench table, ``distill bench --interleave``): since session
17 and 18 each splits its runs over one pass per file with the sessions created in a rotated order. Prints one line
per arrangement (median over ``--repeats``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from int8_students import cpu_flags  # noqa: E402

from distill.bench.compare import compare_latency  # noqa: E402
from distill.bench.edge_runner import OrtRunner, bench_files, interleaved_times, latency_stats  # noqa: E402


def ratios(model: Path, created: list[str], timed: list[str], iters: int) -> dict[str, float]:
    """p50 of each copy / p50 of copy ``a``; sessions created in ``created`` order, timed in ``timed`` order."""
    runners = {k: OrtRunner(model, "ort-cpu", threads=1, spin=False) for k in created}
    x = np.random.default_rng(0).standard_normal(runners["a"].input_shape(1)).astype(np.float32)
    times = interleaved_times({k: (lambda r=runners[k]: r.run(x)) for k in timed}, 10, iters)
    p50 = {k: latency_stats(v)["p50"] for k, v in times.items()}
    return {k: p50[k] / p50["a"] for k in sorted(p50)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--copies", type=int, default=3)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    names = [chr(ord("a") + i) for i in range(args.copies)]
    model_name, flags = cpu_flags()
    print(f"{args.model}; {model_name}; SIMD flags: {' '.join(flags)}")
    for label, created, timed in (("created a..z, timed a..z", names, names),
                                  ("created z..a, timed a..z", names[::-1], names),
                                  ("created a..z, timed z..a", names, names[::-1])):
        runs = [ratios(args.model, created, timed, args.iters) for _ in range(args.repeats)]
        med = {k: float(np.median([r[k] for r in runs])) for k in names}
        print(f"{label}: " + ", ".join(f"{k} {v:.3f}" for k, v in med.items()))
    runs = [compare_latency({k: args.model for k in names}, batch=1, threads=1, iters=args.iters, seed=i)["ratio_p50"]
            for i in range(args.repeats)]
    print("compare_latency: " + ", ".join(f"{k} {float(np.median([r[k] for r in runs])):.3f}" for k in names))
    runs = []
    for _ in range(args.repeats):
        p50 = [rec["latency_ms"]["p50"] for rec in bench_files([args.model] * len(names), threads=1, iters=args.iters)]
        runs.append({k: p / p50[0] for k, p in zip(names, p50)})
    print("bench_files: " + ", ".join(f"{k} {float(np.median([r[k] for r in runs])):.3f}" for k in names))


if __name__ == "__main__":
    main()
