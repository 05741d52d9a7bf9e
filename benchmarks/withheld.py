"""Open vocabulary of one trained run: re-target its text-head student to every class name and score it
on the test images of the classes its run withheld, next to the teacher's zero-shot on the same images.

Usage:
    .venv/bin/python benchmarks/withheld.py RUN_DIR --data ROOT --cache CACHE [--pretrain-fraction 0.3]
Prints per-domain accuracy (%) and the student / teacher ratio (issue 12's target: >= 0.8x).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from distill.data import DomainFolder
from distill.export.retarget import retarget, teacher_source
from distill.records import RunSummary, pct
from distill.report.stats import mean_std
from distill.report.withheld import student_withheld_accuracy, teacher_withheld_accuracy
from distill.student.model import load_student
from distill.teacher.cache import TeacherCache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--pretrain-fraction", type=float, default=0.3)
    args = ap.parse_args()
    run = RunSummary.read(args.run)
    if not run.withheld_classes:
        raise SystemExit(f"{args.run}: the run withheld no class (data.withhold_classes)")
    dataset = DomainFolder(args.data, pretrain_fraction=args.pretrain_fraction)
    student = load_student(Path(run.checkpoint))
    student = retarget(student, list(dataset.classes), teacher_source(student))
    mine = student_withheld_accuracy(student, dataset, dataset.domains, run.withheld_classes)
    teacher = teacher_withheld_accuracy(TeacherCache.open(args.cache), run.withheld_classes)
    print(f"withheld {', '.join(run.withheld_classes)}; selected epoch {run.best_epoch}; test accuracy (%)")
    for name, acc in (("student (re-targeted)", mine), ("teacher zero-shot", teacher)):
        print(f"  {name:22s} " + "  ".join(f"{d} {pct(v)}" for d, v in acc.items())
              + f"  | mean {pct(mean_std(list(acc.values()))[0])}")
    ratio = mean_std(list(mine.values()))[0] / mean_std(list(teacher.values()))[0]
    print(f"student / teacher: {ratio:.2f}x (goal >= 0.8x)")


if __name__ == "__main__":
    main()
