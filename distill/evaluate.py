"""Per-domain accuracy of a classifier on a DomainFolder split.

Accuracy is a fraction in [0, 1] here, as everywhere data is handed on or written; only
printing turns it into a percent.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from distill.data.classes import ClassColumns
from distill.data.folder import DomainFolder, Sample
from distill.data.images import load_rgb


class ImageList(Dataset):
    """Samples -> (preprocessed image [3, H, W], label, sample index)."""

    def __init__(self, dataset: DomainFolder, samples: Sequence[Sample], transform: Callable):
        self.dataset, self.samples, self.transform = dataset, list(samples), transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        s = self.samples[i]
        return self.transform(load_rgb(self.dataset.path(s))), s.label, s.index


def decode_split(dataset: DomainFolder, domains: Sequence[str], transform: Callable, split: str,
                 batch_size: int = 256, workers: int = 0, max_images: int | None = None
                 ) -> dict[str, tuple[Tensor, Tensor]]:
    """Each domain's split decoded once: ``{domain: (images [N, 3, H, W], labels [N])}``.

    ``transform`` maps a PIL image to a tensor; ``max_images`` keeps the first N of each domain
    (dataset order). Domains with no images in the split are left out.
    """
    data: dict[str, tuple[Tensor, Tensor]] = {}
    for d in domains:
        samples = dataset.select([d], split)
        if max_images:
            samples = samples[:max_images]
        if not samples:
            continue
        xs, ys = [], []
        for x, y, _ in DataLoader(ImageList(dataset, samples, transform), batch_size=batch_size, num_workers=workers):
            xs.append(x)
            ys.append(y)
        data[d] = (torch.cat(xs), torch.cat(ys))
    return data


def seen_classes(data: dict[str, tuple[Tensor, Tensor]], columns: ClassColumns) -> dict[str, tuple[Tensor, Tensor]]:
    """Each domain's images of the model's classes, labels remapped to its columns (domains left empty dropped)."""
    out = {}
    for domain, (images, labels) in data.items():
        remapped = columns.labels(labels)
        keep = remapped >= 0
        if bool(keep.any()):
            out[domain] = (images[keep], remapped[keep])
    return out


class DomainEvaluator:
    """Evaluates a model on each domain's split; decoded tensors are kept for reuse.

    Args:
        dataset: the data set.
        domains: domains to evaluate.
        transform: PIL -> normalized tensor (the student's eval preprocessing).
        split: "test" (default), "val" (model selection) or "train".
        class_columns: the dataset class ids the model predicts (``data.withhold_classes`` leaves some
            out): only images of those classes are scored, labels remapped to the model's columns.
            None: every class, in dataset order.
    """

    def __init__(self, dataset: DomainFolder, domains: Sequence[str], transform: Callable, split: str = "test",
                 batch_size: int = 256, workers: int = 0, class_columns: Sequence[int] | None = None):
        self.domains, self.split = list(domains), split
        self._data = decode_split(dataset, self.domains, transform, split, batch_size, workers)
        if class_columns is not None:
            self._data = seen_classes(self._data, ClassColumns(class_columns, len(dataset.classes)))
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, predict: Callable[[Tensor], Tensor], device: str | torch.device = "cpu") -> dict[str, float]:
        """Accuracy per domain as a fraction in [0, 1] (domains with no images in the split are omitted).

        ``predict`` maps preprocessed images [B, 3, H, W] on ``device`` to logits [B, C].
        """
        out = {}
        for d, (x, y) in self._data.items():
            correct = 0
            for i in range(0, len(x), self.batch_size):
                logits = predict(x[i:i + self.batch_size].to(device))
                correct += int((logits.argmax(-1).cpu() == y[i:i + self.batch_size]).sum())
            out[d] = correct / len(x)
        return out
