"""int8 / fp32 latency on ONNX Runtime CPU on two kinds of x86 CPU from one machine: this CPU as it is, and the same
cores with AVX-512, VNNI and AMX hidden from CPUID (``scripts/as_avx2.sh``), so onnxruntime runs its AVX2 kernels.

    PYTHONPATH=. .venv/bin/python benchmarks/int8_cpu_speed.py --arm 7bit=/tmp/probe/rr --arm 8bit=/tmp/probe/layers \
        --option 8bit [--batch 1] [--threads 1] [--rounds 3]

The int8 kernels onnxruntime picks depend on the CPU (``VPDPBUSD`` with VNNI; ``VPMADDUBSW`` + ``VPMADDWD`` on AVX2),
and so do the fp32 ones (AVX-512 or AVX2 FMA), so int8 may pay on one kind and not on the other. QEMU's emulated
Haswell (``int8_cpu_kinds.py``) computes the AVX2 results but cannot time them; hiding feature bits from CPUID does
both, at this machine's speed. What it does not give: another core's microarchitecture (a Haswell or Zen 2 runs the
same AVX2 code at other relative speeds), so these ratios name the code path, not a CPU model.

An arm (``--arm NAME=DIR``, repeated) is a folder of ``distill export`` folders, one per run (``DIR/TAG``), or one export
folder, as for ``int8_cpu_kinds.py``. For every TAG in all arms, the first arm's fp32 file and each arm's ort-cpu int8
file are timed, interleaved in one process per CPU kind (sessions created in a rotated order, as ``distill export``
times them: ``distill.bench.compare``), on one random batch; ``--option ARM`` adds ARM's int8 files with onnxruntime's
``session.x64quantprecision`` on (u8 x u8 where weights leave [-64, 63] on CPUs without VNNI: its fix for 8-bit
weights; a no-op with VNNI). The two kinds run in alternating processes, ``--rounds`` times; a figure is the median
over rounds of p50(int8) / p50(fp32) measured in the same process. Prints Markdown tables; paste them into
benchmarks/RESULTS.md with the command and the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from int8_cpu_kinds import AS_AVX2, PRECISION_OPTION  # noqa: E402

KINDS = ("here", "avx2")


def child(spec: str) -> None:
    """Time the files of ``spec`` (JSON: {"files": {name: [path, precise]}, "batch", "threads", "iters"}) interleaved;
    print {"saturates": whether onnxruntime's u8 x s8 kernel saturates here (a CPU without VNNI), "p50": {name: ms}}
    as JSON."""
    import onnxruntime as ort

    from distill.bench.edge_runner import interleaved_times, latency_stats

    job = json.loads(spec)
    names = list(job["files"])
    times: dict[str, list[float]] = {k: [] for k in names}
    x = None
    for i in range(len(names)):  # one pass per file, each file's session created last once (distill.bench.compare)
        created = names[i:] + names[:i]
        sessions = {}
        for k in created:
            path, precise = job["files"][k]
            so = ort.SessionOptions()
            so.intra_op_num_threads = job["threads"]
            so.inter_op_num_threads = 1
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            if precise:
                so.add_session_config_entry(PRECISION_OPTION, "1")
            sessions[k] = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        if x is None:
            first = sessions[names[0]].get_inputs()[0]
            shape = [job["batch"] if not isinstance(d, int) else d for d in first.shape]
            shape[0] = job["batch"]
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
        got = interleaved_times({k: (lambda s=sessions[k], f=feeds[k]: s.run(None, f)) for k in names}, 3,
                                max(1, job["iters"] // len(names)))
        for k in names:
            times[k] += got[k]
        del sessions
    from int8_cpu_kinds import PROBE_EXACT, probe_sum

    print(json.dumps({"saturates": probe_sum() != PROBE_EXACT,
                      "p50": {k: latency_stats(v)["p50"] for k, v in times.items()}}))


def time_kind(kind: str, files: dict[str, tuple[str, bool]], args: argparse.Namespace) -> dict:
    spec = json.dumps({"files": files, "batch": args.batch, "threads": args.threads, "iters": args.iters})
    cmd = [sys.executable, __file__, "--child", spec]
    if kind == "avx2":
        cmd = ["bash", str(AS_AVX2), *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise SystemExit(f"{kind} child failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arm", action="append", required=True, help="NAME=DIR (repeated); the first arm's fp32 is the "
                    "baseline of every arm")
    ap.add_argument("--option", action="append", default=[], metavar="ARM",
                    help=f"also time ARM's int8 files with {PRECISION_OPTION} on (repeated)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    ap.add_argument("--iters", type=int, default=60, help="timed runs per file and process (default 60)")
    ap.add_argument("--rounds", type=int, default=3, help="processes per CPU kind, alternating (default 3)")
    args = ap.parse_args()
    probe = subprocess.run(["bash", str(AS_AVX2), "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise SystemExit(probe.stderr.strip() or f"{AS_AVX2} failed")

    from int8_cpu_kinds import tags_of
    from int8_students import cpu_flags
    from qad_arms import by_student, fmt

    from distill.records import ExportReport

    arms = dict(a.split("=", 1) for a in args.arm)
    tags = {name: tags_of(Path(d)) for name, d in arms.items()}
    first = next(iter(arms))
    common = [t for t in tags[first] if all(t in found for found in tags.values())]
    if not common:
        raise SystemExit("no run (TAG/export.json) is in every arm")
    model, flags = cpu_flags()
    print(f"here: {model}; SIMD flags: {' '.join(flags)}; avx2: the same cores with AVX-512, VNNI and AMX hidden from "
          f"CPUID ({AS_AVX2.relative_to(ROOT)}); batch {args.batch}, {args.threads} thread(s), {args.iters} runs per "
          f"file and process, {args.rounds} rounds\n")
    unknown = sorted(set(args.option) - set(arms))
    if unknown:
        raise SystemExit(f"--option {unknown[0]}: no such arm (have: {', '.join(arms)})")
    variants = [(a, False) for a in arms] + [(a, True) for a in args.option]
    rows = []
    for tag in common:
        reps = {a: ExportReport.read(tags[a][tag]) for a in arms}
        files = {"fp32": (str(tags[first][tag] / next(m.file for m in reps[first].models if m.precision == "fp32")),
                          False)}
        for a, precise in variants:
            int8 = next(m.file for m in reps[a].models if m.precision == "int8"
                        and (m.model_extra or {}).get("flavour") == "ort-cpu")
            files[a + ("+option" if precise else "")] = (str(tags[a][tag] / int8), precise)
        ratios: dict[tuple[str, str], list[float]] = {}
        fp32_ms: dict[str, list[float]] = {k: [] for k in KINDS}
        saturated = {}
        for _ in range(args.rounds):
            for kind in KINDS:
                got = time_kind(kind, files, args)
                saturated[kind] = got["saturates"]
                fp32_ms[kind].append(got["p50"]["fp32"])
                for name in list(files)[1:]:
                    ratios.setdefault((kind, name), []).append(got["p50"][name] / got["p50"]["fp32"])
        med = {key: statistics.median(v) for key, v in ratios.items()}
        rows.append({"tag": tag, "student": tag.rsplit("-e", 1)[0], "ratio": med, "rounds": ratios,
                     "saturated": saturated,
                     "fp32_ms": {k: statistics.median(v) for k, v in fp32_ms.items()}})
        print(f"[{tag}] " + ", ".join(f"{k} {n} {r:.2f}x" for (k, n), r in med.items()), file=sys.stderr)
    probe = rows[0]["saturated"]  # a CPU with VNNI: exact here; the AVX2 kernels: saturated
    print("u8 x s8 probe (onnxruntime's kernel adds pairs into a saturating int16?): " + ", ".join(
        f"{kind} {'saturated' if probe[kind] else 'exact'}" for kind in KINDS) + "\n")

    names = [n for n in rows[0]["ratio"] if n[0] == "here"]
    print("| run | fp32 p50 ms here / avx2 (separate processes) | " + " | ".join(
        f"{n}: int8/fp32 here / avx2 [min-max of the rounds]" for _, n in names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for r in rows:
        cells = [f"{r['ratio']['here', n]:.2f} [{spread(r['rounds']['here', n])}] / **{r['ratio']['avx2', n]:.2f}** "
                 f"[{spread(r['rounds']['avx2', n])}]" for _, n in names]
        print(f"| {r['tag']} | {r['fp32_ms']['here']:.3f} / {r['fp32_ms']['avx2']:.3f} | " + " | ".join(cells) + " |")
    if all(len(mine) == 1 for mine in by_student(rows).values()):  # one run per student: the table is the summary
        summary(rows, names)
        return
    print("\n| student | runs | " + " | ".join(f"{n}: here, avx2" for _, n in names) + " |")
    print("|---|---:|" + "---|" * len(names))
    for student, mine in by_student(rows).items():
        cells = [f"{fmt([r['ratio']['here', n] for r in mine])}, {fmt([r['ratio']['avx2', n] for r in mine])}"
                 for _, n in names]
        print(f"| {student} | {len(mine)} | " + " | ".join(cells) + " |")
    summary(rows, names)


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def summary(rows: list[dict], names: list[tuple[str, str]]) -> None:
    """Paired t-tests over runs: each arm against the first, on each kind; each arm, avx2 against here."""
    from distill.report.stats import paired

    print()
    base = names[0][1]
    for kind in KINDS:
        for _, n in names[1:]:
            t = paired([r["ratio"][kind, n] for r in rows], [r["ratio"][kind, base] for r in rows])
            print(f"- {kind}: {n} minus {base}, int8/fp32 over {len(rows)} runs: {t.diff:+.3f} (paired t-test "
                  f"p = {t.p:.3g})")
    for _, n in names:
        t = paired([r["ratio"]["avx2", n] for r in rows], [r["ratio"]["here", n] for r in rows])
        print(f"- {n}: avx2 minus here, int8/fp32: {t.diff:+.3f} (paired t-test p = {t.p:.3g})")


if __name__ == "__main__":
    main()
