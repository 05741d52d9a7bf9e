"""``distill.api.bench(CHECKPOINT, runtime="torch", threads=N)`` (and ``distill bench`` called in-process) puts torch's
thread count back after it, on error too (:func:`distill.utils.runtime.torch_threads`), as ``distill teacher eval``
and ``bootstrap_teacher`` do.

Before: the torch runner called ``torch.set_num_threads(N)`` and left it so for the caller.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distill import api
from distill.errors import DistillError


def test_a_torch_bench_puts_the_thread_count_back(small_checkpoint: Path) -> None:
    before = torch.get_num_threads()
    (record,) = api.bench(small_checkpoint, runtime="torch", threads=before + 1, warmup=0, iters=1, device="cpu")
    assert record.threads_used == before + 1  # it ran with the threads asked for
    assert torch.get_num_threads() == before


def test_a_failed_torch_bench_puts_the_thread_count_back(small_checkpoint: Path, monkeypatch) -> None:
    import distill.student.model

    def unreadable(path):  # the weights fail to load: after the runner set the threads
        raise DistillError(f"{path}: unreadable weights")

    monkeypatch.setattr(distill.student.model, "load_student", unreadable)
    before = torch.get_num_threads()
    with pytest.raises(DistillError, match="unreadable weights"):
        api.bench(small_checkpoint, runtime="torch", threads=before + 1, device="cpu")
    assert torch.get_num_threads() == before
