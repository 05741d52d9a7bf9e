"""Does int8 pay on ONNX Runtime CPU, per student? int8/fp32 latency, int8 vs fp32 disagreement,
and what ``distill export`` recommends, for the timm students users pick.

    .venv/bin/python benchmarks/int8_students.py                         # the default students
    .venv/bin/python benchmarks/int8_students.py --students resnet18 --size 64 --steps 20

Each student is trained ``--steps`` steps of plain cross-entropy on the built-in digits quick
suite (mnist + mnist_m train split; a few steps: its accuracy means nothing, so none is
reported), then exported with the real exporter (fp32, fp16, ort-cpu int8; the label-free
fallback is off by default, ``--max-fallback-layers``). Beside the export's own check, fp32 and int8 are timed
interleaved (fp32, int8, fp32, ...) at each ``--batches`` so that load from other processes hits
both alike; the ratio p50(int8)/p50(fp32) is the figure, milliseconds are for reference.
Prints one Markdown table (paste it into benchmarks/RESULTS.md with the command and lscpu flags).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill.bench.compare import compare_latency  # noqa: E402
from distill.data.builtin import materialize  # noqa: E402
from distill.data.folder import DomainFolder  # noqa: E402
from distill.export import ExportConfig, export_checkpoint  # noqa: E402
from distill.export.images import load_images  # noqa: E402
from distill.export.int8_step import int8_file  # noqa: E402
from distill.student.model import Student, default_spec, save_student  # noqa: E402

DEFAULT = "mobilenetv3_small_050,mobilenetv3_large_100,mobilenetv4_conv_small,resnet18,efficientnet_lite0"
SOURCES, TARGETS = ["mnist", "mnist_m"], ["optdigits", "mnist_c"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cpu_flags() -> tuple[str, list[str]]:
    """lscpu's model name and the SIMD flags that decide int8 speed."""
    out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name:")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines() if ln.startswith("Flags:")), [])
    keep = [f for f in flags if f.startswith(("avx", "amx", "fma", "f16c"))]
    return model, keep


def train(arch: str, root: Path, out: Path, size: int, steps: int, seed: int) -> Path:
    """``steps`` of cross-entropy at ``size`` px on the source domains; saves a checkpoint folder."""
    torch.manual_seed(seed)
    folder = DomainFolder(root)
    spec = default_spec(arch, folder.classes, input_size=size)
    student = Student(spec)
    imgs = load_images(folder, folder.select(SOURCES, "train"), spec)
    x, y = torch.from_numpy(imgs.normalize(imgs.images)), torch.from_numpy(imgs.labels)
    opt = torch.optim.AdamW(student.parameters(), lr=2e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    student.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (32,), generator=g)
        loss = torch.nn.functional.cross_entropy(student(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return save_student(student.eval(), out, extra_provenance={"strategy": "erm (benchmark)",
                                                               "source_domains": SOURCES})


def interleaved_ratios(files: dict[str, Path], batch: int, threads: int | None, iters: int,
                       repeats: int) -> dict[str, tuple[float, float, float, float, float]]:
    """``repeats`` interleaved comparisons of ``files`` (name -> .onnx; the first is the baseline) at ``batch``
    (``iters`` timed runs at batch 1, a third, at least 5, at larger batches).

    Returns, per model after the first: (median ratio p50(model)/p50(baseline) over the repeats, baseline p50 ms
    and model p50 ms of the median repeat, min ratio, max ratio)."""
    runs = [compare_latency(files, batch=batch, threads=threads, iters=iters if batch == 1 else max(5, iters // 3),
                            seed=i) for i in range(repeats)]
    base = next(iter(files))
    out = {}
    for name in list(files)[1:]:
        rs = [r["ratio_p50"][name] for r in runs]
        srt = sorted(rs)
        mid = runs[rs.index(srt[len(srt) // 2])]
        out[name] = (srt[len(srt) // 2], mid["stats"][base]["p50"], mid["stats"][name]["p50"], srt[0], srt[-1])
    return out


def one(arch: str, root: Path, work: Path, args: argparse.Namespace) -> dict:
    t0 = time.time()
    ckpt = train(arch, root, work / f"{arch}-ckpt", args.size, args.steps, args.seed)
    t_train = time.time() - t0
    out = work / "export" / arch
    rep = export_checkpoint(ckpt, out, ExportConfig(
        precisions=("fp32", "fp16", "int8"), data_root=str(root), calib_domains=tuple(SOURCES), target_domains=tuple(TARGETS),
        int8_flavour="ort-cpu", max_drop=args.max_drop, calib_count=args.calib_count, eval_count=args.eval_count,
        latency_iters=args.iters, max_fallback_layers=args.max_fallback_layers,
        sensitivity_count=args.sensitivity_count, threads=args.threads), log=lambda s: log("    " + s))
    int8 = next(m for m in rep.models if m.precision == "int8")
    x = int8.model_extra or {}
    fb = x["fallback"]
    files = {"fp32": out / "model.fp32.onnx", "int8": out / int8_file("ort-cpu")}
    ratios = {b: interleaved_ratios(files, b, args.threads, args.iters, args.repeats)["int8"] for b in args.batches}
    rec = rep.recommendation
    row = {"arch": arch, "train_s": t_train, "total_s": time.time() - t0, "ratios": ratios,
           "export_ratio": x["latency_check"]["ratio_vs_fp32"],
           "disagree_before": max(fb["before"]["disagreement_pts"].values()),
           "disagree_after": max(x["disagreement_pts"].values()), "kept_float": len(fb["kept_float"]),
           "float_ops": x.get("float_op_types") or {},
           "recommendation": rec.line() if rec else "–", "choice": (rec.precision if rec else "–")}
    log(f"  {arch}: " + ", ".join(f"batch {b} {v[0]:.2f}x" for b, v in ratios.items())
        + f", disagreement {row['disagree_before']:.2f} -> {row['disagree_after']:.2f} pts; {row['recommendation']}")
    return row


def render(rows: list[dict], args: argparse.Namespace) -> str:
    bs = args.batches
    head = ("| student | " + " | ".join(f"int8/fp32 batch {b}: median [range] of repeats (fp32 / int8 p50 ms)" for b in bs)
            + " | worst disagreement before → after fallback, pts (layers kept float) | ops int8 still runs in float "
            "| recommendation |")
    lines = [head, "|---|" + "---:|" * len(bs) + "---:|---|---|"]
    for r in rows:
        cells = [f"**{v[0]:.2f}** [{v[3]:.2f}–{v[4]:.2f}] ({v[1]:.1f} / {v[2]:.1f})" for v in (r["ratios"][b] for b in bs)]
        ops = ", ".join(f"{k} {v}" for k, v in r["float_ops"].items()) or "none"
        lines.append(f"| {r['arch']} | " + " | ".join(cells)
                     + f" | {r['disagree_before']:.2f} → {r['disagree_after']:.2f} ({r['kept_float']}) | {ops} "
                     f"| {r['choice']} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--students", default=DEFAULT, help="comma-separated timm names")
    p.add_argument("--size", type=int, default=64, help="input size in px")
    p.add_argument("--steps", type=int, default=20, help="training steps per student (batch 32)")
    p.add_argument("--batches", default="1,32", help="latency batch sizes")
    p.add_argument("--iters", type=int, default=15, help="interleaved timed runs at batch 1 (a third at larger)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved comparisons per batch size (median reported)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all)")
    p.add_argument("--calib-count", type=int, default=128, help="32 per domain: one image is 3.1 pts")
    p.add_argument("--eval-count", type=int, default=32)
    p.add_argument("--max-drop", type=float, default=1.0)
    p.add_argument("--max-fallback-layers", type=int, default=0,
                   help="0: no fallback (its layer ranking costs minutes per student on 2 cores)")
    p.add_argument("--sensitivity-count", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="suite ROOT (default: the quick digits suite in a temp folder)")
    p.add_argument("--keep", default=None, metavar="DIR", help="keep the checkpoints and exports in DIR (DIR/export/ARCH: "
                   "an arm for int8_cpu_speed.py); default: a temp folder, removed")
    args = p.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    torch.set_num_threads(args.threads or torch.get_num_threads())
    model, flags = cpu_flags()
    log(f"CPU: {model}; flags: {' '.join(flags)}")
    with tempfile.TemporaryDirectory(prefix="int8-students-") as tmp:
        work = Path(args.keep or tmp)
        root = Path(args.data) if args.data else materialize(work / "data", quick=True)
        rows = []
        for arch in args.students.split(","):
            log(f"{arch}:")
            rows.append(one(arch, root, work, args))
    print(f"CPU: {model}; flags: {' '.join(flags)}\n")
    print(render(rows, args))
    print()
    for r in rows:
        print(f"- {r['arch']} ({r['train_s']:.0f} s training, {r['total_s']:.0f} s in all): {r['recommendation']}")


if __name__ == "__main__":
    main()
