"""Time per training image: erm vs kd from the cache vs kd with the teacher run online.

For each (teacher, student) pair, in one process and interleaved (these machines are noisy),
it times the real strategy modules on an in-memory batch at 224 px:

  (a) erm         — a student training step on labels
  (b) kd          — the cached rows' lookup (a real TeacherCache) + a kd training step
  (c) kd_online   — the teacher's forward on the batch + a kd training step
  parts: a student kd step alone, a teacher forward alone

Data loading is excluded from all five (it is the same for each). The saving a cache can
give is bounded by (student step + teacher forward) / student step, so it is large only for
large teachers. Targets: (b)/(a) <= 1.15 and (c)/(b) >= 0.9 x that bound.

Usage:
    .venv/bin/python benchmarks/train_throughput.py [--batch 8] [--reps 3] [--threads 2]
        [--teachers ViT-B-32,ViT-L-14] [--students mobilenetv3_large_100,resnet18]
Random weights are fine for timing (no download needed).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from distill.records import CacheDataset, CacheManifest, CacheViews
from distill.strategies import Batch, StrategyContext, create_strategy
from distill.student.model import Student, default_spec
from distill.teacher import Teacher
from distill.teacher.cache import TeacherCache

CLASSES = [f"class{i}" for i in range(10)]


def fake_cache(n_rows: int, dim: int, classes: int) -> TeacherCache:
    """A real TeacherCache object over random rows (the reader's lookup path, no disk)."""
    g = torch.Generator().manual_seed(0)
    rows = {
        "image_emb": torch.randn(n_rows, dim, generator=g).half(),
        "logits": torch.randn(n_rows, classes, generator=g).half(),
        "sample_index": torch.arange(n_rows, dtype=torch.int64),
        "view": torch.zeros(n_rows, dtype=torch.int16),
        "domain": torch.zeros(n_rows, dtype=torch.int16),
        "label": torch.zeros(n_rows, dtype=torch.int16),
        "split": torch.zeros(n_rows, dtype=torch.uint8),
        "view_params": torch.zeros(n_rows, 5),
    }
    manifest = CacheManifest.model_construct(  # unvalidated: only the fields the reader's lookup path uses
        classes=CLASSES, dataset=CacheDataset.model_construct(domains=["d"]), views=CacheViews.model_construct(count=1),
        rows=n_rows, skipped=[])
    return TeacherCache("<memory>", manifest, rows, torch.randn(classes, dim))


def timed(fn, reps_inner: int = 1) -> float:
    t0 = time.perf_counter()
    for _ in range(reps_inner):
        fn()
    return (time.perf_counter() - t0) / reps_inner


def bench_pair(teacher: Teacher, student_arch: str, batch: int, reps: int) -> dict[str, float]:
    size = teacher.preprocess_info.size
    pixels = torch.rand(batch, 3, *size)
    labels = torch.randint(0, len(CLASSES), (batch,))
    index = torch.randint(0, 10_000, (batch,))
    cache = fake_cache(10_000, teacher.embed_dim, len(CLASSES))

    def strategy(name: str):
        torch.manual_seed(0)
        student = Student(default_spec(student_arch, CLASSES, size[0]))
        mean = torch.tensor(student.spec.mean).view(1, 3, 1, 1)
        std = torch.tensor(student.spec.std).view(1, 3, 1, 1)
        info = teacher.preprocess_info
        tmean, tstd = torch.tensor(info.mean).view(1, 3, 1, 1), torch.tensor(info.std).view(1, 3, 1, 1)
        ctx = StrategyContext(len(CLASSES), CLASSES, teacher=teacher, teacher_input=lambda px: (px - tmean) / tstd)
        s = create_strategy(name, student, None, ctx).train()
        opt = torch.optim.AdamW([p for p in s.parameters() if p.requires_grad], lr=1e-4)
        return s, opt, (pixels - mean) / std

    def step(s, opt, b: Batch) -> None:
        loss = s(b)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    erm, erm_opt, images = strategy("erm")
    kd, kd_opt, _ = strategy("kd")
    kdo, kdo_opt, _ = strategy("kd_online")
    tin = kdo.ctx.teacher_input

    def run_a():
        step(erm, erm_opt, Batch(pixels, images, labels))

    def run_b():
        rows = cache.lookup(index, torch.zeros_like(index))
        step(kd, kd_opt, Batch(pixels, images, labels, teacher_logits=rows["logits"], teacher_emb=rows["image_emb"]))

    fixed = cache.lookup(index, torch.zeros_like(index))

    def run_student():
        step(kd, kd_opt, Batch(pixels, images, labels, teacher_logits=fixed["logits"]))

    def run_c():
        step(kdo, kdo_opt, Batch(pixels, images, labels))

    def run_teacher():
        with torch.no_grad():
            teacher(tin(pixels))

    def run_lookup():
        cache.lookup(index, torch.zeros_like(index))

    fns = {"erm": run_a, "kd_cache": run_b, "kd_online": run_c, "student_step": run_student,
           "teacher_fwd": run_teacher, "cache_lookup": run_lookup}
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):  # interleaved
        for k, fn in fns.items():
            times[k].append(timed(fn, 20 if k == "cache_lookup" else 1))
    return {k: statistics.median(v) / batch * 1000 for k, v in times.items()}  # ms per image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--teachers", default="ViT-B-32,ViT-L-14")
    ap.add_argument("--students", default="mobilenetv3_large_100,resnet18")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, {args.reps} interleaved reps; "
          f"ms per image (median)")
    head = ("teacher", "student", "erm (a)", "kd cache (b)", "kd online (c)", "student step", "teacher fwd",
            "lookup", "b/a", "c/b", "bound", "c/b / bound")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    ok = True
    for tname in args.teachers.split(","):
        teacher = Teacher(tname, None, CLASSES, ["a photo of a {}."]).eval()
        for sname in args.students.split(","):
            r = bench_pair(teacher, sname, args.batch, args.reps)
            bound = (r["student_step"] + r["teacher_fwd"]) / r["student_step"]
            ba, cb = r["kd_cache"] / r["erm"], r["kd_online"] / r["kd_cache"]
            ok &= ba <= 1.15 and cb >= 0.9 * bound
            print(f"| {tname} | {sname} | {r['erm']:.1f} | {r['kd_cache']:.1f} | {r['kd_online']:.1f} | "
                  f"{r['student_step']:.1f} | {r['teacher_fwd']:.1f} | {r['cache_lookup']:.3f} | {ba:.2f} | "
                  f"{cb:.2f} | {bound:.2f} | {cb / bound:.2f} |", flush=True)
    print(f"targets (b/a <= 1.15 and c/b >= 0.9 x bound): {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
