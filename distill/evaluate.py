"""Per-domain accuracy of a classifier on a DomainFolder split.

Accuracy is a fraction in [0, 1] here, as everywhere data is handed on or written; only
printing turns it into a percent.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from distill.data.classes import ClassColumns
from distill.data.folder import DomainFolder, Sample
from distill.data.images import load_rgb


class TopK(NamedTuple):
    """A domain's top-1 and top-5 accuracy (fractions; top-5 NaN with fewer than 5 classes)."""

    top1: float
    top5: float


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
        return {d: acc.top1 for d, acc in self.accuracy(predict, device).items()}

    @torch.no_grad()
    def accuracy(self, predict: Callable[[Tensor], Tensor], device: str | torch.device = "cpu") -> dict[str, TopK]:
        """Top-1 and top-5 accuracy per domain (fractions; top-5 is NaN for a model of fewer than 5 classes)."""
        out = {}
        for d, (x, y) in self._data.items():
            correct, correct5, classes = 0, 0, 0
            for i in range(0, len(x), self.batch_size):
                logits = predict(x[i:i + self.batch_size].to(device))
                labels = y[i:i + self.batch_size]
                correct += int((logits.argmax(-1).cpu() == labels).sum())
                classes = logits.shape[-1]
                if classes >= 5:
                    correct5 += int((logits.topk(5, dim=-1).indices.cpu() == labels[:, None]).any(-1).sum())
            out[d] = TopK(correct / len(x), correct5 / len(x) if classes >= 5 else math.nan)
        return out
