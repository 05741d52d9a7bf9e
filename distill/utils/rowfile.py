"""A per-sample array on disk, memory-mapped, that a checkpoint can take by a hard link instead of a copy.

A source-free run's per-sample targets ([S, C] float32: 4 kB a sample at 1,000 classes) are rebuilt once an epoch and
are part of every step checkpoint (:mod:`distill.utils.state`). Held as tensors they cost RAM (or GPU memory) and a
full write per checkpoint. A :class:`RowFile` holds them in a file with no name of its own (``O_TMPFILE`` where the
file system has it, else an unlinked temporary file), read through the page cache; :meth:`RowFile.save_to` names
it inside a checkpoint folder by a hard link (no bytes written; the data lives on while any link or the process
holds it) or, where the file system cannot link (another file system, no ``O_TMPFILE``), by a copy read in chunks.
A killed process leaves no file behind: only the checkpoints' links keep the data.

A RowFile is never written after it is made (a refresh makes a new one), so a checkpoint's link always holds the
rows it was saved with. A saved file is read back copy-on-write: a write to that tensor, by any route (torch, its
``.numpy()``, ``.data``), changes the process's copy only, and :meth:`RowFile.backing` finds it before a save
could link the file's older bytes (:func:`written`).
"""
from __future__ import annotations

import errno
import mmap
import os
import tempfile
import weakref
from pathlib import Path
from typing import IO

import numpy as np
import torch
from torch import Tensor

from distill.errors import DistillError
from distill.utils.io import atomic_write

COPY_CHUNK = 16 << 20  # bytes read at a time when a link is not possible
PAGEMAP_CHUNK = 1 << 17  # /proc/self/pagemap entries (8 bytes, one a page: 512 MiB of mapping) read at a time
# RowFile.backing: a tensor's data address -> its RowFile, while any tensor over the mapping keeps the RowFile alive
_BY_ADDRESS: weakref.WeakValueDictionary[int, RowFile] = weakref.WeakValueDictionary()


def reserve(f: IO[bytes] | int, nbytes: int) -> None:
    """Give a file its size, reserving the disk space where the file system can (a full disk found now, not as a
    SIGBUS when a mapped page is first written); else (macOS, or a file system without fallocate) a sparse file."""
    fd = f if isinstance(f, int) else f.fileno()
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, nbytes)
            return
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
    os.ftruncate(fd, nbytes)


class RowFile:
    """A nameless file holding one array [rows, ...], handed out as a memory-mapped CPU tensor.

    :meth:`create` (zeros, written through the tensor until it is saved) and :meth:`open` (a saved one, mapped
    copy-on-write) return the tensor; :meth:`backing` finds a tensor's RowFile, whose :meth:`save_to` names the
    file. Ownership runs one way: the tensor holds the mapping, the mapping holds its RowFile, the RowFile holds only
    the descriptor, so the file (and its disk space, once no checkpoint links it) goes when the last tensor over it
    goes, with no reference cycle to wait for.
    """

    def __init__(self, fd: int, shape: tuple[int, ...], dtype: np.dtype, writable: bool):
        self._fd, self.shape, self.dtype, self.writable = fd, tuple(shape), np.dtype(dtype), writable

    def _tensor(self) -> Tensor:
        # "c": copy-on-write, so a tensor over a saved file is writable for torch and never writes the file
        with os.fdopen(os.dup(self._fd), "rb+" if self.writable else "rb") as f:  # the map keeps its own descriptor
            array = np.memmap(f, dtype=self.dtype, mode="r+" if self.writable else "c", shape=self.shape)
        # numpy's stubs declare no such attribute; a memmap (an ndarray subclass) takes one at runtime
        array.rowfile = self  # type: ignore[attr-defined]  # the mapping keeps its RowFile (and descriptor) alive, not the other way round
        t = torch.from_numpy(array)
        _BY_ADDRESS[t.data_ptr()] = self
        return t

    @staticmethod
    def backing(t: Tensor) -> RowFile | None:
        """The RowFile whose whole array ``t`` is (the tensor it handed out, or a detached alias), else None; also
        None for a saved file's tensor written since it was opened, by any route (its private copy-on-write pages
        are not the file's: it is saved as a plain tensor). That check reads the mapping's page-table flags, 8 bytes
        a 4 kB page (0.6 ms for 300 MiB, benchmarks/rowfile_check.py), or without them compares every byte."""
        rows = _BY_ADDRESS.get(t.data_ptr()) if t.device.type == "cpu" and t.numel() else None
        if rows is None or tuple(t.shape) != rows.shape or not t.is_contiguous() or \
                t.dtype != torch.from_numpy(np.empty(0, rows.dtype)).dtype:
            return None
        if not rows.writable and (t._version != 0 or rows._diverged(t)):
            return None
        return rows

    def _diverged(self, t: Tensor) -> bool:
        """Whether the copy-on-write tensor ``t`` over this saved file holds bytes the file does not: a page of the
        mapping is this process's own (:func:`written`), or, where the kernel cannot say, a byte differs."""
        own = written(t.data_ptr(), self.nbytes)
        if own is not None:
            return own
        mine = t.detach().numpy().reshape(-1).view(np.uint8)
        for at in range(0, self.nbytes, COPY_CHUNK):
            chunk = os.pread(self._fd, min(COPY_CHUNK, self.nbytes - at), at)
            if not np.array_equal(mine[at:at + len(chunk)], np.frombuffer(chunk, np.uint8)):
                return True
        return False

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @classmethod
    def create(cls, shape: tuple[int, ...], dtype: np.dtype | type, folder: str | Path | None,
               scratch: bool = False) -> Tensor:
        """A zero-filled [shape] tensor over a new file in ``folder`` (default: the system's temp folder; a checkpoint
        on the same file system can then link it). One line naming the folder when it cannot hold it.

        ``scratch``: a file no checkpoint will link (a DDP rank that saves none): in ``folder`` only as an
        ``O_TMPFILE`` (no name to clash with another rank's or to leave behind), else in the system's temp folder,
        never as a named-then-unlinked file there (on NFS that stays as a ``.nfsXXXX`` entry while it is open, and
        after a crash). ``folder`` is not made, and any failure there falls back to the temp folder: it is rank
        0's run folder, which on another node may be missing (a node-local one) or not writable."""
        where = Path(folder) if folder is not None else Path(tempfile.gettempdir())
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if nbytes == 0:
            raise ValueError(f"a RowFile needs at least one byte, not {tuple(shape)}")
        try:
            if scratch:
                fd = _scratch(where)
                if fd is None:  # no folder, no O_TMPFILE on its file system, or not writable here
                    where = Path(tempfile.gettempdir())
                    fd = _nameless(where)
            else:
                where.mkdir(parents=True, exist_ok=True)
                fd = _nameless(where)
            try:
                reserve(fd, nbytes)
                return cls(fd, tuple(shape), np.dtype(dtype), writable=True)._tensor()
            except BaseException:
                os.close(fd)
                raise
        except OSError as e:
            raise DistillError(f"{where}: cannot hold {nbytes / 1e9:.2f} GB of per-sample targets there: "
                               f"{e.strerror}") from e

    @classmethod
    def open(cls, path: str | Path, shape: tuple[int, ...], dtype: np.dtype | type) -> Tensor:
        """A saved file as a copy-on-write tensor; the open descriptor keeps the data while the folder is replaced."""
        path = Path(path)
        expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise DistillError(f"{path}: cannot read the saved per-sample targets: {e.strerror}") from e
        size = os.fstat(fd).st_size
        if size != expected:
            os.close(fd)
            raise DistillError(f"{path}: {size:,} bytes, expected {expected:,} for {tuple(shape)} {np.dtype(dtype)} "
                               "(a damaged checkpoint)")
        return cls(fd, tuple(shape), np.dtype(dtype), writable=False)._tensor()

    def save_to(self, path: str | Path) -> None:
        """Name the data ``path``, durably (fsync'd, as the checkpoint's other files): a hard link where the file
        system allows, else an atomic copy. The tensor must not be written afterwards (a link shares its bytes)."""
        path = Path(path)
        try:
            os.fsync(self._fd)  # pages written through the mapping, to disk before the checkpoint says it is complete
            # linkat(AT_SYMLINK_FOLLOW) of the descriptor's /proc link (os.link calls plain link(2), which does not
            # follow it, unless a dir_fd is given)
            folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.link(f"/proc/self/fd/{self._fd}", path.name, dst_dir_fd=folder, follow_symlinks=True)
            finally:
                os.close(folder)
            return
        except OSError:
            pass  # no /proc, another file system, an unlinked (not O_TMPFILE) file: copy
        try:
            atomic_write(path, self._copy)
        except OSError as e:
            raise DistillError(f"{path}: cannot save the per-sample targets there: {e.strerror}") from e

    def _copy(self, dst: Path) -> None:
        with open(dst, "wb") as out:
            at = 0
            while at < self.nbytes:
                chunk = os.pread(self._fd, min(COPY_CHUNK, self.nbytes - at), at)
                if not chunk:
                    raise OSError(errno.EIO, f"the file ended at {at:,} of {self.nbytes:,} bytes")
                out.write(chunk)
                at += len(chunk)

    def __del__(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass


def written(address: int, nbytes: int) -> bool | None:
    """Whether any page of ``[address, address + nbytes)``, a private (copy-on-write) file mapping, was written by
    this process: present and no longer the file's page, or swapped out (a file's page is dropped, never swapped).
    Read from Linux's /proc/self/pagemap, whose flags need no privilege; None where it is missing or does not
    report this process's own written pages (:func:`_pagemap_works`)."""
    if not _pagemap_works():
        return None
    return _own_pages(address, nbytes)


def _own_pages(address: int, nbytes: int) -> bool | None:
    first, end = address // mmap.PAGESIZE, (address + max(nbytes, 1) - 1) // mmap.PAGESIZE + 1
    try:
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    except OSError:
        return None
    try:
        for at in range(first, end, PAGEMAP_CHUNK):
            n = min(PAGEMAP_CHUNK, end - at)
            raw = os.pread(fd, n * 8, at * 8)
            if len(raw) != n * 8:
                return None
            e = np.frombuffer(raw, np.uint64)  # bit 63 present, 62 swapped, 61 a file's page (or shared)
            if ((((e >> np.uint64(63)) & ~(e >> np.uint64(61))) | (e >> np.uint64(62))) & np.uint64(1)).any():
                return True
        return False
    except OSError:
        return None
    finally:
        os.close(fd)


_PAGEMAP: list[bool] = []  # whether /proc/self/pagemap reports written pages (asked once a process)


def _pagemap_works() -> bool:
    """Whether /proc/self/pagemap exists and reports a page this process just wrote as its own (a sandbox's may
    read as all zeros, which would pass every written page as the file's)."""
    if not _PAGEMAP:
        probe = np.ones(2 * mmap.PAGESIZE, np.uint8)
        _PAGEMAP.append(_own_pages(probe.ctypes.data, probe.nbytes) is True)
    return _PAGEMAP[0]


def _nameless(folder: Path) -> int:
    """A read-write descriptor of a new file in ``folder`` with no name: O_TMPFILE (linkable later) where the
    file system has it, else an unlinked temporary file (saved by copying)."""
    fd = _tmpfile(folder)
    if fd is not None:
        return fd
    fd, name = tempfile.mkstemp(dir=folder, prefix=".distill-rows-")
    os.unlink(name)
    return fd


def _scratch(folder: Path) -> int | None:
    """:func:`_tmpfile` in ``folder``, None on any error (a scratch file goes elsewhere then)."""
    try:
        return _tmpfile(folder)
    except OSError:
        return None


def _tmpfile(folder: Path) -> int | None:
    """A read-write O_TMPFILE descriptor in ``folder``; None where the system or its file system has none (or the
    folder is missing)."""
    if hasattr(os, "O_TMPFILE"):
        try:
            return os.open(folder, os.O_TMPFILE | os.O_RDWR, 0o600)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
                raise
    return None
