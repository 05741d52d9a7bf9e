"""Where an int8 model's time goes on ONNX Runtime CPU, next to its fp32 parent: time per op type.

    PYTHONPATH=. .venv/bin/python benchmarks/int8_op_profile.py demo_out/export/fm_unlabeled/model.fp32.onnx \\
        demo_out/export/fm_unlabeled/qad/model.int8-ort-cpu.onnx --batch 1 --threads 1

Both models run in one process, alternating, with onnxruntime's profiler on (it adds overhead per node, so read the
shares and the int8/fp32 ratios, not the absolute microseconds). Per op type: kernel time per inference and the
number of nodes run, as onnxruntime optimized the graph (fp32: its NCHWc convolutions with fused activations;
int8: QLinearConv etc. plus the QuantizeLinear/DequantizeLinear around what stays in float). Also prints the plain
p50 latency of each model without the profiler (interleaved). Prints Markdown.
"""
from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def session(path: str, threads: int, profile_dir: str | None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_dir:
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(profile_dir) / Path(path).stem)
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def feed(sess: ort.InferenceSession, batch: int) -> dict[str, np.ndarray]:
    inp = sess.get_inputs()[0]
    shape = [batch, *[d if isinstance(d, int) else 1 for d in inp.shape[1:]]]
    return {inp.name: np.random.default_rng(0).random(shape, dtype=np.float32)}


def op_times(path: str, batch: int, threads: int, iters: int) -> dict[str, tuple[float, float]]:
    """{op type: (kernel microseconds per inference, nodes per inference)}."""
    with tempfile.TemporaryDirectory() as tmp:
        sess = session(path, threads, tmp)
        x = feed(sess, batch)
        for _ in range(iters):
            sess.run(None, x)
        events = json.loads(Path(sess.end_profiling()).read_text())
    dur: dict[str, float] = collections.defaultdict(float)
    count: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e["args"]["op_name"]
            dur[op] += e["dur"]
            count[op] += 1
    return {op: (dur[op] / iters, count[op] / iters) for op in dur}


def p50s(paths: list[str], batch: int, threads: int, iters: int) -> list[float]:
    sessions = [session(p, threads, None) for p in paths]
    feeds = [feed(s, batch) for s in sessions]
    times: list[list[float]] = [[] for _ in paths]
    for s, x in zip(sessions, feeds):
        for _ in range(max(10, iters // 10)):
            s.run(None, x)
    for _ in range(iters):
        for i, (s, x) in enumerate(zip(sessions, feeds)):
            t0 = time.perf_counter()
            s.run(None, x)
            times[i].append(time.perf_counter() - t0)
    return [1e3 * float(np.median(t)) for t in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("fp32")
    ap.add_argument("int8")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=500)
    args = ap.parse_args()
    lat = p50s([args.fp32, args.int8], args.batch, args.threads, args.iters)
    print(f"batch {args.batch}, {args.threads} thread(s): p50 fp32 {lat[0]:.3f} ms, int8 {lat[1]:.3f} ms, "
          f"int8/fp32 {lat[1] / lat[0]:.2f}x (interleaved, no profiler)\n")
    f, q = (op_times(p, args.batch, args.threads, args.iters) for p in (args.fp32, args.int8))
    tf, tq = sum(v[0] for v in f.values()), sum(v[0] for v in q.values())
    print("| model | op type | nodes | kernel µs / inference (profiled) | share % |")
    print("|---|---|---:|---:|---:|")
    for name, ops, total in (("fp32", f, tf), ("int8", q, tq)):
        for op, (us, n) in sorted(ops.items(), key=lambda kv: -kv[1][0]):
            print(f"| {name} | {op} | {n:.0f} | {us:.1f} | {100 * us / total:.1f} |")
        print(f"| {name} | **total** | {sum(v[1] for v in ops.values()):.0f} | {total:.1f} | 100 |")
    conv_f = sum(us for op, (us, _) in f.items() if op in ("Conv", "FusedConv"))
    conv_q = sum(us for op, (us, _) in q.items() if op in ("QLinearConv",))
    if conv_f and conv_q:
        print(f"\nconvolutions alone: int8 QLinearConv / fp32 Conv = {conv_q / conv_f:.2f}x; "
              f"everything else in int8 (Q/DQ, float islands): {100 * (tq - conv_q) / tq:.0f} % of its kernel time")


if __name__ == "__main__":
    main()
