"""distill/report/withheld.py: accuracy on withheld classes, by hand on tiny tensors."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from distill.errors import DistillError
from distill.report.withheld import subset_correct, teacher_withheld_accuracy

DATA = ["zero", "one", "seven", "eight"]  # the dataset's class order (labels index it)


def test_only_withheld_rows_count_and_columns_are_matched_by_name() -> None:
    model = ["eight", "seven", "one", "zero"]  # the re-targeted model's column order differs
    labels = torch.tensor([2, 3, 3, 0, 1])  # seven, eight, eight, zero, one
    logits = torch.zeros(5, 4)
    logits[0, 1] = 1  # seven -> column "seven": right
    logits[1, 0] = 1  # eight -> column "eight": right
    logits[2, 1] = 1  # eight -> "seven": wrong
    logits[3, 2] = 1  # zero -> "one": wrong, but not a withheld class: not scored
    logits[4, 2] = 1  # one -> "one": not scored
    assert subset_correct(logits, labels, model, DATA, ["seven", "eight"]) == (2, 3)
    assert subset_correct(logits, labels, model, DATA, ["zero"]) == (0, 1)


def test_a_student_without_the_withheld_names_is_refused() -> None:
    with pytest.raises(DistillError, match="no column for seven"):
        subset_correct(torch.zeros(1, 2), torch.tensor([2]), ["zero", "one"], DATA, ["seven"])


def test_teacher_reads_view0_test_rows_of_each_domain() -> None:
    # rows: (domain, split, view, label, argmax); split codes: train 0, test 1
    table = [(0, 1, 0, 2, 2), (0, 1, 0, 3, 2), (0, 1, 1, 3, 3), (0, 0, 0, 2, 0), (1, 1, 0, 2, 2), (1, 1, 0, 0, 1)]
    d, s, v, y, p = (torch.tensor(c) for c in zip(*table))
    cache = SimpleNamespace(rows={"domain": d, "split": s, "view": v, "label": y,
                                  "logits": torch.nn.functional.one_hot(p, 4).half()},
                            domains=["mnist", "mnist_m"], classes=DATA)
    # mnist: view-0 test rows of seven/eight: (2 -> 2 right), (3 -> 2 wrong); the view-1 and train rows are not read
    assert teacher_withheld_accuracy(cache, ["seven", "eight"]) == {"mnist": 0.5, "mnist_m": 1.0}
    assert teacher_withheld_accuracy(cache, ["seven", "eight"], domains=["mnist_m"]) == {"mnist_m": 1.0}
