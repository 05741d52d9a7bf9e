"""RowFile: a nameless, memory-mapped file that a checkpoint names by a hard link (or, where it cannot, a copy)."""
from __future__ import annotations

import errno
import mmap
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.errors import DistillError
from distill.utils import rowfile as rowfile_mod
from distill.utils.rowfile import RowFile
from distill.utils.state import load_state, save_state


def _filled(folder: Path, shape=(6, 4)) -> torch.Tensor:
    rows = RowFile.create(shape, np.float32, folder)
    rows[:] = torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(shape)
    return rows


def _fd(t: torch.Tensor) -> int:
    rows = RowFile.backing(t)
    assert rows is not None
    return rows._fd


def test_a_new_file_has_no_name_and_a_save_links_it(tmp_path: Path) -> None:
    rows = _filled(tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing to leave behind if the process dies
    RowFile.backing(rows).save_to(tmp_path / "a.bin")
    assert os.stat(tmp_path / "a.bin").st_ino == os.fstat(_fd(rows)).st_ino  # the same file: no byte copied
    np.testing.assert_array_equal(np.fromfile(tmp_path / "a.bin", np.float32).reshape(6, 4), rows.numpy())


def test_where_a_link_is_impossible_the_save_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _filled(tmp_path)

    def cross_device(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(rowfile_mod.os, "link", cross_device)
    monkeypatch.setattr(rowfile_mod, "COPY_CHUNK", 20)  # several reads, the last one short
    RowFile.backing(rows).save_to(tmp_path / "a.bin")
    assert os.stat(tmp_path / "a.bin").st_ino != os.fstat(_fd(rows)).st_ino
    np.testing.assert_array_equal(np.fromfile(tmp_path / "a.bin", np.float32).reshape(6, 4), rows.numpy())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]  # written aside and renamed: no temp file left


def test_without_o_tmpfile_the_file_is_unlinked_and_saved_by_copy(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(rowfile_mod.os, "O_TMPFILE")
    rows = _filled(tmp_path)
    assert list(tmp_path.iterdir()) == []
    RowFile.backing(rows).save_to(tmp_path / "a.bin")
    np.testing.assert_array_equal(np.fromfile(tmp_path / "a.bin", np.float32).reshape(6, 4), rows.numpy())


def test_a_saved_file_opens_read_only_and_copy_on_write(tmp_path: Path) -> None:
    RowFile.backing(_filled(tmp_path)).save_to(tmp_path / "a.bin")
    t = RowFile.open(tmp_path / "a.bin", (6, 4), np.float32)
    assert RowFile.backing(t) is not None
    t[0, 0] = 99.0  # private to this process
    assert np.fromfile(tmp_path / "a.bin", np.float32)[0] == 0.0
    # written since opened: no longer the file's bytes, so a state saves the written values, not the file
    assert RowFile.backing(t) is None
    save_state(tmp_path / "state", {"t": t})
    assert not list(tmp_path.glob("state.rows-*")) and load_state(tmp_path / "state")["t"][0, 0] == 99.0
    with pytest.raises(DistillError, match=re.escape(f"{tmp_path / 'a.bin'}: 96 bytes, expected 100")):
        RowFile.open(tmp_path / "a.bin", (5, 5), np.float32)
    with pytest.raises(DistillError, match="cannot read the saved per-sample targets"):
        RowFile.open(tmp_path / "missing.bin", (6, 4), np.float32)


def test_no_room_is_one_line_naming_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(f, nbytes):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rowfile_mod, "reserve", full)
    with pytest.raises(DistillError, match=rf"^{re.escape(str(tmp_path))}: cannot hold .* No space left on device"):
        RowFile.create((1000, 10), np.float32, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_state_with_a_rowfile_links_it_beside_the_tensors_and_reads_it_back(tmp_path: Path) -> None:
    """save_state puts a RowFile's tensor in a linked .bin, not in the safetensors file; load_state gives back a
    tensor over it that a later save links again, even after the first folder is gone."""
    rows = RowFile.create((2000, 16), np.float32, tmp_path)
    rows[:] = torch.from_numpy(np.random.default_rng(0).normal(size=(2000, 16)).astype(np.float32))
    state = {"strategy": {"targets.probs": rows, "targets.labels": torch.arange(2000)}, "epoch": 3}
    (tmp_path / "s1").mkdir()
    save_state(tmp_path / "s1" / "state", state)
    files = {f.name: f.stat().st_size for f in (tmp_path / "s1").iterdir()}
    assert files["state.rows-r0.bin"] == 2000 * 16 * 4
    assert files["state.safetensors"] < 2000 * 16 * 4 // 2  # the labels, not the [2000, 16] rows
    assert os.stat(tmp_path / "s1" / "state.rows-r0.bin").st_ino == os.fstat(_fd(rows)).st_ino

    loaded = load_state(tmp_path / "s1" / "state")
    probs = loaded["strategy"]["targets.probs"]
    assert torch.equal(probs, rows) and RowFile.backing(probs) is not None
    assert torch.equal(loaded["strategy"]["targets.labels"], torch.arange(2000)) and loaded["epoch"] == 3
    (tmp_path / "s2").mkdir()
    save_state(tmp_path / "s2" / "state", loaded)  # as the next step checkpoint of a resumed run
    for f in (tmp_path / "s1").iterdir():
        f.unlink()
    (tmp_path / "s1").rmdir()
    (tmp_path / "s3").mkdir()
    save_state(tmp_path / "s3" / "state", loaded)  # the folder it was read from is gone: still saved whole
    again = load_state(tmp_path / "s3" / "state")["strategy"]["targets.probs"]
    assert torch.equal(again, rows)


def test_a_slice_of_a_rowfile_is_saved_as_a_plain_tensor(tmp_path: Path) -> None:
    rows = _filled(tmp_path)
    file = RowFile.backing(rows)
    assert file is not None and RowFile.backing(rows[:3]) is None
    assert RowFile.backing(rows.detach()) is file and RowFile.backing(torch.zeros(6, 4)) is None
    save_state(tmp_path / "state", {"a": rows[:3]})
    assert not list(tmp_path.glob("*.bin"))
    assert torch.equal(load_state(tmp_path / "state")["a"], rows[:3])


def test_the_file_goes_with_its_last_tensor(tmp_path: Path) -> None:
    """No reference cycle: dropping the last tensor closes the descriptor at once (no garbage collection), so a
    replaced refresh's file frees its disk space when no checkpoint links it."""
    import gc

    gc.disable()
    try:
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(5):
            rows = _filled(tmp_path)
            del rows
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        gc.enable()


def _write_numpy(t: torch.Tensor) -> None:
    t.numpy()[2, 1] = 42.0  # bypasses torch's version counter


def _write_data(t: torch.Tensor) -> None:
    t.data[2, 1] = 42.0  # .data: another tensor over the same memory, with a version counter of its own


@pytest.mark.parametrize("pagemap", [True, False], ids=["pagemap", "compare"])
@pytest.mark.parametrize("write", [_write_numpy, _write_data], ids=["numpy", "data"])
def test_a_loaded_tensor_written_by_any_route_is_saved_with_its_own_bytes(tmp_path: Path, monkeypatch, write,
                                                                          pagemap) -> None:
    """A copy-on-write tensor written where torch's version counter does not see it (through .numpy() or .data):
    the next save holds the written value, not the file's older bytes (it linked the file before). Found from the
    process's page table (/proc/self/pagemap), or where that cannot tell, by comparing the bytes with the file."""
    if not pagemap:
        monkeypatch.setattr(rowfile_mod, "written", lambda address, nbytes: None, raising=False)
    RowFile.backing(_filled(tmp_path)).save_to(tmp_path / "a.bin")
    t = RowFile.open(tmp_path / "a.bin", (6, 4), np.float32)
    assert float(t.sum()) == sum(range(24))  # read, every page: still the file's
    assert RowFile.backing(t) is not None
    (tmp_path / "s1").mkdir()
    save_state(tmp_path / "s1" / "state", {"t": t})
    assert os.stat(tmp_path / "s1" / "state.rows-r0.bin").st_ino == os.stat(tmp_path / "a.bin").st_ino
    write(t)
    (tmp_path / "s2").mkdir()
    save_state(tmp_path / "s2" / "state", {"t": t})
    assert load_state(tmp_path / "s2" / "state")["t"][2, 1] == 42.0
    assert t._version == 0 and RowFile.backing(t) is None
    assert np.fromfile(tmp_path / "a.bin", np.float32)[9] == 9.0  # the file, and the first checkpoint, unchanged
    assert load_state(tmp_path / "s1" / "state")["t"][2, 1] == 9.0


def test_the_page_table_tells_a_written_page_from_a_read_one(tmp_path: Path) -> None:
    if not rowfile_mod._pagemap_works():
        pytest.skip("no /proc/self/pagemap that reports written pages here")
    shape = (mmap.PAGESIZE // 4, 4)  # 4 pages
    RowFile.backing(_filled(tmp_path, shape)).save_to(tmp_path / "a.bin")
    t = RowFile.open(tmp_path / "a.bin", shape, np.float32)
    float(t.sum())
    assert rowfile_mod.written(t.data_ptr(), t.numel() * 4) is False
    t.numpy()[-1, -1] = -1.0  # the last page only
    assert rowfile_mod.written(t.data_ptr(), t.numel() * 4) is True
    assert rowfile_mod.written(t.data_ptr(), t.numel() * 4 - mmap.PAGESIZE) is False
