"""The external sort (:func:`distill.data.extsort.external_sort`, session 30): strings sorted through runs in a
temporary file, merged at most ``MERGE_FAN_IN`` at a time; the same strings in ``sorted`` order whatever the runs,
fan-in, read block or failures."""
from __future__ import annotations

import errno
import io
import random
from contextlib import ExitStack

import pytest

from distill.data import extsort
from tests.data.test_listing_bounded import Counted, _FullAfter

#: characters whose str order and UTF-8 byte order differ, surrogate escapes (a non-UTF-8 name's bytes), NUL (the
#: listing's record separator), non-BMP, newline: no "/" (it ends a record in the file)
ALPHABET = ["a", "b", "A", "\0", "é", "\udcc3", "\udce9", "\ue000", "\U0001f600", "\n", " ", ".", "~"]


def _strings(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choices(ALPHABET, k=rng.randint(0, 6))) for _ in range(n)]


def _runs(rng: random.Random, items: list[str]) -> list[list[str]]:
    runs, i = [], 0
    while i < len(items):
        k = rng.randint(1, 9)
        runs.append(items[i:i + k])
        i += k
    return runs


@pytest.fixture
def told() -> list[str]:
    return []


def _sort(runs: list[list[str]], told: list[str]) -> list[str]:
    with ExitStack() as stack:
        return list(extsort.external_sort(iter(runs), stack, lambda err, instead: told.append(f"{err}; {instead}")))


@pytest.mark.parametrize("seed", range(12))
def test_fuzz_the_sort_is_sorted_whatever_the_runs_fan_in_and_block(monkeypatch, told, seed):
    rng = random.Random(seed)
    items = _strings(rng, rng.randint(0, 400))  # duplicates and empty strings too
    monkeypatch.setattr(extsort, "MERGE_FAN_IN", rng.choice([2, 3, 4, 7, 64]))
    monkeypatch.setattr(extsort, "SPILL_BLOCK", rng.choice([1, 2, 5, 64, 16384]))
    assert _sort(_runs(rng, items), told) == sorted(items)
    assert told == []


@pytest.mark.parametrize(("runs", "fan_in"), [(10, 4), (16, 4), (17, 4), (100, 2), (245, 64), (64, 64)])
def test_no_more_runs_than_the_fan_in_are_read_at_once_and_records_are_rewritten_once_per_level(
        tmp_path, monkeypatch, told, runs, fan_in):
    """The temporary file's size tells how often records were written: a run's bytes once, and once more per merge
    a record went through before the last: no more than the levels a fan-in needs (two up to fan_in² runs)."""
    monkeypatch.setattr(extsort, "MERGE_FAN_IN", fan_in)
    counted = Counted(monkeypatch)
    items = [f"{i:05d}" for i in range(runs * 3)]
    random.Random(runs).shuffle(items)
    spill = tmp_path / "spill"
    monkeypatch.setattr(extsort.tempfile, "TemporaryFile", lambda *a, **k: open(spill, "w+b", buffering=0))
    assert _sort([items[i:i + 3] for i in range(0, len(items), 3)], told) == sorted(items)
    assert counted.peak <= fan_in, f"{counted.peak} runs read at once (fan-in {fan_in})"
    levels = next(n for n in range(1, 99) if fan_in ** n >= runs)
    once = len(items) * 6  # "01234/"
    again = spill.stat().st_size - once
    assert (again > 0) == (runs > fan_in) and again <= once * (levels - 1), (again, once, levels)
    assert told == []


@pytest.mark.parametrize("limit", [600 * 3 + 1, 600 * 3 + 700, 600 * 3 + 1799])
def test_a_disk_filling_while_runs_are_merged_merges_the_runs_left_at_once(tmp_path, monkeypatch, told, limit):
    """600 records of 2 bytes (+ "/") in 200 runs of 3: the runs fit; the disk fills inside a merge (after one
    byte of it, or later). The file is cut back to the runs before that merge, and those that
    are left are merged at once: the same strings, one line to the caller."""
    monkeypatch.setattr(extsort, "MERGE_FAN_IN", 4)
    items = [f"{i:02x}"[-2:] for i in range(600)]
    random.Random(0).shuffle(items)
    files: list[_FullAfter] = []

    def temporary_file(*a, **k):
        files.append(_FullAfter(tmp_path / f"spill{len(files)}", "w+b"))
        files[-1].limit = limit
        return files[-1]
    monkeypatch.setattr(extsort.tempfile, "TemporaryFile", temporary_file)
    assert _sort([items[i:i + 3] for i in range(0, 600, 3)], told) == sorted(items)
    assert len(told) == 1 and told[0].startswith("[Errno 28] No space left on device; merging its "), told
    assert files[0].closed


def test_no_temporary_file_sorts_in_memory(monkeypatch, told):
    def refused(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(extsort.tempfile, "TemporaryFile", refused)
    items = _strings(random.Random(1), 100)
    assert _sort(_runs(random.Random(2), items), told) == sorted(items)
    assert told == [f"[Errno 30] Read-only file system; {extsort.IN_MEMORY}"]


def test_an_error_reading_the_runs_while_merging_goes_out_as_it_is(tmp_path, monkeypatch, told):
    """Only a write that finds no room means "merge the runs left at once": an I/O error reading a run is raised."""
    monkeypatch.setattr(extsort, "MERGE_FAN_IN", 2)

    class Failing(io.FileIO):
        def read(self, size=-1):  # type: ignore[override]
            raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(extsort.tempfile, "TemporaryFile", lambda *a, **k: Failing(tmp_path / "spill", "w+b"))
    with pytest.raises(OSError, match="Input/output error"):
        _sort([["b", "a"], ["d", "c"], ["e"]], told)
    assert told == []


@pytest.mark.timeout(20)
def test_a_temporary_file_cut_short_raises_instead_of_reading_nothing_forever(tmp_path, monkeypatch, told):
    """A read that returns no bytes before a run's end (the file truncated under us) used to loop for ever."""
    monkeypatch.setattr(extsort, "MERGE_FAN_IN", 2)

    class CutShort(io.FileIO):
        def read(self, size=-1):  # type: ignore[override]
            return b""
    monkeypatch.setattr(extsort.tempfile, "TemporaryFile", lambda *a, **k: CutShort(tmp_path / "spill", "w+b"))
    with pytest.raises(OSError, match="cut short"):
        _sort([["b", "a"], ["d", "c"], ["e"]], told)
