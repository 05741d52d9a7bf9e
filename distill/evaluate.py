"""Per-domain accuracy of a classifier on a DomainFolder split.

Accuracy is a fraction in [0, 1] here, as everywhere data is handed on or written; only
printing turns it into a percent.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from distill.data.classes import ClassColumns
from distill.data.folder import DomainFolder, Sample
from distill.data.images import load_rgb
from distill.data.sample_table import sample_column
from distill.utils.loaders import WorkerLoader, bounded_worker_batches
from distill.utils.runtime import Dist, all_reduce_sum


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

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
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
        for x, y, _ in WorkerLoader(ImageList(dataset, samples, transform), batch_size=batch_size, num_workers=workers):
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


def rank_share(n: int, rank: int, world: int) -> range:
    """The positions ``0..n-1`` that rank ``rank`` of ``world`` evaluates: one contiguous share each,
    their sizes differing by at most one; the shares of all ranks are disjoint and cover ``range(n)``."""
    return range(rank * n // world, (rank + 1) * n // world)


class _SplitImages(Dataset):
    """Position -> (preprocessed image [3, H, W], label in the model's columns) over a split held as two
    int64 arrays (sample index, label): 16 bytes an image, shared by DataLoader workers without copies."""

    def __init__(self, dataset: DomainFolder, index: np.ndarray, labels: np.ndarray, transform: Callable):
        self.dataset, self.index, self.labels, self.transform = dataset, index, labels, transform

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        sample = self.dataset.sample_at(int(self.index[i]))
        return self.transform(load_rgb(self.dataset.path(sample))), int(self.labels[i])


class _DomainBatches:
    """Batch sampler: ``batch_size`` consecutive positions of one domain's share at a time, domain after domain
    (a batch never mixes domains), generated on the fly (no list that grows with the split)."""

    def __init__(self, shares: Sequence[range], batch_size: int):
        self.shares, self.batch_size = list(shares), batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for share in self.shares:
            for i in range(share.start, share.stop, self.batch_size):
                yield list(range(i, min(i + self.batch_size, share.stop)))

    def __len__(self) -> int:
        return sum(-(-len(s) // self.batch_size) for s in self.shares)


class DomainEvaluator:
    """Evaluates a model on each domain's split, streaming: images are decoded batch by batch by DataLoader
    workers at every call, nothing decoded is kept, and the split is shared among the ranks.

    The evaluator holds two int64 arrays over the split (sample index and label, 16 bytes an image); each
    rank evaluates one contiguous share of each domain (:func:`rank_share`) and the per-domain
    (correct, total) counts are summed over ranks (``torch.distributed.all_reduce``), so every rank returns
    the same accuracies, and a single process counts exactly what it counted when the split was decoded
    whole (same batches, same order). Every rank of a process group must call it together.

    Args:
        dataset: the data set.
        domains: domains to evaluate.
        transform: PIL -> normalized tensor (the student's eval preprocessing).
        split: "test" (default), "val" (model selection) or "train".
        batch_size: images per forward.
        workers: DataLoader workers decoding the batches (0: in this process), a fresh set every
            :data:`~distill.utils.loaders.WORKER_IMAGES` images (a worker's heap creeps with what it decodes).
        class_columns: the dataset class ids the model predicts (``data.withhold_classes`` leaves some
            out): only images of those classes are scored, labels remapped to the model's columns.
            None: every class, in dataset order.
        dist: this process's place in the process group (None: a single process).
    """

    def __init__(self, dataset: DomainFolder, domains: Sequence[str], transform: Callable, split: str = "test",
                 batch_size: int = 256, workers: int = 0, class_columns: Sequence[int] | None = None,
                 dist: Dist | None = None):
        self.domains, self.split = list(domains), split
        self.batch_size, self.workers, self.dist = batch_size, workers, dist or Dist()
        columns = ClassColumns(class_columns, len(dataset.classes)) if class_columns is not None else None
        index, labels, self._spans = [], [], {}  # _spans: domain -> (start, stop) in the arrays
        at = 0
        for d in self.domains:
            samples = dataset.select([d], split)
            idx = sample_column(samples, "index")
            lab = torch.from_numpy(sample_column(samples, "label"))
            if columns is not None:  # the model's classes only, labels remapped to its columns
                lab = columns.labels(lab)
                keep = (lab >= 0).numpy()
                idx, lab = idx[keep], lab[torch.from_numpy(keep)]
            if not len(idx):
                continue  # a domain with no (seen-class) images in the split is left out
            index.append(idx)
            labels.append(lab.numpy())
            self._spans[d] = (at, at + len(idx))
            at += len(idx)
        empty = np.zeros(0, dtype=np.int64)
        self._images = _SplitImages(dataset, np.concatenate(index) if index else empty,
                                    np.concatenate(labels) if labels else empty, transform)

    @property
    def present(self) -> list[str]:
        """The domains scored: those of ``domains`` with (seen-class) images in the split."""
        return list(self._spans)

    def __len__(self) -> int:
        """Images in the split (all ranks together)."""
        return len(self._images)

    def share(self, domain: str) -> range:
        """This rank's positions of ``domain`` (empty when the domain has no images in the split)."""
        start, stop = self._spans.get(domain, (0, 0))
        part = rank_share(stop - start, self.dist.rank, self.dist.world)
        return range(start + part.start, start + part.stop)

    def counts(self, predict: Callable[[Tensor], Tensor], device: str | torch.device = "cpu") -> dict[str, tuple[int, int]]:
        """``{domain: (correct, total)}`` summed over ranks (domains with no images in the split omitted)."""
        return self._tally(predict, device)[0]

    @torch.no_grad()
    def _tally(self, predict: Callable[[Tensor], Tensor], device: str | torch.device
               ) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]] | None]:
        """(top-1 ``{domain: (correct, total)}``, the same for top-5 or None for a model of fewer than 5
        classes), summed over ranks in one all-reduce."""
        device = torch.device(device)
        domains = list(self._spans)
        shares = [self.share(d) for d in domains]
        # top-1 correct per domain, top-5 correct per domain, and a last cell: 1 when this rank scored a model of
        # >= 5 classes (0 on a rank with no images, so the sum over ranks is > 0 exactly when top-5 was counted)
        tally = torch.zeros(2 * len(domains) + 1, dtype=torch.long, device=device)
        if any(len(s) for s in shares):
            which = np.zeros(len(self._images), dtype=np.int64)  # position -> domain number, for the counts
            for k, d in enumerate(domains):
                which[slice(*self._spans[d])] = k
            loader = bounded_worker_batches(self._images, _DomainBatches(shares, self.batch_size), self.batch_size,
                                            self.workers, pin_memory=device.type == "cuda")
            batches = iter(_DomainBatches(shares, self.batch_size))
            for (x, y), positions in zip(loader, batches):
                logits = predict(x.to(device, non_blocking=True))
                y, k = y.to(device, non_blocking=True), int(which[positions[0]])
                tally[k] += (logits.argmax(-1) == y).sum()
                if logits.shape[-1] >= 5:
                    tally[-1] = 1
                    tally[len(domains) + k] += (logits.topk(5, dim=-1).indices == y[:, None]).any(-1).sum()
        counts: list[int] = all_reduce_sum(tally, self.dist).cpu().tolist()
        totals = [self._spans[d][1] - self._spans[d][0] for d in domains]
        top1 = {d: (counts[k], t) for k, (d, t) in enumerate(zip(domains, totals))}
        top5 = {d: (counts[len(domains) + k], t) for k, (d, t) in enumerate(zip(domains, totals))}
        return top1, top5 if counts[-1] else None

    def __call__(self, predict: Callable[[Tensor], Tensor], device: str | torch.device = "cpu") -> dict[str, float]:
        """Accuracy per domain as a fraction in [0, 1] (domains with no images in the split are omitted).

        ``predict`` maps preprocessed images [B, 3, H, W] on ``device`` to logits [B, C].
        """
        return {d: acc.top1 for d, acc in self.accuracy(predict, device).items()}

    def accuracy(self, predict: Callable[[Tensor], Tensor], device: str | torch.device = "cpu") -> dict[str, TopK]:
        """Top-1 and top-5 accuracy per domain (fractions; top-5 is NaN for a model of fewer than 5 classes)."""
        top1, top5 = self._tally(predict, device)
        return {d: TopK(c / t, top5[d][0] / t if top5 is not None else math.nan) for d, (c, t) in top1.items()}
