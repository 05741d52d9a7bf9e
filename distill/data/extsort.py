"""Sorting more strings than memory should hold (:func:`external_sort`): sorted runs in one nameless temporary file,
merged at most :data:`MERGE_FAN_IN` at a time, whatever their number.

The listing (:func:`distill.data.listing.walk_images`) sorts a folder of more than ``SORT_CHUNK`` (65536) entries
this way, its runs of that many ``name NUL kind`` records. Until session 30 every run was merged at once (one read
block each: N / 65536 of them, ~17 MB at 10^7 entries in one folder, ~170 MB at 10^8); now, while there are more
than :data:`MERGE_FAN_IN` (64) runs, the first few (as many as make every later merge a full one) are merged into a
new run at the file's end, so what the merge holds is at most 64 read blocks plus one block being written (~6 MB
measured), whatever the folder's size. What it costs: more than 64 runs (4.2 million entries at the default chunk) are
read and written once more per level of merging (each record about once more up to 268 million), and the file
keeps the merged-away runs until it is closed: its size is the records' bytes times the levels (up to twice the
records up to 268 million entries). The output is the same: ``str`` order (``heapq.merge`` of runs each sorted by
``list.sort``), non-UTF-8 names' surrogate escapes kept exactly (``surrogatepass``). Where the temporary folder
takes no file, or fills while the runs are written, the rest is kept in memory; where it fills while runs are
merged, the runs left are merged all at once (as before); either way the caller is told (``fallback``).
``tests/data/test_extsort.py``; ``benchmarks/flat_listing.py --what walk``.
"""
from __future__ import annotations

import errno
import heapq
import os
import tempfile
from contextlib import ExitStack, suppress
from typing import IO, Callable, Iterable, Iterator

#: bytes read at a time from each sorted run while they are merged (and about as many written at a time by a merge)
SPILL_BLOCK = 16384
#: the most runs merged at once: what a merge holds is this many read blocks, however many runs there are
MERGE_FAN_IN = 64

#: what the caller is told is done instead where the temporary folder takes no file or no more runs
IN_MEMORY = "sorting in memory instead (a Python string per entry: memory grows with the folder)"

#: a run written to the temporary file: its bytes ``[start, end)``
Span = tuple[int, int]


def external_sort(runs: Iterable[list[str]], stack: ExitStack, fallback: Callable[[OSError, str], None]) -> Iterator[str]:
    """Every string of ``runs`` in ``str`` order. ``runs`` is read to its end here (so a folder's scan can be closed
    after), each run sorted in place and written to a temporary file in the system's temporary folder (``TMPDIR``;
    nameless there, held open by ``stack``: gone with it); then runs are merged :data:`MERGE_FAN_IN` at most at a
    time (:func:`_merge_down`) until one merge of what is left, the iterator returned, suffices. No string may hold
    ``/`` (it ends one in the file). Where the file cannot be made or takes no more, ``fallback(err, what is done
    instead)`` is called and the runs from there on are kept in memory (and merged with the written ones)."""
    f: IO[bytes] | None = None
    try:  # unbuffered: a raw write may take part of the bytes, so no byte that failed waits in a buffer (_append)
        f = stack.enter_context(tempfile.TemporaryFile(buffering=0))
    except OSError as err:
        fallback(err, IN_MEMORY)
    out = f  # None once the file takes no more
    written: list[Span] = []
    kept: list[list[str]] = []
    for run in runs:
        run.sort()
        if out is not None:
            try:
                written.append(_append(out, [_encode(run)]))
                continue
            except _NoRoom as full:  # this run and the rest in memory (runs already written stay good)
                fallback(full.err, IN_MEMORY)
                out = None
        kept.append(run)
    if out is not None:
        written = _merge_down(out, written, fallback)
    reads = [_read(f, *span) for span in written] if f is not None else []
    return heapq.merge(*reads, *map(iter, kept))


def _merge_down(f: IO[bytes], runs: list[Span], fallback: Callable[[OSError, str], None]) -> list[Span]:
    """``runs`` merged into fewer, longer runs appended to ``f`` until at most :data:`MERGE_FAN_IN` are left. Each
    merge takes the first runs (the shortest: merged runs go to the end) and the first one only as many as make
    every later one a full :data:`MERGE_FAN_IN` (as a Huffman code of equal weights does), so that a record is
    rewritten as few times as the fan-in allows. Where ``f`` fills, it is cut back to before that merge and all the
    runs left are returned, more than the fan-in (``fallback`` told)."""
    fan_in = max(2, MERGE_FAN_IN)
    while len(runs) > fan_in:
        take = (len(runs) - 2) % (fan_in - 1) + 2  # 2..fan_in; what is left then is 1 mod (fan_in - 1)
        try:  # an error reading the runs is not one of room: it goes out as it is
            merged = _append(f, _blocks(heapq.merge(*(_read(f, *span) for span in runs[:take]))))
        except _NoRoom as full:
            fallback(full.err, f"merging its {len(runs)} sorted runs at once instead (a read block each: memory grows "
                          "with the folder)")
            break
        runs = runs[take:] + [merged]
    return runs


def _encode(records: list[str]) -> bytes:
    """``records`` as the file holds them: each ended by ``/``; ``surrogatepass`` keeps a non-UTF-8 name's escapes."""
    return ("/".join(records) + "/").encode("utf-8", "surrogatepass")


def _blocks(records: Iterator[str]) -> Iterator[bytes]:
    """``records`` encoded about :data:`SPILL_BLOCK` characters at a time (what a merge holds of its output)."""
    block: list[str] = []
    size = 0
    for r in records:
        block.append(r)
        size += len(r) + 1
        if size >= SPILL_BLOCK:
            yield _encode(block)
            block, size = [], 0
    if block:
        yield _encode(block)


class _NoRoom(Exception):
    """The temporary file took no more (``err``: why); it was cut back to where it ended before."""

    def __init__(self, err: OSError) -> None:
        super().__init__(err)
        self.err = err


def _append(f: IO[bytes], blocks: Iterable[bytes]) -> Span:
    """``blocks`` written at the end of ``f`` (reads may move its position between them): the span they fill. Raises
    :class:`_NoRoom` where ``f`` takes no more, with ``f`` cut back to where it ended before: ``f`` is unbuffered, so
    no byte that failed is left in a buffer to fail again at a later seek or at close (review 4 finding 2, session
    29). An error making ``blocks`` (reading the runs merged) goes out as it is."""
    start = pos = f.seek(0, os.SEEK_END)
    for block in blocks:
        data = memoryview(block)
        while data:
            try:
                f.seek(pos)
                took = f.write(data)
                if not took:
                    raise OSError(errno.ENOSPC, "the temporary file took no more bytes")
            except OSError as err:
                with suppress(OSError):
                    f.truncate(start)
                raise _NoRoom(err) from err
            pos += took
            data = data[took:]
    return start, pos


def _read(f: IO[bytes], start: int, end: int) -> Iterator[str]:
    """The records written at ``f[start:end]``, :data:`SPILL_BLOCK` bytes read at a time. A file that ends before
    ``end`` (cut short under us) raises ``OSError`` instead of reading nothing forever."""
    tail = b""
    while start < end:
        f.seek(start)
        read = f.read(min(SPILL_BLOCK, end - start))
        if not read:
            raise OSError(errno.EIO, f"the listing's temporary sort file ends at byte {start}, before its runs' end "
                                     f"({end}): it was cut short")
        start += len(read)
        block = tail + read
        cut = block.rfind(b"/") + 1  # whole records only: a name's bytes are never cut
        tail = block[cut:]
        yield from block[:cut].decode("utf-8", "surrogatepass").split("/")[:-1]
