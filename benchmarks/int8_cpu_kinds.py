"""The same int8 files on two kinds of x86 CPU: this one, and an AVX2 CPU without VNNI (QEMU's, or this one's AVX2 kernels).

    apt install qemu-user        # qemu-x86_64: runs this venv's python on an emulated CPU model
    PYTHONPATH=. .venv/bin/python benchmarks/int8_cpu_kinds.py --arm default=/tmp/probe/layers \
        --arm reduce_range=/tmp/probe/rr [--cpu Haswell]

onnxruntime's CPU kernels (MLAS) multiply uint8 activations by int8 weights with ``VPDPBUSD`` on a CPU with
AVX-512 VNNI (or AVX-VNNI): exact int32 sums. Without VNNI (AVX2, and AVX-512 before Cascade Lake) they use
``VPMADDUBSW``, which adds two adjacent u8 x s8 products into a *saturating int16*: 255 x 127 x 2 = 64,770 >
32,767. The int8 file is then computed differently there, and the export's checks, run on the machine that
exported it, do not see it. onnxruntime's answer is ``reduce_range`` (7-bit weights, |w| <= 64: 255 x 64 x 2 =
32,640 fits). QEMU's user-mode emulator (TCG) reports the CPU model given (``-cpu Haswell``: AVX2, FMA, no
AVX-512) through CPUID, so onnxruntime picks its AVX2 kernels and computes what such a CPU computes (slowly: the
timings mean nothing, the logits do). ``--cpu as-avx2`` runs the same AVX2 kernels natively instead, on this CPU with
AVX-512, VNNI and AMX hidden from CPUID (``scripts/as_avx2.sh``; needs Linux's CPUID faulting), in minutes instead of
tens of minutes (timing: ``int8_cpu_speed.py``).

An arm (``--arm NAME=DIR``, repeated) is a folder of ``distill export`` folders, one per run (``DIR/TAG``, as
``benchmarks/export_arms.py --out OUT`` writes ``OUT/NAME/TAG``), or one export folder. For every TAG in all arms,
the first arm's fp32 file and each arm's int8 file (ort-cpu) run on the whole test split of every domain (the
export's data and split), once here and once on the other CPU. Printed: a saturation probe (one
MatMulInteger whose exact sum the AVX2 kernel cannot hold), then per run and arm the top-1 disagreement with fp32
(points, mean over domains / worst domain) and the worst test accuracy drop, on each CPU kind, and the images
whose int8 top-1 differs between the kinds; over runs, paired t-tests between arms on each kind. ``--with-option``
also runs the emulated CPU with onnxruntime's ``session.x64quantprecision`` on (its own fix for 8-bit weights there,
off by default). Results: benchmarks/RESULTS.md, "int8 on x86 CPUs without VNNI".
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

QEMU = "qemu-x86_64"
AS_AVX2 = ROOT / "scripts" / "as_avx2.sh"
KINDS = ("here", "emulated")
# onnxruntime's own fix, off by default: u8 x s8 ops whose constant weights leave [-64, 63] run as u8 x u8 on x86 CPUs
# without VNNI (microsoft/onnxruntime#12088)
PRECISION_OPTION = "session.x64quantprecision"


def child(inputs: str, out: str, files: list[str], precise: bool = False) -> None:
    """Logits of each ONNX file on the saved images (numpy + onnxruntime only: this runs under emulation);
    ``precise``: with :data:`PRECISION_OPTION` on."""
    import onnxruntime as ort

    x = np.load(inputs)["x"]
    logits = {}
    for i, f in enumerate(files):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        if precise:
            so.add_session_config_entry(PRECISION_OPTION, "1")
        sess = ort.InferenceSession(f, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        logits[f"m{i}"] = np.concatenate([sess.run(None, {name: x[j:j + 64]})[0] for j in range(0, len(x), 64)])
    np.savez(out, **logits)


PROBE_EXACT = 64 * 255 * 127


def saturation_probe() -> int:
    """Print onnxruntime's int32 sum of 64 products 255 x 127 (exact: 2,072,640); 0 when it is exact."""
    got = probe_sum()
    print(f"u8 x s8 probe: 64 x 255 x 127 = {PROBE_EXACT}, onnxruntime {got}")
    return 0 if got == PROBE_EXACT else 1


def probe_sum() -> int:
    """onnxruntime's int32 sum of 64 products 255 x 127: :data:`PROBE_EXACT` where its u8 x s8 kernel is exact (VNNI),
    less where it adds pairs into a saturating int16 (AVX2: 32 x 32,767)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    k = 64
    weights = numpy_helper.from_array(np.full((k, 4), 127, np.int8), "B")
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "probe",
                              [helper.make_tensor_value_info("A", TensorProto.UINT8, [None, k])],
                              [helper.make_tensor_value_info("Y", TensorProto.INT32, [None, 4])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return int(sess.run(None, {"A": np.full((8, k), 255, np.uint8)})[0][0, 0])


def run_kinds(cpu: str, images: np.ndarray, files: list[Path], kinds: tuple[str, ...] = KINDS
              ) -> dict[str, list[np.ndarray]]:
    """Logits of ``files`` here and under ``qemu-x86_64 -cpu CPU`` (kind ``emulated``; ``emulated+option``: with
    :data:`PRECISION_OPTION` on)."""
    out: dict[str, list[np.ndarray]] = {}
    with tempfile.TemporaryDirectory(prefix="cpu-kinds-") as work:
        inputs = Path(work) / "x.npz"
        np.savez(inputs, x=images)
        for kind in kinds:
            dst = Path(work) / f"{kind}.npz"
            mode = "--child-precise" if kind.endswith("+option") else "--child"
            cmd = [sys.executable, __file__, mode, str(inputs), str(dst), *map(str, files)]
            if kind.startswith("emulated"):
                cmd = [*other_cpu(cpu), *cmd]
            subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL if kind != "here" else None)
            got = np.load(dst)
            out[kind] = [got[f"m{i}"] for i in range(len(files))]
    return out


def other_cpu(cpu: str) -> list[str]:
    """The command prefix that runs a program on the other CPU: ``as-avx2``: scripts/as_avx2.sh (this CPU with
    AVX-512/VNNI hidden from CPUID, native); else QEMU's model ``cpu`` (-U: not the mask's LD_PRELOAD, if set)."""
    return ["bash", str(AS_AVX2)] if cpu == "as-avx2" else [QEMU, "-U", "LD_PRELOAD", "-cpu", cpu]


def tags_of(arm: Path) -> dict[str, Path]:
    """TAG -> export folder (``arm/TAG/export.json``; or ``arm`` itself, tagged by its name)."""
    if (arm / "export.json").is_file():
        return {arm.name: arm}
    return {p.parent.name: p.parent for p in sorted(arm.glob("*/export.json"))}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("--child", "--child-precise"):
        child(sys.argv[2], sys.argv[3], sys.argv[4:], precise=sys.argv[1] == "--child-precise")
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arm", action="append", required=True, help="NAME=DIR (repeated); the first is compared "
                    "with each other")
    ap.add_argument("--cpu", default="Haswell", help="QEMU CPU model (default: Haswell: AVX2, no VNNI, no AVX-512), or "
                    "as-avx2: this CPU with AVX-512/VNNI hidden from CPUID (scripts/as_avx2.sh; native, the same kernels)")
    ap.add_argument("--jobs", type=int, default=2, help="runs scored at a time (default: 2)")
    ap.add_argument("--with-option", action="store_true", help=f"also run emulated with onnxruntime's {PRECISION_OPTION} "
                    "on (u8 x u8 where weights leave [-64, 63]: its own fix, off by default)")
    args = ap.parse_args()
    if args.cpu != "as-avx2" and shutil.which(QEMU) is None:
        raise SystemExit(f"{QEMU} not found: install QEMU's user-mode emulator (Debian: apt install qemu-user)")

    from float_fallback import test_split
    from int8_students import cpu_flags
    from qad_arms import by_student, figures, fmt

    from distill.export.config import ExportConfig
    from distill.records import ExportReport
    from distill.report.stats import mcnemar, paired

    arms = dict(a.split("=", 1) for a in args.arm)
    tags = {name: tags_of(Path(d)) for name, d in arms.items()}
    common = [t for t in tags[next(iter(arms))] if all(t in found for found in tags.values())]
    if not common:
        raise SystemExit("no run (TAG/export.json) is in every arm")
    model, flags = cpu_flags()
    print(f"here: {model}; SIMD flags: {' '.join(flags)}; emulated: {' '.join(other_cpu(args.cpu))}")
    here_exact = saturation_probe() == 0
    probe = subprocess.run([*other_cpu(args.cpu), sys.executable, "-c",
                            f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                            "import int8_cpu_kinds as k; raise SystemExit(k.saturation_probe())"],
                           capture_output=True, text=True)
    print(f"emulated {probe.stdout.strip()} ({'exact' if probe.returncode == 0 else 'saturated'}); here "
          f"{'exact' if here_exact else 'saturated'}\n")

    kinds = (*KINDS, "emulated+option") if args.with_option else KINDS
    jobs = []
    for tag in common:
        reps = {a: ExportReport.read(tags[a][tag]) for a in arms}
        first = next(iter(arms))
        base = ExportConfig.model_validate({k: v for k, v in reps[first].config.items()
                                            if k in ExportConfig.model_fields})
        images = test_split(base, Path(reps[first].checkpoint))
        fp32 = tags[first][tag] / next(m.file for m in reps[first].models if m.precision == "fp32")
        int8 = [tags[a][tag] / next(m.file for m in reps[a].models if m.precision == "int8"
                                    and (m.model_extra or {}).get("flavour") == "ort-cpu") for a in arms]
        jobs.append((tag, images, [fp32, *int8]))
    # each run's two processes (here, emulated) are single-threaded: --jobs runs at a time
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        outputs = list(pool.map(lambda job: run_kinds(args.cpu, np.concatenate(list(job[1].batches(256))), job[2],
                                                      kinds), jobs))
    rows = []
    for (tag, images, _), logits in zip(jobs, outputs):
        names = list(images.domain_names)
        ref = logits["here"][0].argmax(1)  # fp32 here: the reference on both kinds
        fp32_correct = ref == images.labels
        scored, between = {}, {}
        for i, a in enumerate(arms, start=1):
            tops = {k: logits[k][i].argmax(1) for k in kinds}
            for k in kinds:
                scored[a, k] = figures(tops[k] != ref, tops[k] == images.labels, fp32_correct, images.domains, names)
                between[a, k] = 100.0 * float((tops["here"] != tops[k]).mean())
        fp32_moved = 100.0 * float((logits["emulated"][0].argmax(1) != ref).mean())
        rows.append({"tag": tag, "student": tag.rsplit("-e", 1)[0], "scored": scored, "between": between,
                     "fp32_moved": fp32_moved, "images": len(images)})
        print(f"[{tag}] " + ", ".join(f"{a}: here {scored[a, 'here'].disagree_mean:.2f}, emulated "
                                      f"{scored[a, 'emulated'].disagree_mean:.2f}" for a in arms), file=sys.stderr)

    head = " | ".join(f"{a}: disagreement here / {args.cpu} (mean, worst), acc drop worst here / {args.cpu}, "
                      "int8 top-1 differs between kinds" + (f" (; {args.cpu} with {PRECISION_OPTION}: disagreement, "
                                                            "differs from here)" if args.with_option else "")
                      for a in arms)
    print(f"| run | test images | fp32 top-1 differs between kinds | {head} |")
    print("|---|---:|---:|" + "---|" * len(arms))
    for r in rows:
        cells = []
        for a in arms:
            h, e = r["scored"][a, "here"], r["scored"][a, "emulated"]
            option = "" if not args.with_option else (
                f"; with the option: {r['scored'][a, 'emulated+option'].disagree_mean:.2f}, "
                f"{r['between'][a, 'emulated+option']:.2f} % differ")
            cells.append(f"{h.disagree_mean:.2f} / **{e.disagree_mean:.2f}** ({h.disagree_worst:.2f} / "
                         f"{e.disagree_worst:.2f}), {h.acc_drop_worst:+.2f} / {e.acc_drop_worst:+.2f}, "
                         f"{r['between'][a, 'emulated']:.2f} %{option}")
        print(f"| {r['tag']} | {r['images']} | {r['fp32_moved']:.2f} % | " + " | ".join(cells) + " |")
    print("\n| student | runs | " + " | ".join(f"{a}: disagreement mean here, {args.cpu}; acc drop worst here, "
                                              f"{args.cpu}" for a in arms) + " |")
    print("|---|---:|" + "---|" * len(arms))
    for student, mine in by_student(rows).items():
        cells = [f"{fmt([r['scored'][a, 'here'].disagree_mean for r in mine])}, "
                 f"{fmt([r['scored'][a, 'emulated'].disagree_mean for r in mine])}; "
                 f"{fmt([r['scored'][a, 'here'].acc_drop_worst for r in mine])}, "
                 f"{fmt([r['scored'][a, 'emulated'].acc_drop_worst for r in mine])}" for a in arms]
        print(f"| {student} | {len(mine)} | " + " | ".join(cells) + " |")
    names = list(arms)
    print()
    for k in kinds:
        for a in names[1:]:
            t = paired([r["scored"][a, k].disagree_mean for r in rows], [r["scored"][names[0], k].disagree_mean
                                                                         for r in rows])
            d = paired([r["scored"][a, k].acc_drop_worst for r in rows], [r["scored"][names[0], k].acc_drop_worst
                                                                          for r in rows])
            beyond = sum(mcnemar((~r["scored"][names[0], k].flips).tolist(), (~r["scored"][a, k].flips).tolist()).p
                         < 0.05 for r in rows)
            print(f"- {k}: {a} minus {names[0]} over {len(rows)} runs: disagreement {t.diff:+.2f} pts (paired t-test "
                  f"p = {t.p:.3g}), worst accuracy drop {d.diff:+.2f} (p = {d.p:.3g}); runs whose flips differ beyond "
                  f"chance (McNemar, images one file flips): {beyond}")
    for a in names:
        for k in kinds[1:]:
            t = paired([r["scored"][a, k].disagree_mean for r in rows], [r["scored"][a, "here"].disagree_mean
                                                                         for r in rows])
            print(f"- {a}: {k} ({args.cpu}) minus here: disagreement {t.diff:+.2f} pts (paired t-test p = {t.p:.3g})")


if __name__ == "__main__":
    main()
