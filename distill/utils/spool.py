"""Rows of one pass over a data set, kept in RAM while small and past that appended to an unlinked temporary
file, read back as one (memory-mapped) tensor.

For per-sample arrays whose size grows with the data set (a source-free refresh's features and probabilities):
past :data:`SPILL_BYTES` the rows go through the page cache to disk, not into the process's heap, and the file is
gone when the tensor is (it is unlinked from the start). The folder is the system's temp folder (``TMPDIR``);
where that is tmpfs, the rows are RAM again.
"""
from __future__ import annotations

import tempfile
from typing import IO

import numpy as np
import torch
from torch import Tensor

from distill.errors import DistillError

SPILL_BYTES = 64 << 20  # rows past this many bytes go to the file


class RowSpool:
    """``append`` [B, ...] tensors of one shape and dtype, then ``tensor()``: all rows, [N, ...] (memory-mapped
    once past :data:`SPILL_BYTES`). ``close()`` drops what was appended (an abandoned pass)."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._file: IO[bytes] | None = None
        self._shape: tuple[int, ...] | None = None
        self._dtype: np.dtype | None = None
        self._spent = False
        self.rows = 0

    def append(self, rows: Tensor) -> None:
        if self._spent:
            raise ValueError("append after tensor(): the spool is spent")
        a = rows.detach().cpu().contiguous().numpy()
        if self._shape is None:
            self._shape, self._dtype = a.shape[1:], a.dtype
        elif a.shape[1:] != self._shape or a.dtype != self._dtype:
            raise ValueError(f"rows of {a.shape[1:]} {a.dtype} appended to a spool of {self._shape} {self._dtype}")
        self.rows += len(a)
        row_bytes = a.itemsize * int(np.prod(a.shape[1:], dtype=np.int64))
        if self._file is None and self.rows * row_bytes <= SPILL_BYTES:
            self._parts.append(a.copy())  # the caller's tensor may change later
            return
        try:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="distill-rows-")
                for part in self._parts:
                    # numpy's stubs give ndarray the buffer protocol only for Python >= 3.12's typing
                    self._file.write(memoryview(part).cast("B"))  # type: ignore[arg-type]
                self._parts = []
            self._file.write(memoryview(a).cast("B"))  # type: ignore[arg-type]  # as above: numpy's stubs
        except OSError as e:
            raise DistillError(f"{tempfile.gettempdir()}: cannot spool {self.rows:,} rows of a pass over the data "
                               f"there: {e.strerror}; free space there or point TMPDIR elsewhere") from e

    def tensor(self) -> Tensor:
        """Every row appended, as one tensor (the spool is spent: append no more)."""
        if self._spent or self.rows == 0 or self._shape is None or self._dtype is None:
            raise ValueError("no rows to read: nothing was appended, or tensor() was called already")
        self._spent = True
        if self._file is None:
            rows = np.concatenate(self._parts)
            self._parts = []
            return torch.from_numpy(rows)
        try:
            self._file.flush()
        except OSError as e:
            raise DistillError(f"{tempfile.gettempdir()}: cannot spool {self.rows:,} rows there: {e.strerror}") from e
        with self._file:  # the map keeps its own descriptor
            mapped = np.memmap(self._file, dtype=self._dtype, mode="r+", shape=(self.rows, *self._shape))
        self._file = None
        return torch.from_numpy(mapped)

    def close(self) -> None:
        self._spent, self._parts = True, []
        if self._file is not None:
            self._file.close()
            self._file = None
