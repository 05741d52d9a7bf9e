"""Appends to one bench file: two processes at once, and the read-back of a huge last line without its newline.

Two ``distill bench`` or edge runners (or ``BenchRecord.append_to``) appending to one ``.jsonl`` at once each looked
at the file's last line (``end_last_line``) and then wrote, with nothing between them: both could find the same
cut-off line and both end it (a blank line, the warning twice), or one could read another's record half written
and call it cut off. Appends now take turns on an advisory lock held around both (POSIX).

The last line's read-back glued each 64 KiB block before the tail and searched the whole tail again per block
(quadratic on a 32 MB line) and read a line of any length whole: now each block is read and searched once, and no
more than ``LONGEST_LINE`` (1 MiB) and a block is read (a longer line is not checked: no record is near that long).
"""
from __future__ import annotations

import errno
import io
import json
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import distill.bench.edge_runner as edge_runner
from distill.records import BenchRecord
from tests.report.test_engine_join import engine_record

N = 15  # records per process
PAD = 200_000  # bytes of padding in each bench runner's record: the write of one takes a while


def _append(path: str, who: str, start: Any) -> None:
    """One process: ``N`` records, as the edge runner (``write_jsonl``) or ``BenchRecord.append_to`` writes them.
    Where the file's last line has no newline, it waits a little after reading it: both processes then read it
    before either ends it, unless appends take turns."""
    read = edge_runner._unended_last_line

    def slow_read(p: Path) -> bytes | None:
        tail = read(p)
        if tail is not None:
            time.sleep(0.2)
        return tail
    edge_runner._unended_last_line = slow_read  # type: ignore[assignment]
    start.wait()
    for i in range(N):
        if who == "runner":
            edge_runner.write_jsonl([{"who": who, "i": i, "pad": "x" * PAD}], path)
        else:
            engine_record(f"/dev/{who}/{i}.engine").append_to(path)


@pytest.mark.skipif(sys.platform == "win32", reason="no lock on Windows (edge_runner.appending)")
def test_two_processes_appending_at_once_leave_whole_lines_and_one_warning(tmp_path: Path, capfd) -> None:
    path = tmp_path / "bench.jsonl"
    path.write_bytes(b'{"schema": "distill.bench/1", "mod')  # a record cut off by kill -9
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_append, args=(str(path), who, start)) for who in ("runner", "record")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    lines = path.read_bytes().split(b"\n")
    assert lines[0] == b'{"schema": "distill.bench/1", "mod' and lines[-1] == b""
    parsed = [json.loads(line) for line in lines[1:-1]]  # every other line whole (no blank one, none glued)
    assert sorted(r["i"] for r in parsed if r.get("who") == "runner") == list(range(N))
    assert sorted(r["model"] for r in parsed if "who" not in r) == sorted(f"/dev/record/{i}.engine" for i in range(N))
    assert capfd.readouterr().err.count("last line is cut off") == 1


class _CountingFile:
    """A file read back by ``_unended_last_line``: where (offset, length) each read was."""

    def __init__(self, f: Any, reads: list[tuple[int, int]]) -> None:
        self.f, self.reads = f, reads

    def __enter__(self) -> _CountingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()

    def seek(self, *args: int) -> int:
        return self.f.seek(*args)

    def read(self, n: int = -1) -> bytes:
        at = self.f.tell()
        data = self.f.read(n)
        self.reads.append((at, len(data)))
        return data


def _counted(monkeypatch) -> list[tuple[int, int]]:
    reads: list[tuple[int, int]] = []
    monkeypatch.setattr(edge_runner, "open", lambda *a, **k: _CountingFile(open(*a, **k), reads), raising=False)
    return reads


def _each_byte_once(reads: list[tuple[int, int]]) -> bool:
    spans = sorted(reads)
    return all(a + n <= b for (a, n), (b, _) in zip(spans, spans[1:]))


def test_a_huge_cut_off_last_line_is_read_back_only_in_part_and_each_byte_once(tmp_path: Path, monkeypatch,
                                                                             capsys) -> None:
    path = tmp_path / "bench.jsonl"
    engine_record("/dev/a/model.int8.engine").append_to(path)
    with open(path, "ab") as f:
        f.write(b'{"schema": "distill.bench/1", "pad": "' + b"x" * (3 << 20))  # 3 MiB, cut off
    reads = _counted(monkeypatch)
    tail = edge_runner._unended_last_line(path)
    assert tail is not None and tail.endswith(b"xxx") and len(tail) > 1 << 20
    read = sum(n for _, n in reads)
    assert read <= (1 << 20) + 65536 and _each_byte_once(reads), (read, len(reads))
    monkeypatch.undo()
    capsys.readouterr()
    engine_record("/dev/b/model.int8.engine").append_to(path)
    assert capsys.readouterr().err.count("its last line (over 1 MiB, not checked) has no newline") == 1
    skipped: list[tuple[int, str]] = []
    assert [r.model for r in BenchRecord.read_lines(path, skipped)] == ["/dev/a/model.int8.engine",
                                                                       "/dev/b/model.int8.engine"]
    assert [n for n, _ in skipped] == [2]


def test_a_whole_record_over_several_blocks_without_its_newline_is_read_once_and_kept(tmp_path: Path, monkeypatch,
                                                                                     capsys) -> None:
    path = tmp_path / "bench.jsonl"
    engine_record("/dev/a/model.int8.engine").append_to(path)
    big = {**engine_record("/dev/b/model.int8.engine").to_dict(), "model_meta": {"note": "y" * 300_000}}
    with open(path, "ab") as f:
        f.write(json.dumps(big).encode())  # a whole record (5 blocks) without its newline
    reads = _counted(monkeypatch)
    assert edge_runner._unended_last_line(path) == json.dumps(big).encode()
    assert _each_byte_once(reads) and sum(n for _, n in reads) == path.stat().st_size  # the small file: once
    monkeypatch.undo()
    capsys.readouterr()
    engine_record("/dev/c/model.int8.engine").append_to(path)
    assert capsys.readouterr().err == ""
    assert [r.model for r in BenchRecord.read_lines(path)] == [f"/dev/{x}/model.int8.engine" for x in "abc"]


def test_a_file_system_without_locks_still_gets_the_records(tmp_path: Path, monkeypatch) -> None:
    """flock on an NFS mount without a lock service fails (ENOLCK): the append goes on without the lock."""
    class NoLocks:
        LOCK_EX = 2

        @staticmethod
        def flock(fd: int, op: int) -> None:
            raise OSError(37, "No locks available")
    monkeypatch.setattr(edge_runner, "_fcntl", NoLocks)
    path = tmp_path / "bench.jsonl"
    edge_runner.write_jsonl([{"i": 0}, {"i": 1}], path)
    assert path.read_text() == '{"i": 0}\n{"i": 1}\n'


def test_appending_without_the_lock_says_so_once_per_file(tmp_path: Path, monkeypatch, capsys) -> None:
    """Review 1 (L7): the unlocked append was silent; now one warning line per process and file names it."""
    class NoLocks:
        LOCK_EX = 2

        @staticmethod
        def flock(fd: int, op: int) -> None:
            raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(edge_runner, "_fcntl", NoLocks)
    monkeypatch.setattr(edge_runner, "_UNLOCKED", set(), raising=False)
    paths = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for path in [*paths, *paths]:
        edge_runner.write_jsonl([{"i": 0}], path)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert [w.split(": ")[1] for w in warnings] == [str(p) for p in paths], warnings
    assert all("cannot lock it (No locks available" in w and "appending without the lock" in w for w in warnings)
    assert all(p.read_text() == '{"i": 0}\n{"i": 0}\n' for p in paths)


def test_a_write_that_takes_nothing_is_an_error_not_a_loop(tmp_path: Path, monkeypatch) -> None:
    """Review 1 (L6): a raw write returning 0 (or None) was tried again forever, holding the lock; now it raises
    ENOSPC. The fake file gives up after 100 writes so that the old loop fails the test instead of hanging it."""
    writes: list[int] = []

    class TakesNothing(io.FileIO):
        def write(self, b: Any) -> int:
            writes.append(len(b))
            if len(writes) > 100:
                raise RuntimeError("still writing after 100 writes that took nothing")
            return 0

    real_open = open
    monkeypatch.setattr(edge_runner, "open", lambda p, mode="r", *a, **k: TakesNothing(p, mode) if mode == "ab"
                        else real_open(p, mode, *a, **k), raising=False)
    path = tmp_path / "bench.jsonl"
    with pytest.raises(OSError, match="took no more bytes") as caught:
        edge_runner.write_jsonl([{"i": 0}], path)
    assert caught.value.errno == errno.ENOSPC and str(path) in str(caught.value)
    assert writes == [len('{"i": 0}\n')]  # one try


def test_a_whole_record_over_1_mib_without_its_newline_is_not_called_cut_off(tmp_path: Path, capsys) -> None:
    """Review 1 (L8): such a line is not read whole, so the warning cannot say it is cut off, and readers keep it: the
    warning said "cut off ... readers skip the cut-off one"."""
    path = tmp_path / "bench.jsonl"
    big = {**engine_record("/dev/a/model.int8.engine").to_dict(), "model_meta": {"note": "y" * (2 << 20)}}
    path.write_bytes(json.dumps(big).encode())  # a whole record of 2 MiB, without its newline
    engine_record("/dev/b/model.int8.engine").append_to(path)
    err = capsys.readouterr().err
    assert "cut off" not in err and "skip the" not in err, err
    assert err.count(f"warning: {path}: its last line (over 1 MiB, not checked) has no newline at the end; "
                     "appending on a new line (readers keep it if it is whole JSON") == 1, err
    assert [r.model for r in BenchRecord.read_lines(path)] == ["/dev/a/model.int8.engine", "/dev/b/model.int8.engine"]
