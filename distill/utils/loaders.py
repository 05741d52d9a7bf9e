"""A DataLoader pass whose worker processes are replaced every so many images.

A decoding worker's private heap creeps with the images it has decoded (glibc keeps freed blocks and
fragments; benchmarks/RESULTS.md, "Scale": ~12 kB per 256-image evaluation batch, still rising after 63k
images), so one set of workers over a whole split would hold memory that grows with the split. Passing the
batches through a fresh DataLoader every ``images_per_loader`` images bounds that growth by a constant,
whatever the split's size; a worker start (a fork) every 65k images costs nothing next to decoding them.
Same batches, same order as one DataLoader over the whole sampler.
"""
from __future__ import annotations

from itertools import islice
from typing import Any, Iterable, Iterator

from torch.utils.data import DataLoader, Dataset

WORKER_IMAGES = 65_536  # images one set of workers decodes before it is replaced


def bounded_worker_batches(dataset: Dataset, batch_sampler: Iterable[list[int]], batch_size: int, workers: int,
                           pin_memory: bool = False, images_per_loader: int | None = None) -> Iterator[Any]:
    """The batches of ``batch_sampler`` (lists of positions of ``dataset``), collated, in order.

    With ``workers`` > 0 every ``images_per_loader`` images (default :data:`WORKER_IMAGES`, in whole
    batches of ``batch_size``) come from a new DataLoader and its new workers; with 0 workers, one
    in-process DataLoader.
    """
    if workers <= 0:
        yield from DataLoader(dataset, batch_sampler=batch_sampler, num_workers=0, pin_memory=pin_memory)
        return
    per = max(1, (images_per_loader or WORKER_IMAGES) // max(1, batch_size))
    batches = iter(batch_sampler)
    while True:
        group = list(islice(batches, per))  # at most images_per_loader positions: bounded, whatever the split
        if not group:
            return
        yield from DataLoader(dataset, batch_sampler=group, num_workers=workers, pin_memory=pin_memory)
