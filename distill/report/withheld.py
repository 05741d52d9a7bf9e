"""Accuracy on classes withheld from every student label: the open-vocabulary check.

An open-vocabulary student (``student.head: text``) is trained with ``data.withhold_classes``:
no label ever names those classes. After ``distill export --classes FILE`` (or
:func:`distill.export.retarget.retarget`) re-targets it to every name, it is scored here on the
test images of the withheld classes only, choosing among *all* its class names, next to the
teacher's zero-shot answer on the same images (its view-0 logits in the cache). The issue's
target: student >= 0.8x the teacher. Accuracies are fractions.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from distill.data import DomainFolder
from distill.errors import DistillError
from distill.evaluate import decode_split
from distill.student.model import Student
from distill.teacher.cache import TeacherCache
from distill.teacher.cache.format import SPLIT_CODES


def subset_correct(logits: Tensor, labels: Tensor, column_names: Sequence[str], label_names: Sequence[str],
                   classes: Sequence[str]) -> tuple[int, int]:
    """(correct, scored) over the rows whose label is one of ``classes``.

    ``labels`` index ``label_names`` (the dataset's class list); ``logits`` columns are
    ``column_names`` (the model's class list, any order). A row is correct when the argmax
    column names its label's class.
    """
    missing = [c for c in classes if c not in column_names]
    if missing:
        raise DistillError(f"the model has no column for {', '.join(missing)}: re-target it to every class name "
                           f"first (distill export --classes FILE)")
    wanted = torch.tensor([label_names.index(c) for c in classes], dtype=torch.long)
    keep = torch.isin(labels.long(), wanted)
    if not keep.any():
        return 0, 0
    column_of = torch.full((len(label_names),), -1, dtype=torch.long)
    for j, name in enumerate(column_names):
        if name in label_names:
            column_of[label_names.index(name)] = j
    predicted = logits[keep].argmax(-1)
    return int((predicted == column_of[labels[keep].long()]).sum()), int(keep.sum())


@torch.no_grad()
def student_withheld_accuracy(student: Student, dataset: DomainFolder, domains: Sequence[str],
                              classes: Sequence[str], batch_size: int = 256) -> dict[str, float]:
    """Per domain: the student's accuracy on test images of ``classes``, among all its class names."""
    student.eval()
    names = list(student.spec.class_names)
    out: dict[str, float] = {}
    for domain, (images, labels) in decode_split(dataset, domains, student.preprocess(), "test", batch_size).items():
        logits = torch.cat([student(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
        correct, scored = subset_correct(logits, labels, names, dataset.classes, classes)
        if scored:
            out[domain] = correct / scored
    return out


def teacher_withheld_accuracy(cache: TeacherCache, classes: Sequence[str],
                              domains: Sequence[str] | None = None) -> dict[str, float]:
    """Per domain: the teacher's zero-shot accuracy (view 0) on the test images of ``classes``."""
    rows = cache.rows
    test = (rows["view"] == 0) & (rows["split"].long() == SPLIT_CODES["test"])
    out: dict[str, float] = {}
    for di, domain in enumerate(cache.domains):
        if domains is not None and domain not in domains:
            continue
        m = test & (rows["domain"].long() == di)
        correct, scored = subset_correct(rows["logits"][m].float(), rows["label"][m], cache.classes, cache.classes,
                                         classes)
        if scored:
            out[domain] = correct / scored
    return out
