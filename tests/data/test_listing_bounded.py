"""A folder's listing holds bounded memory (session 29): a folder of more than ``SORT_CHUNK`` listed entries is
sorted through a temporary file (sorted runs, merged), never as one list of its entries; the listing is the same
(order, sizes, links, hidden files and folders, non-UTF-8 names), one stat per image file, and the temporary file
is gone however the walk ends."""
from __future__ import annotations

import errno
import heapq
import io
import os
import random
import tempfile
import tracemalloc
from pathlib import Path

import pytest

from distill.data import extsort, listing
from distill.data.listing import is_image_name, walk_images
from tests.data.test_listing import check_mains_listing


def _chunk(monkeypatch, chunk: int, block: int = 5, fan_in: int = 64) -> None:
    """Runs of ``chunk`` names, read back ``block`` bytes at a time (records cut across blocks), merged ``fan_in``
    at most at a time."""
    # raising (review 1, L10): a renamed knob fails the tests rather than leaving them on the default sizes unseen
    monkeypatch.setattr(listing, "SORT_CHUNK", chunk)
    monkeypatch.setattr(extsort, "SPILL_BLOCK", block)
    monkeypatch.setattr(extsort, "MERGE_FAN_IN", fan_in)


def _at(top: Path, name: str | bytes) -> str:
    return os.path.join(os.fsencode(top), name) if isinstance(name, bytes) else os.path.join(top, name)


def odd_tree(top: Path) -> Path:
    """Names whose str order differs from their bytes' (``\\xc3x`` vs ``é``), non-UTF-8 files and folder, same
    prefixes, a folder sorting between files, hidden ones, links to files, folders and nothing, and fillers."""
    top.mkdir()
    names: list[str | bytes] = ["a.png", "a0.png", "a.png.png", "a-.png", "A.png", "é.png", b"\xc3x.png", b"\xe9.png",
                                "\ue000.png", "new\nline.png", " space.png", ".hidden.png", "notes.txt", "\U0001f600.png",
                                "a/b.png", "a/a/c.jpg", "a.p/x.png", ".hid/h.png", b"\xe9d/in.png", "zz/"]
    names += [f"f{i:02d}.{'png' if i % 3 else 'JPG'}" for i in range(25)]
    for k, name in enumerate(names):
        path = _at(top, name)
        if isinstance(name, str) and name.endswith("/"):
            os.makedirs(path)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            with open(path, "wb") as f:
                f.write(b"x" * (k + 1))
        except OSError as e:  # e.g. a file system that takes UTF-8 names only
            pytest.skip(f"this file system refuses the name {name!r}: {e}")
    for link, target in [("lf.png", "a.png"), ("ld", "a"), ("ld.png", "a"), ("broken.png", "nope.png")]:
        os.symlink(target, top / link)
    return top


def reference(top: str, prefix: str = "", hidden: bool = True):
    """The listing's rule spelled out (``sorted(os.listdir)``): the order and files main's walk gives."""
    for name in sorted(os.listdir(top)):
        path = os.path.join(top, name)
        if os.path.isdir(path) and not os.path.islink(path):
            if hidden or not name.startswith("."):
                yield from reference(path, f"{prefix}{name}/", hidden)
        elif is_image_name(name) and os.path.isfile(path):
            yield prefix + name, os.path.getsize(path)


def test_the_spilled_listing_and_fingerprints_are_mains(tmp_path, monkeypatch):
    """Every folder over the chunk (2) is sorted on disk: the same files, order, sizes and fingerprints as main's."""
    _chunk(monkeypatch, 2)
    check_mains_listing(tmp_path)


@pytest.mark.parametrize("chunk,block", [(1, 1), (2, 3), (3, 5), (7, 16384), (10 ** 9, 16384)])
def test_odd_names_list_in_the_same_order_whatever_the_chunk(tmp_path, monkeypatch, chunk, block):
    top = odd_tree(tmp_path / "t")
    want = list(reference(str(top)))
    rels = [rel for rel, _ in want]
    assert rels.index("é.png") < rels.index("\udcc3x.png")  # str order: as bytes, c3 78 sorts before c3 a9
    assert {"\udce9.png", "\udce9d/in.png", "lf.png", ".hid/h.png", "new\nline.png"} <= set(rels)
    _chunk(monkeypatch, chunk, block)
    assert list(walk_images(top)) == want
    assert list(walk_images(top, "p/", hidden_folders=False)) == list(reference(str(top), "p/", hidden=False))


class _Entry:
    """A ``DirEntry`` that counts how many are alive at once."""
    live = peak = 0

    def __init__(self, entry: os.DirEntry) -> None:
        self._entry = entry
        _Entry.live += 1
        _Entry.peak = max(_Entry.peak, _Entry.live)

    def __del__(self) -> None:
        _Entry.live -= 1

    def __getattr__(self, name: str):
        return getattr(self._entry, name)


class _Scan:
    def __init__(self, it) -> None:
        self._it = it

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._it.close()

    def close(self) -> None:
        self._it.close()

    def __iter__(self):
        return self

    def __next__(self) -> _Entry:
        return _Entry(next(self._it))


def test_a_flat_folder_is_never_held_as_a_list_of_its_entries(tmp_path, monkeypatch):
    """Main sorted every folder's DirEntry objects in one list: a flat folder of 10^7 images held 10^7 of them
    (1-2 GB) while it was listed. Now at most a chunk of them are alive at once."""
    top = tmp_path / "flat"
    top.mkdir()
    for i in range(60):
        (top / f"{(i * 37) % 60:03d}.{'png' if i % 4 else 'txt'}").write_bytes(b"x" * i)
    want = list(reference(str(top)))
    _chunk(monkeypatch, 8)
    real = os.scandir
    monkeypatch.setattr(os, "scandir", lambda path: _Scan(real(path)))
    _Entry.live = _Entry.peak = 0
    assert list(walk_images(top)) == want and len(want) == 45
    # the chunk, the one more that makes the folder spill, and the entry being read
    assert _Entry.peak <= 8 + 2, f"{_Entry.peak} directory entries alive at once (chunk 8)"


class _Stats(_Entry):
    """A ``DirEntry`` whose ``stat()`` calls are counted in ``calls`` (the C-level stat a ``DirEntry`` pays for a
    ``d_type`` the file system leaves unknown stays unseen: Linux's tmp file systems fill it)."""
    calls: list[str] = []

    def stat(self, **k):
        _Stats.calls.append(f"DirEntry.stat {self._entry.name}")
        return self._entry.stat(**k)


@pytest.mark.parametrize("chunk", [4, 1000])  # spilled, in memory
def test_each_image_file_is_stat_ed_once(tmp_path, monkeypatch, chunk):
    """Every stat the walk asks for, through ``os`` or a directory entry: one per image file, none per other one."""
    top = tmp_path / "flat"
    (top / "sub").mkdir(parents=True)
    for i in range(30):
        (top / f"{i:02d}.png").write_bytes(b"x" * i)
    for i in range(10):
        (top / f"{i:02d}.txt").write_bytes(b"x")
    _chunk(monkeypatch, chunk)
    _Stats.calls = []
    for name in ("stat", "lstat"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda *a, _real=real, _name=name, **k: _Stats.calls.append(_name) or _real(*a, **k))
    real_scan = os.scandir

    class Scan(_Scan):
        def __next__(self) -> _Entry:
            return _Stats(next(self._it))
    monkeypatch.setattr(os, "scandir", lambda path: Scan(real_scan(path)))
    assert len(list(walk_images(top))) == 30
    assert len(_Stats.calls) == 30, _Stats.calls


@pytest.mark.parametrize("chunk", [2, 1000])  # spilled, in memory
def test_a_file_deleted_while_its_folder_is_listed_is_passed_over(tmp_path, monkeypatch, chunk):
    """Main (and the in-memory sort until review 2) crashed with FileNotFoundError; a spilled folder skipped it.
    Both now skip it, as ``Path.is_file()`` reads a vanished file."""
    for i in range(5):
        (tmp_path / f"{i}.png").write_bytes(b"x" * i)
    _chunk(monkeypatch, chunk)
    got = []
    for rel, size in walk_images(tmp_path):
        if not got:
            (tmp_path / "3.png").unlink()
        got.append((rel, size))
    assert got == [("0.png", 0), ("1.png", 1), ("2.png", 2), ("4.png", 4)]


def test_a_folder_of_exactly_sort_chunk_entries_is_sorted_in_memory(tmp_path, monkeypatch, spills):
    """The docs say up to SORT_CHUNK entries are sorted in memory: that many made a spill file until review 2."""
    _chunk(monkeypatch, 3)
    top = tmp_path / "three"
    top.mkdir()
    for i in range(3):
        (top / f"{i}.png").write_bytes(b"x")
    assert [r for r, _ in walk_images(top)] == ["0.png", "1.png", "2.png"]
    assert spills[1] == []
    (top / "3.png").write_bytes(b"x")
    assert len(list(walk_images(top))) == 4 and len(spills[1]) == 1


@pytest.fixture
def spills(tmp_path, monkeypatch) -> tuple[Path, list]:
    """(the temporary folder, the temporary files the listing opened)."""
    where = tmp_path / "tmp"
    where.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(where))
    made: list = []
    real = tempfile.TemporaryFile
    monkeypatch.setattr(tempfile, "TemporaryFile", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    return where, made


def _nested(top: Path) -> Path:
    """A folder of 10 images with a subfolder of 10 (sorted between them): two spill files open at once."""
    for i in range(10):
        for rel in (f"{i:02d}.png", f"05m/{i:02d}.png"):
            (top / rel).parent.mkdir(parents=True, exist_ok=True)
            (top / rel).write_bytes(b"x" * i)
    return top


def _fail_at(monkeypatch, n: int, exc: BaseException) -> None:
    real, count = os.stat, [0]

    def stat(*a, **k):
        count[0] += 1
        if count[0] == n:
            raise exc
        return real(*a, **k)
    monkeypatch.setattr(os, "stat", stat)


def _gone(where: Path, made: list) -> None:
    """Both spill files closed, so gone: a ``TemporaryFile`` has no name to find on Linux (``O_TMPFILE``), but an
    open one shows among the process's descriptors (``/proc/self/fd``) as a path in ``where``."""
    assert len(made) == 2 and all(f.closed for f in made)
    if os.path.isdir("/proc/self/fd"):
        held = [t for fd in os.listdir("/proc/self/fd") if (t := _target(fd)).startswith(str(where))]
        assert held == [], held
    assert os.listdir(where) == []  # a system whose TemporaryFile is named (unlinked at once: never seen)


def _target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # the descriptor listdir itself held, closed since
        return ""


def test_the_spill_file_is_gone_after_the_walk(tmp_path, monkeypatch, spills):
    _chunk(monkeypatch, 3)
    top = _nested(tmp_path / "t")
    assert len(list(walk_images(top))) == 20
    _gone(*spills)


@pytest.mark.parametrize("exc", [OSError(errno.EIO, "injected"), KeyboardInterrupt()])
def test_the_spill_file_is_gone_after_an_error_mid_walk(tmp_path, monkeypatch, spills, exc):
    """An error (or Ctrl-C) while the subfolder's files are stat-ed, both folders' spill files open."""
    _chunk(monkeypatch, 3)
    top = _nested(tmp_path / "t")
    _fail_at(monkeypatch, 9, exc)
    got = []
    with pytest.raises(type(exc)):
        for rel, _ in walk_images(top):
            got.append(rel)
    assert got == [f"{i:02d}.png" for i in range(6)] + ["05m/00.png", "05m/01.png"]
    _gone(*spills)


def test_the_spill_file_is_gone_when_the_walk_is_left(tmp_path, monkeypatch, spills):
    _chunk(monkeypatch, 3)
    walk = walk_images(_nested(tmp_path / "t"))
    assert [next(walk) for _ in range(8)][-1] == ("05m/01.png", 1)
    walk.close()
    _gone(*spills)


def test_no_temporary_folder_sorts_in_memory_with_one_warning(tmp_path, monkeypatch, capsys):
    """A TMPDIR that takes no file (a read-only container) refused the listing until review 2; main listed it in
    memory. Now: the same listing, sorted in memory, and one warning line naming the folder and why."""
    _chunk(monkeypatch, 3)
    top = _nested(tmp_path / "t")
    want = list(reference(str(top)))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    monkeypatch.setattr(listing, "_WARNED_TMP", set())
    assert list(walk_images(top)) == want and len(want) == 20
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: {top}: over 3 entries, to be sorted through a temporary "
                                               f"file in {tmp_path}/missing, which failed: "), err
    assert "sorting in memory instead" in err[0]


def test_a_full_temporary_folder_keeps_the_rest_in_memory(tmp_path, monkeypatch, capsys):
    """The disk fills after the first run is written: that run is read back from disk, the rest sorted in memory."""
    _chunk(monkeypatch, 3)
    top = tmp_path / "flat"
    top.mkdir()
    for i in range(20):
        (top / f"{(i * 7) % 20:02d}.png").write_bytes(b"x" * i)
    want = list(reference(str(top)))
    real = tempfile.TemporaryFile

    class Full:
        def __init__(self) -> None:
            self._f, self.writes = real(), 0

        def __getattr__(self, name: str):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self._f.close()

        def write(self, data: bytes) -> int:
            self.writes += 1
            if self.writes > 1:
                self._f.write(data[:3])  # a part of it, then no room
                raise OSError(errno.ENOSPC, "No space left on device")
            return self._f.write(data)
    monkeypatch.setattr(tempfile, "TemporaryFile", lambda *a, **k: Full())
    monkeypatch.setattr(listing, "_WARNED_TMP", set())
    assert list(walk_images(top)) == want and len(want) == 20
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "No space left on device; sorting in memory instead" in err[0], err


def test_the_root_listing_holds_no_python_object_per_image(tmp_path, monkeypatch):
    """``list_images`` (ROOT/DOMAIN/CLASS: train, eval, export) kept each class folder as a list of ``bytes`` paths
    and a list of ints until review 2: ~200 B per image at its peak (tracemalloc) in a flat class folder. Now it
    packs as ``pack_images`` does: the path's bytes plus a few int64/int32 per image (~75 B at the peak here,
    with the final arrays' copy). Small chunk and block, so the bounded walk's own share stays small."""
    top = tmp_path / "root" / "d" / "c"
    top.mkdir(parents=True)
    n = 3000
    for i in range(n):
        with open(top / f"IMG_{i:08d}.jpg", "wb") as f:
            f.truncate(5000 + i % 1000)  # sizes that are not Python's cached small ints
    _chunk(monkeypatch, 64, 64)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        domains, files = listing.list_images(tmp_path / "root")
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert domains == ["d"] and len(files) == n and files.folders == [("d", "c")]
    assert peak / n < 120, f"{peak / n:.0f} B per image at the listing's peak"


class _FullAfter(io.FileIO):
    """A file on a disk that is full after ``limit`` bytes: a write past it takes what fits (a short write), the
    next one raises ENOSPC, as a real file does."""
    limit = 0

    def write(self, b) -> int:  # type: ignore[override]
        room = self.limit - self.tell()
        if room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(bytes(b)[:room])


@pytest.mark.parametrize(("names", "chunk", "limit"), [
    (300, 100, 21000),  # runs of ~16 KB (over the 8 KB write buffer): the disk fills inside run 2
    (300, 100, 32100),  # ... in run 2's last 8 KB, which a buffered file held and flushed again at the merge's seek
    (200, 50, 700),  # short names, runs under 8 KB: a buffered file holds each run whole
])
def test_a_disk_filling_inside_a_run_keeps_the_rest_in_memory(tmp_path, monkeypatch, capsys, names, chunk, limit):
    """Review 4 finding 2: ``TemporaryFile()`` is buffered; the bytes a full disk refused stayed in its buffer and
    raised ENOSPC again out of the walk at the merge's seek (or at close). The fake honours ``buffering`` as
    ``TemporaryFile`` does."""
    top = tmp_path / "flat"
    top.mkdir()
    long = names == 300
    for i in range(names):
        (top / (f"{'x' * 150}_{i:05d}.jpg" if long else f"IMG_{i:05d}.jpg")).write_bytes(b"")
    _chunk(monkeypatch, chunk, 4096)
    monkeypatch.setattr(listing, "_WARNED_TMP", set())
    spills = tmp_path / "spills"
    spills.mkdir()

    def temporary_file(*args, buffering: int = -1, **kwargs):
        path = spills / f"{len(os.listdir(spills))}"
        raw = _FullAfter(path, "w+b")
        raw.limit = limit
        return raw if buffering == 0 else io.BufferedRandom(raw)
    monkeypatch.setattr(tempfile, "TemporaryFile", temporary_file)
    assert list(walk_images(top)) == list(reference(str(top)))
    assert "No space left on device; sorting in memory instead" in capsys.readouterr().err


#: name pieces for the fuzz: str order unlike byte order (é vs \xc3x), non-UTF-8 bytes, hidden, case, non-image
PIECES: list[str | bytes] = ["a", "b", "A", "é", b"\xc3x", b"\xe9", "\ue000", "\U0001f600", "\n", " ", ".", "-", "0"]


def _fuzz_tree(top: Path, rng: random.Random) -> Path:
    """Up to 3 levels of folders of random names (some of them images, some hidden, some non-UTF-8), links too."""
    top.mkdir()
    folders = [os.fsencode(top)]
    for k in range(rng.randint(5, 80)):
        name = b"".join(p if isinstance(p, bytes) else p.encode() for p in rng.choices(PIECES, k=rng.randint(1, 4)))
        name += rng.choice([b".png", b".JPG", b".txt", b"", b".png"])
        where = os.path.join(rng.choice(folders), name)
        if os.path.lexists(where):
            continue
        if rng.random() < 0.15 and len(folders) < 8:
            os.mkdir(where)
            folders.append(where)
        elif rng.random() < 0.05:
            os.symlink(rng.choice([b"nowhere", b"..", folders[-1]]), where)
        else:
            with open(where, "wb") as f:
                f.write(b"x" * k)
    return top


@pytest.mark.parametrize("seed", range(10))
def test_fuzz_random_trees_list_by_the_rule_whatever_the_chunk_fan_in_and_block(tmp_path, monkeypatch, seed):
    """Random trees against the rule spelled out (:func:`reference`), sorted through runs with a random chunk,
    fan-in and read block: many runs, merged down in several passes, records cut across blocks."""
    rng = random.Random(seed)
    top = _fuzz_tree(tmp_path / "t", rng)
    _chunk(monkeypatch, rng.randint(1, 4), rng.choice([1, 3, 8, 64]), rng.choice([2, 3, 5]))
    assert list(walk_images(top)) == list(reference(str(top)))
    assert list(walk_images(top, "p/", hidden_folders=False)) == list(reference(str(top), "p/", hidden=False))


class Counted:
    """``heapq.merge`` spied on: how many runs are being read at once (a run's reader counts from its first record
    until it is exhausted or dropped), over every merge, nested or one after another."""

    def __init__(self, monkeypatch) -> None:
        self.live = self.peak = 0
        real = heapq.merge
        monkeypatch.setattr(heapq, "merge", lambda *runs, **k: real(*map(self._run, runs), **k))

    def _run(self, run):
        self.live += 1
        self.peak = max(self.peak, self.live)
        try:
            yield from run
        finally:
            self.live -= 1


def test_a_flat_folder_s_runs_are_merged_no_more_than_the_fan_in_at_once(tmp_path, monkeypatch):
    """Session 30: main merged every run of a spilled folder at once, a read block each: N / SORT_CHUNK blocks
    (~17 MB at 10^7 entries in one folder, ~170 MB at 10^8). Now runs are merged down, ``MERGE_FAN_IN`` at most at
    once. 200 images in runs of 4: 50 runs; main read all 50 at once."""
    top = tmp_path / "flat"
    top.mkdir()
    for i in range(200):
        (top / f"{(i * 37) % 200:03d}.png").write_bytes(b"x" * (i % 7))
    want = list(reference(str(top)))
    _chunk(monkeypatch, 4, 16, fan_in=4)
    counted = Counted(monkeypatch)
    assert list(walk_images(top)) == want and len(want) == 200
    assert counted.peak <= 4, f"{counted.peak} runs merged at once (fan-in 4)"


def _walk_peak(top: Path) -> int:
    """tracemalloc's peak while ``top`` is walked, each file dropped as it comes (the walk's own memory)."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in walk_images(top):
            pass
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_the_merge_holds_the_same_memory_whatever_the_folder_s_size(tmp_path, monkeypatch):
    """A folder of 512 images (8 runs of 64 long names) and one of 2560 (40 runs), merged 4 runs at a time: the walk's
    peak (tracemalloc) grows by little (~18 KB when written: the runs' places in the file, and a merge pass's block
    being written). Main held a 4 KB read block (and its records) for every run: 98 KB -> 467 KB."""
    peaks = []
    for n in (512, 2560):
        top = tmp_path / f"flat{n}"
        top.mkdir()
        for i in range(n):
            (top / f"{'x' * 100}{(i * 37) % n:05d}.png").write_bytes(b"")
        _chunk(monkeypatch, 64, 4096, fan_in=4)
        peaks.append(_walk_peak(top))
    assert peaks[1] - peaks[0] < 64 * 1024, f"the walk's peak: {peaks[0]} B at 8 runs, {peaks[1]} B at 40"


def test_each_distinct_temporary_folder_warning_is_said_once(tmp_path, monkeypatch, capsys):
    """Review 1 (L9): warnings were said once per temporary folder, so the merge's fallback ("merging its N sorted
    runs at once") was swallowed where that folder had already warned that a spill failed. Now each distinct warning
    is said once: folder 1 cannot make its spill file (in memory), folder 2 fills the disk at its first merge, folder
    3 is folder 1 again (nothing more said)."""
    tops = []
    for k, n in enumerate((20, 40, 20)):
        top = tmp_path / f"flat{k}"
        top.mkdir()
        for i in range(n):
            (top / f"{(i * 7) % n:03d}.png").write_bytes(b"")
        tops.append(top)
    _chunk(monkeypatch, 4, 16, fan_in=4)
    monkeypatch.setattr(listing, "_WARNED_TMP", set())
    made = []

    class FullAtTheMerge(io.FileIO):
        """Takes the folder's 10 runs (one write each), then no more: the first merge's write fails."""
        def write(self, b) -> int:  # type: ignore[override]
            self.writes = getattr(self, "writes", 0) + 1
            if self.writes > 10:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(b)

    def temporary_file(*args, buffering: int = -1, **kwargs):
        made.append(1)
        if len(made) != 2:  # folders 1 and 3: no file at all
            raise OSError(errno.EACCES, "Permission denied")
        return FullAtTheMerge(tmp_path / "spill", "w+b")
    monkeypatch.setattr(tempfile, "TemporaryFile", temporary_file)
    for top in tops:
        assert list(walk_images(top)) == list(reference(str(top)))
    err = capsys.readouterr().err.splitlines()
    assert len(made) == 3 and len(err) == 2, err
    assert err[0].startswith(f"warning: {tops[0]}: ") and "Permission denied; sorting in memory instead" in err[0]
    assert err[1].startswith(f"warning: {tops[1]}: ") and "No space left on device; merging its 10 sorted runs at " \
        "once instead" in err[1]
