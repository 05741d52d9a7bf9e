"""distill.data.classes: the student's classes among the data set's, and the one mapping onto them."""
from __future__ import annotations

import pytest
import torch

from distill.data.classes import NO_LABEL, ClassColumns, student_classes
from distill.errors import DistillError

CLASSES = ["cat", "dog", "eel", "fox"]


def test_student_classes_are_the_others_in_data_set_order():
    assert student_classes(CLASSES, []) == (CLASSES, None)
    assert student_classes(CLASSES, ["eel", "dog"]) == (["cat", "fox"], [0, 3])


def test_bad_withheld_names_are_one_line():
    with pytest.raises(DistillError, match="'cow' is not a class"):
        student_classes(CLASSES, ["dog", "cow"])
    with pytest.raises(DistillError, match="every class"):
        student_classes(CLASSES, CLASSES)


def test_columns_remap_labels_and_slice_logits_and_rows():
    columns = ClassColumns([0, 3], len(CLASSES))
    labels = torch.tensor([0, 1, 2, 3, NO_LABEL])
    assert columns.labels(labels).tolist() == [0, NO_LABEL, NO_LABEL, 1, NO_LABEL]
    logits = torch.arange(8.0).view(2, 4)
    assert columns.logits(logits).tolist() == [[0.0, 3.0], [4.0, 7.0]]
    assert columns.rows(torch.eye(4)).tolist() == [[1.0, 0, 0, 0], [0, 0, 0, 1.0]]


def test_no_withheld_class_is_the_identity():
    columns = ClassColumns(None, len(CLASSES))
    labels, logits = torch.tensor([3, NO_LABEL]), torch.randn(2, 4)
    assert columns.identity and columns.labels(labels) is labels and columns.logits(logits) is logits


def test_columns_given_as_an_iterator_are_read_once():
    """ClassColumns read ``columns`` twice: an iterator (a generator of ids) left an empty index, every column gone."""
    columns = ClassColumns(iter([0, 3]), len(CLASSES))
    assert columns.columns == [0, 3]
    assert columns.logits(torch.arange(8.0).view(2, 4)).tolist() == [[0.0, 3.0], [4.0, 7.0]]
    assert columns.labels(torch.tensor([0, 3])).tolist() == [0, 1]
