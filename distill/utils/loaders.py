"""DataLoaders: one whose workers start with Ctrl-C held off; a pass whose worker processes are replaced every so
many images.

:class:`WorkerLoader` (every DataLoader in distill): a Ctrl-C while torch's iterator forks its workers raised
KeyboardInterrupt inside the iterator's ``__init__``, and the half-built iterator's ``__del__`` then printed
"Exception ignored in: <function _MultiProcessingDataLoaderIter.__del__ ...> AttributeError: ... '_workers_status'"
after the command's one ``interrupted:`` line; the same Ctrl-C, sent to the whole process group, could also kill a
worker in its first instants, and the command failed with "DataLoader worker ... exited unexpectedly". While the
iterator starts, SIGINT is only noted (a second one interrupts at once, so a start that hangs can still be stopped,
unless it hangs in a system call, such as writing a ``spawn`` worker its dataset, SIGINT being blocked in this
thread meanwhile; Ctrl-\\ still ends it), and raised once the iterator is whole, whose shutdown is then clean.

The workers start with SIGINT blocked (:func:`~distill.utils.ctrl_c.workers_deaf_to_ctrl_c`) and keep it blocked: a
Ctrl-C never reaches them (under ``fork`` and ``spawn``; under ``forkserver`` only when the CLI started the fork
server: from the Python API it is started unblocked, so that the user's own processes it forks hear Ctrl-C, and its
workers can hear one in their first instants, :mod:`distill.utils.ctrl_c`); the main process stops them (:func:`stop_workers`, called by
an interrupted command), or, at the interpreter's exit, lets multiprocessing terminate them unreported
(:func:`_unwatch_workers`: a Python API user who caught the KeyboardInterrupt).
Under ``fork`` a handler set in the parent would do, but a ``spawn`` worker (macOS's default) is a new interpreter
that imports torch and the dataset's modules for seconds before torch's worker loop, which swallows
KeyboardInterrupt, even begins; one interrupted there died, and torch's SIGCHLD handler turned that into a
RuntimeError: exit 1 and its traceback instead of the ``interrupted:`` line. A blocked signal mask, unlike a Python
handler, survives the fork and the exec; a ``forkserver`` worker (Linux's default from Python 3.14) gets it from the
fork server, which the CLI starts inside the block when it is not running yet (:mod:`distill.utils.ctrl_c`).


A decoding worker's private heap creeps with the images it has decoded (glibc keeps freed blocks and
fragments; benchmarks/RESULTS.md, "Scale": ~12 kB per 256-image evaluation batch, still rising after 63k
images), so one set of workers over a whole split would hold memory that grows with the split. Passing the
batches through a fresh DataLoader every ``images_per_loader`` images bounds that growth by a constant,
whatever the split's size; a worker start (a fork) every 65k images costs nothing next to decoding them.
Same batches, same order as one DataLoader over the whole sampler.
"""
from __future__ import annotations

import atexit
import multiprocessing
import os
import weakref
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from itertools import islice
from typing import Any

from torch.utils.data import DataLoader, Dataset
from torch.utils.data.dataloader import _BaseDataLoaderIter, _MultiProcessingDataLoaderIter

from distill.utils.ctrl_c import interrupt_held, workers_deaf_to_ctrl_c

try:  # torch's private SIGCHLD watch of the workers (torch 1.x to 2.13 at least): only the exit hook uses it
    from torch.utils.data._utils.signal_handling import _remove_worker_pids
except ImportError:  # a torch without it: nothing is unwatched (a caught Ctrl-C may print torch's exit traceback)
    _remove_worker_pids = None  # type: ignore[assignment]  # the stub types it as a function; None: absent

WORKER_IMAGES = 65_536  # images one set of workers decodes before it is replaced
_LIVE: weakref.WeakSet[_MultiProcessingDataLoaderIter] = weakref.WeakSet()  # WorkerLoader iterators with workers


def default_workers(batches: int, world: int = 1) -> int:
    """Decode workers for a pass of ``batches`` DataLoader batches in this process, when none were asked for: CPU
    cores per process - 1, but none for a single batch. One batch goes to one worker whole, so the rest would start
    for nothing and that one decodes it alone, after its own start-up (a fork of this process), with no later batch
    to overlap with the consumer: in-process is never slower. (A cache build of pacs_mini's 40 images at batch 64:
    the decode pass 0.04 s in-process against 0.09 s with one worker and 0.6 s with 15, 2 shared cores.)"""
    if batches <= 1:
        return 0
    return max(1, (os.cpu_count() or 2) // world - 1)


class WorkerLoader(DataLoader):
    """torch's DataLoader whose iterator (its worker processes) starts with Ctrl-C held off (:func:`interrupt_held`)
    and whose workers start deaf to Ctrl-C (:func:`workers_deaf_to_ctrl_c`; see the module docstring for forkserver
    from the Python API)."""

    def __iter__(self) -> _BaseDataLoaderIter:
        with interrupt_held(), \
                workers_deaf_to_ctrl_c(self._start_method()) if self.num_workers > 0 else nullcontext():
            iterator = super().__iter__()
            if isinstance(iterator, _MultiProcessingDataLoaderIter):
                _LIVE.add(iterator)  # before a held Ctrl-C is raised: stop_workers() reaches it
            return iterator

    def _start_method(self) -> str:
        """The start method of this loader's workers: its own context's, else the process's default, read without
        fixing it (``multiprocessing.get_context()`` would, and a user's later ``set_start_method`` then fails)."""
        if self.multiprocessing_context is not None:
            return str(self.multiprocessing_context.get_start_method())
        return multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]


def stop_workers() -> None:
    """Stop the workers of every WorkerLoader iterator still alive, as an exhausted iterator stops its own: told to
    stop, joined (torch waits up to 5 s for each), torch's SIGCHLD watch on them removed, the stragglers
    terminated. For an interrupted command, before it exits: left to the interpreter's exit, multiprocessing terminates
    them, and a ``spawn``/``forkserver`` worker still importing (seconds) dies of that SIGTERM before torch's worker
    loop installs its quiet handler, which torch's SIGCHLD handler reports as "RuntimeError: DataLoader worker
    (pid ...) is killed by signal: Terminated" (a persistent loader's iterator lives until then). Done here, with
    everything alive: leaving it to the garbage collector, the queues' semaphores can be unlinked before the
    iterator's ``__del__`` runs, and a worker still unpickling them fails with a traceback."""
    for iterator in list(_LIVE):
        iterator._shutdown_workers()  # what the iterator's own end and __del__ call


def _unwatch_workers() -> None:
    """At the interpreter's exit: torch's SIGCHLD watch on the workers of every WorkerLoader iterator still alive is
    removed. multiprocessing's exit handler, which runs next, terminates them as it always did, and a ``spawn``
    worker still importing, which dies of that, is then not reported as "RuntimeError: DataLoader worker (pid ...)
    is killed by signal: Terminated" in an atexit traceback (a Python API user who caught the KeyboardInterrupt; a
    persistent loader kept to the end). Not :func:`stop_workers`: its joins would wait for each ``spawn`` worker's
    own interpreter exit (2 s more per exit here)."""
    if _remove_worker_pids is None:
        return
    for iterator in list(_LIVE):
        if getattr(iterator, "_worker_pids_set", False):
            _remove_worker_pids(id(iterator))
            iterator._worker_pids_set = False


# registered after multiprocessing's and torch's exit handlers (imported above): atexit runs it before them
atexit.register(_unwatch_workers)


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
