"""`distill eval CKPT --data ROOT` on data whose classes are not the checkpoint's names the classes that differ."""
from __future__ import annotations

from pathlib import Path

import pytest

from distill.cli import EXIT_ERROR, main
from distill.student.model import Student, default_spec, save_student
from tests.shapes import CLASSES, make_shapes_root


def _checkpoint(classes: list[str], out: Path) -> Path:
    return save_student(Student(default_spec("test_resnet", classes, 16)).eval(), out)


@pytest.mark.parametrize("classes, says", [
    (["circle", "square", "triangle"], "only the checkpoint has 'triangle'; only {root} has 'stripes'"),  # same count
    (["square", "circle", "stripes"], "the same classes in another order (class 0 is 'square' in the checkpoint, "
                                      "'circle' in {root})"),
])
def test_eval_names_the_classes_that_differ(tmp_path: Path, capsys: pytest.CaptureFixture, classes: list[str],
                                            says: str) -> None:
    root = make_shapes_root(tmp_path / "data", ["red"], per_class=1)
    ckpt = _checkpoint(classes, tmp_path / "ckpt")
    assert main(["eval", str(ckpt), "--data", str(root), "--no-progress"]) == EXIT_ERROR
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: {ckpt}: the checkpoint's classes (3) differ from {root}'s (3): {says.format(root=root)}; "
                   "evaluate on the data it was trained for"]


def test_class_difference_shows_the_first_few() -> None:
    from distill.data.classes import class_difference

    ours = [f"c{i}" for i in range(8)]
    assert class_difference(ours, CLASSES, "A", "B", show=2) == ("only A has 'c0', 'c1' and 6 more; only B has "
                                                                "'circle', 'square' and 1 more")
    assert class_difference(["a", "a"], ["a"], "A", "B") == "A lists 2 names, B 1"
