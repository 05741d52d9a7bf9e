"""`distill qad` interrupted (Ctrl-C) or failing after it made a new --out folder (QA F6): it left an empty folder.
A folder it made and left empty is removed, by the stage itself (distill.export.qad.qad), so the CLI and the Python
API (`distill.api.qad`) alike; a folder that was there before, or one holding files, is kept."""
from __future__ import annotations

from pathlib import Path

import pytest

import distill.export.qad as qad_module
from distill import api
from distill.cli import main
from distill.errors import DistillError


def _raises(error: BaseException):
    def fake(*args, **kwargs):  # the fp32 ONNX export: after --out was made, inside QAD's work folder
        raise error
    return fake


@pytest.mark.parametrize("error", [KeyboardInterrupt(), DistillError("bad data")])
def test_the_api_removes_a_new_out_folder_left_empty(run_ckpt: Path, tmp_path: Path, monkeypatch,
                                                     error: BaseException) -> None:
    monkeypatch.setattr(qad_module, "export_onnx", _raises(error))
    out = tmp_path / "qad"
    with pytest.raises(type(error)):
        api.qad(checkpoint=str(run_ckpt), out_dir=str(out), epochs=1, calib_count=16, eval_count=4)
    assert not out.exists()


def test_the_cli_removes_a_new_out_folder_left_empty(run_ckpt: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(qad_module, "export_onnx", _raises(KeyboardInterrupt()))
    out = tmp_path / "qad"
    assert main(["qad", str(run_ckpt), "--out", str(out), "--epochs", "1", "--calib-count", "16",
                 "--eval-count", "4"]) != 0
    assert not out.exists()


@pytest.mark.parametrize("holds_a_file", [False, True])
def test_a_folder_that_was_there_stays(run_ckpt: Path, tmp_path: Path, monkeypatch, holds_a_file: bool) -> None:
    monkeypatch.setattr(qad_module, "export_onnx", _raises(KeyboardInterrupt()))
    out = tmp_path / "qad"
    out.mkdir()
    if holds_a_file:
        (out / "notes.txt").write_text("mine")
    with pytest.raises(KeyboardInterrupt):
        api.qad(checkpoint=str(run_ckpt), out_dir=str(out), epochs=1, calib_count=16, eval_count=4)
    assert out.is_dir() and [p.name for p in out.iterdir()] == (["notes.txt"] if holds_a_file else [])


def test_every_folder_level_it_made_and_left_empty_is_removed(run_ckpt: Path, tmp_path: Path, monkeypatch) -> None:
    """Review 2 L3: ``--out new/a/b`` (made with its parents) left ``new/a`` behind; only ``b`` was removed."""
    monkeypatch.setattr(qad_module, "export_onnx", _raises(KeyboardInterrupt()))
    (tmp_path / "there").mkdir()
    with pytest.raises(KeyboardInterrupt):
        api.qad(checkpoint=str(run_ckpt), out_dir=str(tmp_path / "there" / "new" / "a" / "b"), epochs=1,
                calib_count=16, eval_count=4)
    assert [p.name for p in tmp_path.iterdir()] == ["there"] and not any((tmp_path / "there").iterdir())


def test_only_the_levels_it_made_and_left_empty_go(tmp_path: Path) -> None:
    from distill.utils.io import removed_if_left_empty

    with pytest.raises(DistillError), removed_if_left_empty(tmp_path / "new" / "a" / "b") as out:
        out.mkdir(parents=True)
        (tmp_path / "new" / "kept.txt").write_text("written by the stage")  # a level it made, holding a file
        raise DistillError("bad data")
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["new", "new/kept.txt"]
