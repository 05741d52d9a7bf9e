"""Memory-mapped safetensors shards and a verify-once record of their bytes.

**Why ``torch.from_file`` over ``safe_open`` slices.** Each shard is mapped once per process
(``MAP_PRIVATE``, read-only use) and its tensors are views at their offsets in the file, so a
gather is one ``index_select`` on mapped memory: the pages are the kernel's page cache, shared
by every DataLoader worker and every rank on the host, and count as file-backed (``RssFile``),
not anonymous memory. ``safe_open`` would also map, but keeps one handle per shard and copies
through a slice object per row range; ``numpy.memmap`` keeps a duplicated file descriptor per
map (a 10^7-image cache has ~10^4 shards), where ``torch.from_file`` closes its descriptor after
mapping. The safetensors header (8-byte length + JSON) is read here, the one place that knows it.

**Verify once.** A shard's sha256 (recorded in its manifest at build time) is checked once,
then recorded in ``DIR/.verified.json`` keyed by the file's (size, mtime_ns, inode): later
opens stat each file instead of reading it, so opening costs the same however often a run, its
ranks and its workers open it. Any rewrite, truncation or copy changes the key and the file is
hashed again on its next open (a copy is hashed once, in its new place). What this does not
catch: bytes that rot on disk without the file's mtime changing (a `distill cache verify`-style
full check is then a re-hash: delete ``.verified.json``). When the folder is read-only the
record cannot be kept and every open hashes (as before this module). Concurrent first opens (the ranks
of a host) take an ``flock`` on ``DIR/.verified.json.lock``: one hashes, the others find the record.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch
from torch import Tensor

if TYPE_CHECKING:
    import numpy as np

from distill.errors import DistillError
from distill.utils.io import atomic_write_json

_fcntl: ModuleType | None
try:
    import fcntl as _fcntl
except ImportError:  # not POSIX: no lock, concurrent first opens may each hash
    _fcntl = None

VERIFIED_FILE = ".verified.json"
_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def read_header(path: Path, rebuild: str) -> tuple[int, dict]:
    """(offset of the data block, header dict) of a safetensors file, reading only its header.

    Raises:
        DistillError: missing, truncated, or not safetensors (one line naming the file and ``rebuild``).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(f"{len(head)} bytes, no safetensors header")
            (n,) = struct.unpack("<Q", head)
            size = os.fstat(f.fileno()).st_size
            if n > size - 8:
                raise ValueError(f"header of {n} bytes in a file of {size}: truncated")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise DistillError(f"{path}: listed in the manifest but missing; {rebuild}") from None
    except (OSError, ValueError) as e:
        raise DistillError(f"{path}: unreadable ({_first_line(e)}); {rebuild}") from None
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise DistillError(f"{path}: truncated ({size} bytes, its header needs {8 + n + end}); {rebuild}")
    return 8 + n, header


class MappedFile:
    """One safetensors file, mapped: ``tensor(name)`` is a zero-copy view of the mapped bytes."""

    def __init__(self, path: Path, rebuild: str):
        self.path = Path(path)
        self._start, self._header = read_header(self.path, rebuild)
        self._arrays: dict[str, np.ndarray | None] = {}
        size = self.path.stat().st_size
        self._bytes = (torch.from_file(str(self.path), shared=False, size=size, dtype=torch.uint8) if size
                       else torch.zeros(0, dtype=torch.uint8))

    def rows(self) -> int:
        """Rows of a cache or companion shard (its ``sample_index`` length; nothing is read)."""
        return int(self._header["sample_index"]["shape"][0])

    def names(self) -> list[str]:
        return [k for k in self._header if k != "__metadata__"]

    def metadata(self) -> dict[str, str]:
        return dict(self._header.get("__metadata__") or {})

    def array(self, name: str) -> np.ndarray | None:
        """The stored tensor as a numpy view of the map (None when the file has no such tensor); cached."""
        if name not in self._arrays:
            self._arrays[name] = self.tensor(name).numpy() if name in self._header else None
        return self._arrays[name]

    def tensor(self, name: str) -> Tensor:
        """The stored tensor (a view of the map; read-only by contract: never write to it)."""
        info = self._header[name]
        dtype, shape = _DTYPES[info["dtype"]], [int(s) for s in info["shape"]]
        a, b = (int(x) for x in info["data_offsets"])
        raw = self._bytes[self._start + a:self._start + b]
        if not raw.numel():
            return torch.zeros(shape, dtype=dtype)
        return raw.view(dtype).view(shape)


# ---------------------------------------------------------------------- verify once
def _key(st: os.stat_result) -> list[int]:
    return [int(st.st_size), int(st.st_mtime_ns), int(st.st_ino)]


def _hash(path: Path) -> str | None:
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        return h.hexdigest()
    except FileNotFoundError:
        return None


def record_verified(folder: Path, files: Sequence[tuple[str, str]]) -> None:
    """Record that ``files`` ((name in ``folder``, sha256)) hold those bytes now (the builder, having just
    hashed them). A folder that cannot be written keeps no record."""
    folder = Path(folder)
    record = _read_record(folder)
    for name, sha in files:
        record[name] = [*_key((folder / name).stat()), sha]
    _write_record(folder, record)


def _read_record(folder: Path) -> dict[str, list]:
    try:
        rec = json.loads((folder / VERIFIED_FILE).read_text())
        return rec if isinstance(rec, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_record(folder: Path, record: dict) -> None:
    try:
        atomic_write_json(folder / VERIFIED_FILE, record)
    except OSError:  # a read-only cache: no record, every open hashes
        pass


def verify_once(folder: Path, files: Sequence[tuple[str, str | None]], rebuild: str, workers: int = 4) -> None:
    """Check each file's bytes against its recorded sha256, hashing only files not verified before.

    A file whose (size, mtime_ns, inode) and sha256 match ``DIR/.verified.json`` costs one ``stat``;
    the others are hashed (``workers`` threads: hashlib releases the GIL) and recorded when they match.
    ``sha256=None`` (the manifest holds none) is checked for presence only.

    Raises:
        DistillError: a file missing, or whose bytes differ from the manifest's (one line naming the
            first such file and ``rebuild``).
    """
    folder = Path(folder)
    if not _unverified(folder, files, _read_record(folder), rebuild):
        return
    with _lock(folder):  # the ranks (and workers) of a host: one hashes, the others then find it recorded
        record = _read_record(folder)
        todo = _unverified(folder, files, record, rebuild)
        if todo:
            _hash_and_record(folder, todo, record, rebuild, workers)


def _unverified(folder: Path, files: Sequence[tuple[str, str | None]], record: dict[str, Any], rebuild: str,
                ) -> list[tuple[str, str, list[int]]]:
    todo: list[tuple[str, str, list[int]]] = []
    for name, sha in files:
        try:
            st = (folder / name).stat()
        except FileNotFoundError:
            raise DistillError(f"{folder / name}: listed in the manifest but missing; {rebuild}") from None
        if sha is not None and record.get(name) != [*_key(st), sha]:
            todo.append((name, sha, _key(st)))
    return todo


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``DIR/.verified.lock`` (none when the folder cannot be written)."""
    try:
        f = open(folder / (VERIFIED_FILE + ".lock"), "a") if _fcntl is not None else None
    except OSError:
        f = None
    if f is None or _fcntl is None:
        yield
        return
    with f:
        _fcntl.flock(f, _fcntl.LOCK_EX)
        try:
            yield
        finally:
            _fcntl.flock(f, _fcntl.LOCK_UN)


def _hash_and_record(folder: Path, todo: list, record: dict, rebuild: str, workers: int) -> None:
    with ThreadPoolExecutor(max(1, min(workers, len(todo)))) as pool:
        got = list(pool.map(lambda t: _hash(folder / t[0]), todo))
    for (name, sha, key), h in zip(todo, got):
        if h is None:
            raise DistillError(f"{folder / name}: listed in the manifest but missing; {rebuild}")
        if h != sha:
            raise DistillError(f"{folder / name}: sha256 {h[:12]}... differs from the manifest's {sha[:12]}... "
                               f"(changed, truncated or corrupted since the build); {rebuild}")
        record[name] = [*key, sha]
    _write_record(folder, record)


__all__ = ["VERIFIED_FILE", "MappedFile", "read_header", "record_verified", "verify_once"]
