"""Samples held as columns: what :class:`~distill.data.folder.DomainFolder` keeps per image.

One frozen :class:`Sample` per image cost ~376 bytes (the object, its dict, its path string and two
ints; benchmarks/RESULTS.md, "Scale: training memory"). :class:`SampleTable` keeps the same facts as
numpy columns and one UTF-8 buffer of relative paths, ~40 bytes an image plus its path, and builds a
:class:`Sample` only when one is asked for: ``folder.samples[i]``, iteration and slicing behave as
the list did (equal ``Sample`` values, same order), and nothing per image lives as a Python object.
A selection (:meth:`SampleTable.take`) is a view: the same columns and an int64 array of positions.
DataLoader workers forked from the process share these buffers without copying them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol, Sequence, overload

import numpy as np

SPLITS = ("train", "val", "test", "pretrain")
SPLIT_CODE = {s: i for i, s in enumerate(SPLITS)}


@dataclass(frozen=True)
class Sample:
    """One image. ``index`` is its position in ROOT's sorted sample list; an unlabeled folder's images
    follow, from the index its cache gave the folder (:meth:`DomainFolder.add_folder`)."""

    index: int
    relpath: str  # "DOMAIN/CLASSFOLDER/file" (an unlabeled folder's: "NAME/path in the folder"), posix separators
    domain: str
    class_name: str  # "" in an unlabeled folder
    label: int  # -1 in an unlabeled folder
    split: str  # "train" | "val" | "test" | "pretrain"
    size: int  # bytes on disk, part of the dataset fingerprint


def pack_strings(strings: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes of all ``strings`` one after another [B] uint8, offsets [n + 1] int64)."""
    chunks = [s.encode() for s in strings]
    offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
    np.cumsum([len(c) for c in chunks], out=offsets[1:])
    return np.frombuffer(b"".join(chunks), dtype=np.uint8).copy(), offsets


def take_strings(text: np.ndarray, offsets: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The packed strings at ``positions``, packed again in that order: (bytes [B'] uint8, offsets [len + 1])."""
    starts, lengths = offsets[positions], offsets[positions + 1] - offsets[positions]
    out = np.zeros(len(positions) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    total = int(out[-1])
    # byte j of the result is byte (j - out[k] + starts[k]) of text, k its string: made in chunks of strings
    taken = np.empty(total, dtype=np.uint8)
    for a in range(0, len(positions), _CHUNK):
        b = min(a + _CHUNK, len(positions))
        lens = lengths[a:b]
        src = np.arange(out[a], out[b], dtype=np.int64) + np.repeat(starts[a:b] - out[a:b], lens)
        taken[out[a]:out[b]] = text[src]
    return taken, out


def prefix_strings(prefix: str, text: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The packed strings, each with ``prefix`` before it, packed: (bytes [B + n * P] uint8, offsets [n + 1])."""
    pre = np.frombuffer(prefix.encode(), dtype=np.uint8)
    n, p = len(offsets) - 1, len(pre)
    out = offsets + p * np.arange(n + 1, dtype=np.int64)
    joined = np.empty(int(out[-1]), dtype=np.uint8)
    for a in range(0, n, _CHUNK):  # string k's bytes move p * (k + 1) along; its prefix fills the p before them
        b = min(a + _CHUNK, n)
        shift = np.repeat(p * np.arange(a + 1, b + 1, dtype=np.int64), offsets[a + 1:b + 1] - offsets[a:b])
        joined[np.arange(offsets[a], offsets[b], dtype=np.int64) + shift] = text[offsets[a]:offsets[b]]
        joined[(out[a:b, None] + np.arange(p, dtype=np.int64)).ravel()] = np.tile(pre, b - a)
    return joined, out


def strip_strings(text: np.ndarray, offsets: np.ndarray, skip: int) -> tuple[np.ndarray, np.ndarray]:
    """The packed strings (``offsets`` may start past 0: a view of some rows) less their first ``skip`` bytes each,
    packed from 0: (bytes [B - n * skip] uint8, offsets [n + 1])."""
    n, first = len(offsets) - 1, int(offsets[0]) if len(offsets) else 0
    keep = np.ones(len(text), dtype=bool)
    for a in range(0, n, _CHUNK):
        b = min(a + _CHUNK, n)
        keep[(offsets[a:b, None] - first + np.arange(skip, dtype=np.int64)).ravel()] = False
    return text[keep], offsets - first - skip * np.arange(n + 1, dtype=np.int64)


def sort_order(text: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Positions that sort the packed strings (UTF-8 byte order = Python's ``str`` order), stable [n] int64."""
    n = len(offsets) - 1
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    lengths = np.diff(offsets)
    width = max(1, int(lengths.max()))
    keys = np.zeros((n, width), dtype=np.uint8)  # zero-padded: a prefix sorts first, as in Python
    for a in range(0, n, _CHUNK):
        b = min(a + _CHUNK, n)
        lens = lengths[a:b]
        rows = np.repeat(np.arange(a, b, dtype=np.int64), lens)
        cols = np.arange(offsets[a], offsets[b], dtype=np.int64) - np.repeat(offsets[a:b], lens)
        keys[rows, cols] = text[offsets[a]:offsets[b]]
    return np.argsort(keys.view(f"S{width}").ravel(), kind="stable")


_CHUNK = 1 << 12  # strings per step of the two functions above (their temporaries stay bounded)


class Hasher(Protocol):
    """What :func:`hash_file_lines` feeds: a ``hashlib`` hash object."""

    def update(self, data: bytes, /) -> None: ...


def hash_file_lines(h: Hasher, table: SampleTable) -> None:
    """``h.update(f"{relpath}\t{size}\t{class_name}\n".encode())`` for each sample of ``table`` in order (the
    dataset fingerprint's lines), in chunks of rows straight from the columns: no :class:`Sample` per image (one
    each cost ~40 s at 10^7 images, this ~5 s; benchmarks/RESULTS.md, "Scale: the dataset fingerprint's file-list
    hash")."""
    c, n = table.columns, len(table)
    names = [name.encode() for name in c.class_names]
    for a in range(0, n, _LINES):  # a whole table's rows made a chunk at a time (rows() would be 8 bytes an image)
        r = table.positions[a:a + _LINES] if table.positions is not None else np.arange(a, min(a + _LINES, n))
        h.update(b"".join(b"%s\t%d\t%s\n" % (c._text[s:e], z, names[k]) for s, e, z, k in zip(
            c.offsets[r].tolist(), c.offsets[r + 1].tolist(), c.size[r].tolist(), c.klass[r].tolist())))


_LINES = 1 << 16  # rows per hash update (~14 MB at the peak: benchmarks/fingerprint.py)


class SampleColumns:
    """Every sample's facts, position ``p`` = row ``p`` of each column (the store a :class:`SampleTable` views).

    ``domain`` and ``klass`` are codes into ``domain_names`` and ``class_names``; ``split`` a code into
    :data:`SPLITS`; ``text``/``offsets`` the relative paths, packed (:func:`pack_strings`).
    """

    def __init__(self, index: np.ndarray, text: np.ndarray, offsets: np.ndarray, domain: np.ndarray,
                 domain_names: Sequence[str], klass: np.ndarray, class_names: Sequence[str], label: np.ndarray,
                 split: np.ndarray, size: np.ndarray):
        self._text = text.tobytes()  # one bytes object (slicing it makes a path's string); ``text`` views it
        self.index, self.text, self.offsets = index.astype(np.int64, copy=False), np.frombuffer(self._text, np.uint8), \
            offsets.astype(np.int64, copy=False)
        self.domain, self.domain_names = domain.astype(np.int32, copy=False), list(domain_names)
        self.klass, self.class_names = klass.astype(np.int32, copy=False), list(class_names)
        self.label, self.split = label.astype(np.int32, copy=False), split.astype(np.int8, copy=False)
        self.size = size.astype(np.int64, copy=False)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (a ``spawn``/``forkserver`` worker's copy of the dataset): without ``text``, a view of ``_text``
        that pickle would copy, holding every path twice; :meth:`__setstate__` views ``_text`` again."""
        return {k: v for k, v in self.__dict__.items() if k != "text"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.text = np.frombuffer(self._text, np.uint8)

    def __len__(self) -> int:
        return len(self.index)

    def relpath(self, p: int) -> str:
        return self._text[int(self.offsets[p]):int(self.offsets[p + 1])].decode()

    def sample(self, p: int) -> Sample:
        return Sample(int(self.index[p]), self.relpath(p), self.domain_names[self.domain[p]],
                      self.class_names[self.klass[p]], int(self.label[p]), SPLITS[self.split[p]], int(self.size[p]))

    def concat(self, other: SampleColumns) -> SampleColumns:
        """These rows, then ``other``'s (codes of ``other`` re-mapped onto the joined name lists)."""
        domains = self.domain_names + [d for d in other.domain_names if d not in self.domain_names]
        classes = self.class_names + [c for c in other.class_names if c not in self.class_names]
        dmap = np.array([domains.index(d) for d in other.domain_names] or [0], dtype=np.int32)
        cmap = np.array([classes.index(c) for c in other.class_names] or [0], dtype=np.int32)
        return SampleColumns(np.concatenate([self.index, other.index]), np.concatenate([self.text, other.text]),
                             np.concatenate([self.offsets, other.offsets[1:] + self.offsets[-1]]),
                             np.concatenate([self.domain, dmap[other.domain]]), domains,
                             np.concatenate([self.klass, cmap[other.klass]]), classes,
                             np.concatenate([self.label, other.label]), np.concatenate([self.split, other.split]),
                             np.concatenate([self.size, other.size]))

    @classmethod
    def of(cls, samples: Iterable[Sample]) -> SampleColumns:
        """Columns of ``Sample`` s (small lists: tests, a few hand-made samples)."""
        samples = list(samples)
        domains = list(dict.fromkeys(s.domain for s in samples))
        classes = list(dict.fromkeys(s.class_name for s in samples))
        text, offsets = pack_strings(s.relpath for s in samples)
        col = lambda f: np.array([f(s) for s in samples], dtype=np.int64)  # noqa: E731
        return cls(col(lambda s: s.index), text, offsets, col(lambda s: domains.index(s.domain)), domains,
                   col(lambda s: classes.index(s.class_name)), classes, col(lambda s: s.label),
                   col(lambda s: SPLIT_CODE[s.split]), col(lambda s: s.size))


class SampleTable(Sequence[Sample]):
    """A sequence of :class:`Sample` s over :class:`SampleColumns`: all rows, or the rows at ``positions``.

    Indexing, iteration, slicing (a view), ``len``, ``==`` (with any sequence of samples, element by
    element) and ``+`` (a view over the same columns, or a joined table) behave as on a list of samples.
    """

    def __init__(self, columns: SampleColumns, positions: np.ndarray | None = None):
        self.columns, self.positions = columns, positions

    @classmethod
    def of(cls, samples: Iterable[Sample]) -> SampleTable:
        return cls(SampleColumns.of(samples))

    def rows(self) -> np.ndarray:
        """Positions in :attr:`columns` of this table's samples, in order (int64)."""
        return np.arange(len(self.columns), dtype=np.int64) if self.positions is None else self.positions

    def column(self, name: str) -> np.ndarray:
        """One column (``index``, ``label``, ``domain``, ``klass``, ``split``, ``size``) over this table's rows."""
        col = getattr(self.columns, name)
        return col if self.positions is None else col[self.positions]

    def take(self, positions: np.ndarray) -> SampleTable:
        """The samples at ``positions`` of this table (a view)."""
        return SampleTable(self.columns, self.rows()[np.asarray(positions, dtype=np.int64)])

    def __len__(self) -> int:
        return len(self.columns) if self.positions is None else len(self.positions)

    @overload
    def __getitem__(self, i: int) -> Sample: ...

    @overload
    def __getitem__(self, i: slice) -> SampleTable: ...

    def __getitem__(self, i: int | slice) -> Sample | SampleTable:
        if isinstance(i, slice):
            return SampleTable(self.columns, self.rows()[i])
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sample position {i} out of range ({n} samples)")
        i = i + n if i < 0 else i
        return self.columns.sample(int(i if self.positions is None else self.positions[i]))

    def __iter__(self) -> Iterator[Sample]:
        sample = self.columns.sample
        if self.positions is None:
            return (sample(p) for p in range(len(self.columns)))
        return (sample(int(p)) for p in self.positions)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]  # mutable-looking like the list it stands for

    def __add__(self, other: Sequence[Sample]) -> SampleTable:
        if isinstance(other, SampleTable) and other.columns is self.columns:
            return SampleTable(self.columns, np.concatenate([self.rows(), other.rows()]))
        if not len(other):
            return self
        if not len(self):
            return other if isinstance(other, SampleTable) else SampleTable.of(other)
        return SampleTable(self.materialize().concat(
            other.materialize() if isinstance(other, SampleTable) else SampleColumns.of(other)))

    def materialize(self) -> SampleColumns:
        """This table's rows as columns of their own."""
        c, p = self.columns, self.rows()
        text, offsets = take_strings(c.text, c.offsets, p)
        return SampleColumns(c.index[p], text, offsets, c.domain[p], c.domain_names, c.klass[p], c.class_names,
                             c.label[p], c.split[p], c.size[p])

    def __repr__(self) -> str:
        return f"SampleTable({len(self)} samples)"



class SampleFiles:
    """Each sample of a table's sample index and image file, read from the table's columns when asked: picklable,
    and no Python object per image (the cache build's list of ``(index, Path)`` pairs and its ``{index: path}`` dict
    cost ~440 bytes an image; benchmarks/RESULTS.md, "Scale: the teacher-cache build's per-sample structures").

    ``bases[d]``: (folder, characters of the relative path to drop) of the samples of domain code ``d``: ROOT and
    nothing for ROOT's domains, an unlabeled folder and ``NAME/`` for its (:meth:`DomainFolder.files`).
    """

    def __init__(self, table: SampleTable, bases: Sequence[tuple[Path, int]]):
        c = table.columns
        self._text, self._offsets, self._domain, self._index = c._text, c.offsets, c.domain, c.index
        self._rows, self._bases = table.positions, [(Path(base), int(skip)) for base, skip in bases]
        ascending = bool(len(c.index) < 2 or (np.diff(c.index) > 0).all())  # a DomainFolder's are
        self._by_index = None if ascending else np.argsort(c.index, kind="stable")
        self._keys = c.index if self._by_index is None else c.index[self._by_index]

    def __len__(self) -> int:
        return len(self._index) if self._rows is None else len(self._rows)

    def _row(self, pos: int) -> int:
        if not 0 <= pos < len(self):
            raise IndexError(f"sample position {pos} out of range ({len(self)} samples)")
        return int(pos if self._rows is None else self._rows[pos])

    def index(self, pos: int) -> int:
        """The sample index of position ``pos``."""
        return int(self._index[self._row(pos)])

    def path(self, pos: int) -> Path:
        """The image file of position ``pos`` (``DomainFolder.path`` of its sample)."""
        return self._path(self._row(pos))

    def path_of_index(self, index: int) -> Path:
        """The image file of the sample with this index (any of the columns' samples; KeyError if none)."""
        keys = self._keys
        at = int(np.searchsorted(keys, index))
        if at >= len(keys) or int(keys[at]) != index:
            raise KeyError(index)
        return self._path(at if self._by_index is None else int(self._by_index[at]))

    def _path(self, row: int) -> Path:
        base, skip = self._bases[int(self._domain[row])]
        return base / self._text[int(self._offsets[row]):int(self._offsets[row + 1])].decode()[skip:]


def sample_column(samples: Sequence[Sample], name: str) -> np.ndarray:
    """``name`` (``index``, ``label`` or ``size``) of every sample, int64 [n]: a :class:`SampleTable`'s own
    column (no :class:`Sample` built per image: a start-up pass at 10^7 images), else read sample by sample."""
    if isinstance(samples, SampleTable):
        return samples.column(name).astype(np.int64, copy=False)
    return np.fromiter((getattr(s, name) for s in samples), dtype=np.int64, count=len(samples))


def sample_domains(samples: Sequence[Sample], domain_index: dict[str, int]) -> np.ndarray:
    """``domain_index[sample.domain]`` of every sample, int64 [n] (KeyError for a domain not in it, as a lookup)."""
    if not isinstance(samples, SampleTable):
        return np.fromiter((domain_index[s.domain] for s in samples), dtype=np.int64, count=len(samples))
    names, codes = samples.columns.domain_names, samples.column("domain")
    lookup = np.array([domain_index.get(d, -1) for d in names] or [-1], dtype=np.int64)
    out = lookup[codes]
    if (out < 0).any():
        raise KeyError(names[int(codes[np.argmax(out < 0)])])
    return out

__all__ = ["SPLITS", "SPLIT_CODE", "Sample", "SampleColumns", "SampleFiles", "SampleTable", "pack_strings",
           "sample_column", "sample_domains", "sort_order", "take_strings"]
