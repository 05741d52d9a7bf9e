"""Rows appended to an unlinked temporary file and read back as one memory-mapped tensor.

For per-sample arrays of one pass over a data set (a source-free refresh's features and probabilities) whose
size grows with the data set: the rows go through the page cache to disk, not into the process's heap, and
the file is gone when the tensor is (it is unlinked from the start). The folder is the system's temp folder
(``TMPDIR``); where that is tmpfs, the rows are RAM again.
"""
from __future__ import annotations

import tempfile
from typing import IO

import numpy as np
import torch
from torch import Tensor


class RowSpool:
    """``append`` [B, ...] tensors of one shape and dtype, then ``tensor()``: all rows, [N, ...], memory-mapped."""

    def __init__(self) -> None:
        self._file: IO[bytes] | None = None
        self._shape: tuple[int, ...] = ()
        self._dtype: np.dtype | None = None
        self.rows = 0

    def append(self, rows: Tensor) -> None:
        a = rows.detach().cpu().contiguous().numpy()
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="distill-rows-")
            self._shape, self._dtype = a.shape[1:], a.dtype
        elif a.shape[1:] != self._shape or a.dtype != self._dtype:
            raise ValueError(f"rows of {a.shape[1:]} {a.dtype} appended to a spool of {self._shape} {self._dtype}")
        self._file.write(a.tobytes())
        self.rows += len(a)

    def tensor(self) -> Tensor:
        """Every row appended, as one tensor over the file (the spool is spent: append no more)."""
        if self._file is None or self.rows == 0:
            raise ValueError("no rows were appended")
        self._file.flush()
        with self._file:  # the map keeps its own descriptor
            rows = np.memmap(self._file, dtype=self._dtype, mode="r+", shape=(self.rows, *self._shape))
        self._file = None
        return torch.from_numpy(rows)
