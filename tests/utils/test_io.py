"""distill.utils.io: files hashed in parallel, in order, with the sequential digests; JSON read with one-line errors."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from distill.errors import DistillError
from distill.utils import io
from distill.utils.io import read_json, removed_if_left_empty, sha256_file, sha256_files


def test_parallel_hashes_are_the_sequential_ones_in_order(tmp_path):
    paths = []
    for k in range(37):
        p = tmp_path / f"{k}.bin"
        p.write_bytes(bytes([k]) * (k * 997 + 1))
        paths.append(p)
    assert list(sha256_files(paths, threads=4, chunk=5)) == [sha256_file(p) for p in paths]
    assert list(sha256_files([], threads=2)) == []


def test_files_are_hashed_at_the_same_time(tmp_path, monkeypatch):
    """Two hashes must be in flight together to pass the barrier: a sequential loop times out."""
    both = threading.Barrier(2, timeout=10)

    def hash_waiting(path):
        both.wait()
        return str(path)

    monkeypatch.setattr(io, "sha256_file", hash_waiting)
    try:
        assert list(sha256_files(["a", "b"], threads=2)) == ["a", "b"]
    except threading.BrokenBarrierError:
        pytest.fail("the files were hashed one after another")


def test_a_binary_json_file_is_one_line_naming_it(tmp_path):
    """Review 25 M1: undecodable bytes were a UnicodeDecodeError (not a DistillError): a traceback from the CLI."""
    path = tmp_path / "export.json"
    path.write_bytes(b'{"format": "\xff\xfe\x00')
    with pytest.raises(DistillError) as e:
        read_json(path)
    assert str(e.value) == f"{path}: not UTF-8 text (byte 12: b'\\xff')"


def test_an_interrupted_stage_removes_the_levels_of_an_out_with_dotdot(tmp_path: Path, monkeypatch) -> None:
    """Review 3 L2: ``new/a/../b`` makes new, new/a and new/b; an interrupted stage leaves none of them."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with removed_if_left_empty("new/a/../b") as p:
            os.makedirs(p)
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
