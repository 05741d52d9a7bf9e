"""DataLoaders: one whose workers start with Ctrl-C held off; a pass whose worker processes are replaced every so
many images.

:class:`WorkerLoader` (every DataLoader in distill): a Ctrl-C while torch's iterator forks its workers raised
KeyboardInterrupt inside the iterator's ``__init__``, and the half-built iterator's ``__del__`` then printed
"Exception ignored in: <function _MultiProcessingDataLoaderIter.__del__ ...> AttributeError: ... '_workers_status'"
after the command's one ``interrupted:`` line; the same Ctrl-C, sent to the whole process group, could also kill a
worker in its first instants, and the command failed with "DataLoader worker ... exited unexpectedly". While the
iterator starts, SIGINT is only noted (a second one interrupts at once: a start that hangs can still be stopped),
and raised once the iterator is whole, whose shutdown is then clean. The workers, forked meanwhile, keep that
noting handler: they never raise KeyboardInterrupt (torch's worker loop ignores it anyway); the main process stops
them.


A decoding worker's private heap creeps with the images it has decoded (glibc keeps freed blocks and
fragments; benchmarks/RESULTS.md, "Scale": ~12 kB per 256-image evaluation batch, still rising after 63k
images), so one set of workers over a whole split would hold memory that grows with the split. Passing the
batches through a fresh DataLoader every ``images_per_loader`` images bounds that growth by a constant,
whatever the split's size; a worker start (a fork) every 65k images costs nothing next to decoding them.
Same batches, same order as one DataLoader over the whole sampler.
"""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from typing import Any

from torch.utils.data import DataLoader, Dataset
from torch.utils.data.dataloader import _BaseDataLoaderIter

WORKER_IMAGES = 65_536  # images one set of workers decodes before it is replaced


def default_workers(batches: int, world: int = 1) -> int:
    """Decode workers for a pass of ``batches`` DataLoader batches in this process, when none were asked for: CPU
    cores per process - 1, but none for a single batch. One batch goes to one worker whole, so the rest would start
    for nothing and that one decodes it alone, after its own start-up (a fork of this process), with no later batch
    to overlap with the consumer: in-process is never slower. (A cache build of pacs_mini's 40 images at batch 64:
    the decode pass 0.04 s in-process against 0.09 s with one worker and 0.6 s with 15, 2 shared cores.)"""
    if batches <= 1:
        return 0
    return max(1, (os.cpu_count() or 2) // world - 1)


@contextmanager
def interrupt_held() -> Iterator[None]:
    """Inside: a first SIGINT is noted and raised as KeyboardInterrupt on leaving; a second raises at once. Only
    where Python's own handler is in place, in the main thread (elsewhere: nothing changes)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    noted: list[int] = []

    def note(signum: int, frame: object) -> None:
        if noted:
            raise KeyboardInterrupt
        noted.append(signum)

    signal.signal(signal.SIGINT, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if noted:
        raise KeyboardInterrupt


class WorkerLoader(DataLoader):
    """torch's DataLoader whose iterator (its worker processes) starts with Ctrl-C held off (:func:`interrupt_held`)."""

    def __iter__(self) -> _BaseDataLoaderIter:
        with interrupt_held():
            return super().__iter__()


def bounded_worker_batches(dataset: Dataset, batch_sampler: Iterable[list[int]], batch_size: int, workers: int,
                           pin_memory: bool = False, images_per_loader: int | None = None) -> Iterator[Any]:
    """The batches of ``batch_sampler`` (lists of positions of ``dataset``), collated, in order.

    With ``workers`` > 0 every ``images_per_loader`` images (default :data:`WORKER_IMAGES`, in whole
    batches of ``batch_size``) come from a new DataLoader and its new workers; with 0 workers, one
    in-process DataLoader.
    """
    if workers <= 0:
        yield from WorkerLoader(dataset, batch_sampler=batch_sampler, num_workers=0, pin_memory=pin_memory)
        return
    per = max(1, (images_per_loader or WORKER_IMAGES) // max(1, batch_size))
    batches = iter(batch_sampler)
    while True:
        group = list(islice(batches, per))  # at most images_per_loader positions: bounded, whatever the split
        if not group:
            return
        yield from WorkerLoader(dataset, batch_sampler=group, num_workers=workers, pin_memory=pin_memory)
