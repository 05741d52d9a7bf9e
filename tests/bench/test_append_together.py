"""Appends to one bench file by two processes at once.

Two ``distill bench`` or edge runners (or ``BenchRecord.append_to``) appending to one ``.jsonl`` at once each looked
at the file's last line (``end_last_line``) and then wrote, with nothing between them: both could find the same
cut-off line and both end it (a blank line, the warning twice), or one could read another's record half written
and call it cut off. Appends now take turns on an advisory lock held around both (POSIX).
"""
from __future__ import annotations

import json
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import distill.bench.edge_runner as edge_runner
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
