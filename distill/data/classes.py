"""The student's classes among a data set's: all of them, or all but the withheld ones.

``data.withhold_classes`` names classes no student label ever names (the open-vocabulary test:
a text-head student re-targeted to them at export). The student's classes are the others, in
the data set's order; :class:`ClassColumns` maps data set class ids onto them. The one home of
that mapping: the trainer remaps labels and slices the teacher's logits with it, the evaluator
keeps and relabels seen-class images with it.
"""
from __future__ import annotations

from typing import Sequence, overload

import torch
from torch import Tensor

from distill.errors import DistillError

#: the label of a row without one (contract of distill.strategies: every cross-entropy ignores it)
NO_LABEL = -1


def student_classes(dataset_classes: Sequence[str], withhold: Sequence[str]) -> tuple[list[str], list[int] | None]:
    """(the student's class names, their data set class ids; None when nothing is withheld).

    Raises:
        DistillError: a withheld name that is not a class of the data set (named), or all of them withheld.
    """
    classes = list(dataset_classes)
    for name in withhold:
        if name not in classes:
            raise DistillError(f"data.withhold_classes: '{name}' is not a class of the data set "
                               f"({', '.join(classes[:12])}{' ...' if len(classes) > 12 else ''})")
    if not withhold:
        return classes, None
    columns = [i for i, c in enumerate(classes) if c not in set(withhold)]
    if not columns:
        raise DistillError("data.withhold_classes: withholds every class; the student needs at least one")
    return [classes[i] for i in columns], columns


def class_difference(ours: Sequence[str], theirs: Sequence[str], our_name: str, their_name: str,
                     show: int = 5) -> str:
    """What tells two class lists apart, for a one-line message: the first ``show`` names only one of them has
    ("only the checkpoint has 'dog'; only pacs has 'cat'"), or, when both name the same classes, where their
    order first differs."""
    def few(names: list[str]) -> str:
        return ", ".join(map(repr, names[:show])) + (f" and {len(names) - show} more" if len(names) > show else "")

    only_ours = [c for c in ours if c not in set(theirs)]
    only_theirs = [c for c in theirs if c not in set(ours)]
    parts = ([f"only {our_name} has {few(only_ours)}"] if only_ours else []) + \
        ([f"only {their_name} has {few(only_theirs)}"] if only_theirs else [])
    if parts:
        return "; ".join(parts)
    at = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), None)
    if at is None:  # the same names, one list repeating some
        return f"{our_name} lists {len(ours)} names, {their_name} {len(theirs)}"
    return f"the same classes in another order (class {at} is {ours[at]!r} in {our_name}, {theirs[at]!r} in {their_name})"


class ClassColumns:
    """Data set class ids -> the student's columns (``columns`` None: the identity, nothing withheld)."""

    def __init__(self, columns: Sequence[int] | None, num_dataset_classes: int):
        self.columns = None if columns is None else list(columns)
        self._index: Tensor | None = None
        self._label_map: Tensor | None = None
        if columns is not None:
            self._index = torch.tensor(self.columns, dtype=torch.long)
            self._label_map = torch.full((num_dataset_classes,), NO_LABEL, dtype=torch.long)
            self._label_map[self._index] = torch.arange(len(self._index))
        self._on_device: dict[tuple[str, torch.device], Tensor] = {}  # copied once per device, not per batch

    def _at(self, which: str, table: Tensor, device: torch.device) -> Tensor:
        """``table`` (``self._index`` or ``self._label_map``, named by ``which``) on ``device``."""
        key = (which, device)
        if key not in self._on_device:
            self._on_device[key] = table.to(device)
        return self._on_device[key]

    @property
    def identity(self) -> bool:
        return self.columns is None

    def labels(self, labels: Tensor) -> Tensor:
        """[B] data set class ids -> student class ids, :data:`NO_LABEL` for withheld classes (and kept -1s)."""
        if self._label_map is None:
            return labels
        table = self._at("labels", self._label_map, labels.device)
        return torch.where(labels >= 0, table[labels.clamp(min=0)], labels)

    @overload
    def logits(self, logits: Tensor) -> Tensor: ...
    @overload
    def logits(self, logits: None) -> None: ...

    def logits(self, logits: Tensor | None) -> Tensor | None:
        """[B, C_dataset] teacher logits -> [B, C_student]: the student's columns."""
        if logits is None or self._index is None:
            return logits
        return logits[:, self._at("index", self._index, logits.device)]

    def rows(self, table: Tensor | None) -> Tensor | None:
        """[C_dataset, ...] -> [C_student, ...] (the teacher's text embeddings)."""
        if table is None or self._index is None:
            return table
        return table[self._at("index", self._index, table.device)]
