"""The one walk of a data root's file system (:func:`list_images`), packed, and file names that are not UTF-8.

Paths are held as UTF-8 text (:mod:`distill.data.sample_table`), written into manifests and hashed into
fingerprints. A name whose bytes are not UTF-8 (a Latin-1 name from an old Windows machine or zip archive)
has no such text: Python sees it with surrogate escapes (``caf\\udce9.jpg``) that cannot be encoded. Such a
file is kept out of the listing and named (:func:`shown`: its undecodable bytes as ``\\xNN``); the data set
refuses it in one line (:func:`refuse_unnamed`) unless the stage skips bad images (``--skip-bad``), when it
is left out with a warning, as an undecodable image is. The check costs nothing per file: the walk encodes
every path anyway, and only an encode that fails takes the slow path. A domain or class *folder* with such
a name is always refused: leaving it out would drop a whole domain or class. ROOT's own path may be anything:
only paths relative to it are stored as text.

The walk (:func:`walk_images`) reads each folder once with ``os.scandir`` and costs one ``stat`` per image
file (its size) and none per other entry: whether an entry is a folder or a file comes from the directory
entry's type (``d_type``; a file system that does not fill it in costs one ``stat``, cached for the size, and
in a spilled folder, whose entries are not kept, an image's ``os.stat`` after it: two),
and the extension and hidden tests read the name only. ``sorted(Path.rglob("*"))`` before it took two stats
per file (``is_file()``, then ``stat()``) and read every folder twice; at 10^7 files on network storage the
stats are the listing's time. Same files, order, sizes and so fingerprints (``tests/data/test_listing.py``).

What a folder holds while it is listed is bounded, whatever it holds (:func:`_sorted_scan`): up to
:data:`SORT_CHUNK` (65536) folders and image names are sorted in memory as their ``DirEntry`` objects, as before;
a larger folder (a flat camera dump: main held every entry to sort it, ~240 B each, measured to 10^6 images with
11-byte names and so ~2.4 GB extrapolated to 10^7) is read in sorted runs of that many names written to a temporary
file in the system's temporary folder (``TMPDIR``; not beside the data, which may be read-only and would list it; the
file has no name there and is closed, so gone, however the walk ends; where ``TMPDIR`` is a tmpfs that file is RAM,
a name's bytes plus 3 per entry, up to twice that over 4.2 million entries, which RSS does not show), then merged
at most 64 runs at a time, a read block each, however many there are (:mod:`distill.data.extsort`; all at once, a
block per run, until session 30: ~17 MB at 10^7 entries, ~170 MB at 10^8). Where ``TMPDIR`` takes no file, or
fills, the rest is sorted in memory (a string per entry), with one warning. Whether an entry is a
folder or an image name is read from its ``d_type`` as it is scanned; a spilled image file's one ``stat`` is
``os.stat`` of its path. The order is Python's ``str`` order (not the bytes'), non-UTF-8 names kept exactly
(``tests/data/test_listing_bounded.py``; ``benchmarks/flat_listing.py``: peak memory old vs new).
"""
from __future__ import annotations

import errno
import os
import re
import stat
import sys
import tempfile
from array import array
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from distill.data.extsort import external_sort
from distill.data.images import IMAGE_EXTENSIONS
from distill.data.sample_table import pack_strings
from distill.errors import DistillError

#: why a file with a non-UTF-8 name is left out (the skipped-images lists' reason)
NOT_UTF8 = "file name is not valid UTF-8"

#: the errors ``Path.is_file()`` / ``is_dir()`` read as "no" (a broken or looping link, a vanished entry)
_NOT_THERE = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)


def shown(path: str | Path) -> str:
    """``path`` as text that can be printed and stored: bytes that are not UTF-8 shown as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_utf8(name: str) -> bool:
    """Whether a name read from the file system is UTF-8 (no surrogate escapes)."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


def refuse_unnamed(unnamed: Sequence[str], where: str) -> None:
    """Raise one line naming the first file of ``unnamed`` (shown paths) and how many there are under ``where``."""
    more = f"; {len(unnamed)} such files under {where}" if len(unnamed) > 1 else ""
    raise DistillError(f"{unnamed[0]}: {NOT_UTF8} (its undecodable bytes shown as \\xNN){more}; rename it, or pass "
                       "--skip-bad to leave it out")


#: how many files one warning line names before "and N more" (10^5 such names would make a megabyte line)
LINE_LIMIT = 10


def left_out_line(what: str, root: str | Path, left: Sequence[tuple[str, str] | str], note: str = "") -> str:
    """The one warning line naming the files a stage left out (``left``: ``(path, reason)`` pairs or paths, as the
    data set names its images: ROOT-relative), with ROOT named once: ``N {what} (paths under ROOT{note}): a/b.png
    (reason), ...``, the first :data:`LINE_LIMIT` of them, then how many more."""
    shown_ = [p if isinstance(p, str) else f"{p[0]} ({p[1]})" for p in left[:LINE_LIMIT]]
    more = f" and {len(left) - LINE_LIMIT} more" if len(left) > LINE_LIMIT else ""
    return f"{len(left)} {what} (paths under {root}{note}): {', '.join(shown_)}{more}"


def _check_folder_name(path: Path, what: str) -> None:
    if not is_utf8(path.name):
        raise DistillError(f"{shown(path)}: {what} folder name is not valid UTF-8 (its undecodable bytes shown as "
                           f"\\xNN); rename the folder (it names a {what}: --skip-bad cannot leave it out)")


def _is(test: Callable[[], bool]) -> bool:
    """A ``DirEntry`` test as ``Path``'s reads it: False where the entry (or its link's target) is not there."""
    try:
        return test()
    except OSError as e:
        if e.errno not in _NOT_THERE:
            raise
        return False


def is_image_name(name: str) -> bool:
    """Whether a file named ``name`` is listed: not hidden, and ``Path(name).suffix`` (any case) an image's."""
    dot = name.rfind(".")
    return not name.startswith(".") and 0 < dot < len(name) - 1 and name[dot:].lower() in IMAGE_EXTENSIONS


#: a folder holding more listed entries (folders and image names) than this is sorted on disk, in runs of this many
SORT_CHUNK = 65536

#: warnings said about a temporary folder, as (folder, what is done instead, its numbers left out): each distinct one
#: once per process (a spill failed: :func:`_sorted_scan` sorts in memory, as main did; or a merge failed: the runs
#: are merged at once), so that neither hides the other
_WARNED_TMP: set[tuple[str, str]] = set()


def _warn(top: str, err: OSError, instead: str) -> None:
    where = tempfile.gettempdir()
    key = (where, re.sub(r"\d+", "N", instead))  # "merging its 12 sorted runs": the same warning for any count
    if key not in _WARNED_TMP:
        _WARNED_TMP.add(key)
        print(f"warning: {shown(top)}: over {SORT_CHUNK} entries, to be sorted through a temporary file in "
              f"{shown(where)}, which failed: {err}; {instead}; set TMPDIR to a writable folder with room to bound it",
              file=sys.stderr)


def _runs(held: list[os.DirEntry[str]], it: Iterator[os.DirEntry[str]],
          kind: Callable[[os.DirEntry[str]], str | None]) -> Iterator[list[str]]:
    """A spilled folder's ``name NUL kind`` records in runs: ``held``'s (emptied, so its entries are freed), then
    :data:`SORT_CHUNK` at a time from ``it``. No name holds NUL or ``/``, so records sort as their names do (NUL
    sorts first) and ``/`` can end one in the temporary file (:func:`~distill.data.extsort.external_sort`)."""
    run = [f"{e.name}\0{kind(e)}" for e in held]
    held.clear()
    yield run
    run = []
    for e in it:
        k = kind(e)
        if k is not None:
            run.append(f"{e.name}\0{k}")
            if len(run) == SORT_CHUNK:
                yield run
                run = []
    if run:
        yield run


def _sorted_scan(it: Iterator[os.DirEntry[str]], top: str, kind: Callable[[os.DirEntry[str]], str | None],
                 stack: ExitStack) -> tuple[list[os.DirEntry[str]], Iterator[str]]:
    """The entries of folder ``top`` (read from ``it``, its ``os.scandir``) that ``kind`` gives a kind (``d``: a
    folder to walk, ``f``: an image name), in name order (Python's ``str`` order, as ``sorted`` gives), as
    ``(entries, records)``, one of them empty. Up to :data:`SORT_CHUNK` such entries (that many included):
    ``entries``, sorted in memory and reversed (popped from the end), each ``DirEntry`` kept (and the stat it may
    cache). A folder with more is read in runs of up to that many ``name NUL kind`` records (the first one more)
    and sorted through a temporary file (:func:`~distill.data.extsort.external_sort`, its file held open by
    ``stack``): ``records``, and what is held is one run while reading and at most ``MERGE_FAN_IN`` read blocks
    while merging, never the folder. Where the temporary folder takes no file (or no more), the runs from there on
    are kept in memory, with one warning per temporary folder (:func:`_warn`): the listing is the same. The whole
    folder is read here."""
    held: list[os.DirEntry[str]] = []
    for e in it:
        if kind(e) is not None:
            held.append(e)
            if len(held) > SORT_CHUNK:
                break
    else:
        held.sort(key=lambda e: e.name, reverse=True)
        return held, iter(())
    return [], external_sort(_runs(held, it, kind), stack, lambda err, instead: _warn(top, err, instead))


def _image_size(stat_: Callable[[], os.stat_result]) -> int | None:
    """The size ``stat_()`` gives (a link followed), None where it is not a file (as ``Path.is_file()``): a file
    deleted while its folder is listed is passed over, in a folder sorted in memory or on disk alike."""
    try:
        st = stat_()
    except OSError as e:
        if e.errno not in _NOT_THERE:
            raise
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def walk_images(top: str | Path, prefix: str = "", hidden_folders: bool = True) -> Iterator[tuple[str, int]]:
    """``(prefix + path relative to top, size in bytes)`` of every image file below folder ``top``: what
    ``sorted(Path(top).rglob("*"))`` filtered by name, ``is_file()`` and ``stat()`` gave, in its order (names
    sorted folder by folder, a folder's files where its name sorts), at one ``stat`` per image file (module
    docstring). As ``rglob``: links to files are listed, links to folders are not entered, an unreadable
    subfolder is passed over; hidden files are left out, and with ``hidden_folders=False`` hidden folders too.
    What a folder holds while it is listed is bounded (:data:`SORT_CHUNK` entries; :func:`_sorted_scan`).
    """
    def kind(e: os.DirEntry[str]) -> str | None:
        if _is(lambda: e.is_dir(follow_symlinks=False)):
            return "d" if hidden_folders or not e.name.startswith(".") else None
        return "f" if is_image_name(e.name) else None

    top = os.fspath(top)
    try:
        it = os.scandir(top)
    except PermissionError:
        return
    with ExitStack() as stack:  # the folder's scandir, and any spill file: closed (and so gone) however it ends
        held, records = _sorted_scan(stack.enter_context(it), top, kind, stack)
        it.close()  # read: not held open while its subfolders are walked
        while held:  # popped in name order: an entry, and the stat it caches, is freed once it is listed
            e = held.pop()
            if _is(lambda: e.is_dir(follow_symlinks=False)):  # what kind() read: cached in the entry
                yield from walk_images(e.path, f"{prefix}{e.name}/", hidden_folders)
            elif _is(e.is_file) and (size := _image_size(e.stat)) is not None:  # cached where is_file() needed it
                yield prefix + e.name, size
        base = os.path.join(top, "")
        for r in records:  # a spilled folder's "name NUL kind", merged in name order
            name = r[:-2]
            if r[-1] == "d":
                yield from walk_images(base + name, f"{prefix}{name}/", hidden_folders)
            elif (size := _image_size(lambda: os.stat(base + name))) is not None:
                yield prefix + name, size


@dataclass(frozen=True)
class PackedFiles:
    """Image files packed as they were walked (no Python object per file): relative paths as one UTF-8 buffer
    and offsets, sizes in bytes; ``unnamed``: the files left out because their names are not UTF-8 (shown paths)."""

    text: np.ndarray     # uint8 [B]
    offsets: np.ndarray  # int64 [n + 1]
    size: np.ndarray     # int64 [n]
    unnamed: tuple[str, ...] = ()


def _pack(walk: Iterator[tuple[str, int]], top: Path, text: bytearray, ends: array, sizes: array,
          unnamed: list[str]) -> int:
    """``walk``'s paths appended to ``text`` as UTF-8, their ends and sizes to ``ends`` and ``sizes`` (int64): what
    grows with the listing is those bytes and 16 per file, never a Python object per file. A path that is not
    UTF-8 is left out, named under ``top`` in ``unnamed``. Returns how many files were packed."""
    n = 0
    for rel, size in walk:
        try:  # every path is encoded here anyway: a failure is the only extra work
            text += rel.encode()
        except UnicodeEncodeError:
            unnamed.append(shown(top / rel))
            continue
        ends.append(len(text))
        sizes.append(size)
        n += 1
    return n


def _arrays(text: bytearray, ends: array, sizes: array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_pack`'s buffers as ``(text uint8, offsets int64 [n + 1], size int64)`` arrays."""
    offsets = np.zeros(len(ends) + 1, dtype=np.int64)
    offsets[1:] = np.frombuffer(ends, dtype=np.int64)
    return (np.frombuffer(text, dtype=np.uint8).copy(), offsets,
            np.frombuffer(sizes, dtype=np.int64).copy())


def pack_images(top: Path, hidden_folders: bool = True) -> PackedFiles:
    """:func:`walk_images` of ``top`` packed while it walks (:func:`_pack`). A path that is not UTF-8 is left out,
    named under ``top`` in :attr:`PackedFiles.unnamed`."""
    text, ends, sizes = bytearray(), array("q"), array("q")
    unnamed: list[str] = []
    _pack(walk_images(top, hidden_folders=hidden_folders), top, text, ends, sizes, unnamed)
    return PackedFiles(*_arrays(text, ends, sizes), tuple(unnamed))


def domain_folders(root: str | Path) -> list[str]:
    """ROOT's domain folders as :func:`list_images` lists them, without walking them (none: not a folder)."""
    return _folders(Path(root)) if Path(root).is_dir() else []


def _folders(path: Path) -> list[str]:
    """The sorted names of ``path``'s folders (links to folders too), hidden ones left out."""
    with os.scandir(path) as it:
        return sorted(e.name for e in it if not e.name.startswith(".") and _is(e.is_dir))


@dataclass(frozen=True)
class FileList:
    """ROOT's image files in scan order, packed (no Python object per file): relative paths as one UTF-8
    buffer and offsets, each file's domain (a position in the listing's domains), class folder (a position
    in ``folders``: ``(domain, folder name)``) and size in bytes; ``unnamed``: the files left out because
    their names are not UTF-8, as :func:`shown` paths under ROOT."""

    text: np.ndarray     # uint8 [B]
    offsets: np.ndarray  # int64 [n + 1]
    domain: np.ndarray   # int32 [n]
    folder: np.ndarray   # int32 [n]
    folders: list[tuple[str, str]]
    size: np.ndarray     # int64 [n]
    unnamed: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.size)

    @classmethod
    def of(cls, domains: Sequence[str], files: Sequence[tuple[str, str, str, int]]) -> FileList:
        """From ``(relpath, domain, class folder, bytes)`` tuples."""
        folders = list(dict.fromkeys((d, f) for _, d, f, _ in files))
        code = {k: i for i, k in enumerate(folders)}
        text, offsets = pack_strings(rel for rel, _, _, _ in files)
        return cls(text, offsets, np.array([list(domains).index(d) for _, d, _, _ in files], dtype=np.int32),
                   np.array([code[(d, f)] for _, d, f, _ in files], dtype=np.int32), folders,
                   np.array([size for *_, size in files], dtype=np.int64))


#: ROOT's scan: (sorted domain folders, its files) (:func:`list_images`); the files may also be given as
#: ``[(relpath, domain, class folder, bytes)]``.
Listing = tuple[list[str], "FileList | Sequence[tuple[str, str, str, int]]"]


def list_images(root: str | Path) -> tuple[list[str], FileList]:
    """The one walk of ROOT's file system: its domain folders and every image under ROOT/DOMAIN/CLASS/ with
    its size (hidden files, domain and class folders skipped; a hidden folder *inside* a class folder is listed,
    as it always was: fingerprints hold it). :class:`~distill.data.folder.DomainFolder` makes it, or takes
    one made once for the whole run (:func:`distill.utils.runtime.share_from_main`: rank 0 lists, the other
    ranks receive). Packed as it walks (:func:`_pack`, as :func:`pack_images`): what grows with ROOT is each
    path's bytes and 16 per file while it is listed, plus the bounded listing of one folder (:func:`walk_images`).
    Files whose names are not UTF-8 are left out and listed in :attr:`FileList.unnamed`.

    Raises:
        DistillError: ROOT is not a folder, or a domain or class folder's name is not UTF-8.
    """
    root = Path(root)
    if not root.is_dir():
        raise DistillError(f"{root}: dataset root not found (expected ROOT/DOMAIN/CLASS/image)")
    domains = _folders(root)
    text, ends, sizes = bytearray(), array("q"), array("q")
    folders: list[tuple[str, str]] = []
    dom, count = array("i"), array("q")  # per class folder listed: its domain, how many files
    unnamed: list[str] = []
    for di, domain in enumerate(domains):
        _check_folder_name(root / domain, "domain")
        for name in _folders(root / domain):
            cdir = root / domain / name
            _check_folder_name(cdir, "class")
            if n := _pack(walk_images(cdir, f"{domain}/{name}/"), root, text, ends, sizes, unnamed):
                folders.append((domain, name))
                dom.append(di)
                count.append(n)
    packed, offsets, size = _arrays(text, ends, sizes)
    del text, ends, sizes
    counts = np.frombuffer(count, dtype=np.int64)
    return domains, FileList(packed, offsets, np.repeat(np.frombuffer(dom, dtype=np.int32), counts),
                             np.repeat(np.arange(len(folders), dtype=np.int32), counts), folders, size,
                             tuple(unnamed))
