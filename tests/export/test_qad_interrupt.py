"""`distill qad` interrupted (Ctrl-C) or failing after it made a new --out folder (QA F6): it left an empty folder.
A folder it made and left empty is removed; a folder that was there before, or one holding files, is kept."""
from __future__ import annotations

from pathlib import Path

import pytest

import distill.export.qad as qad_module
from distill.cli import main
from distill.errors import DistillError


def _makes_then_raises(error: BaseException):
    def fake(cfg, log=None):
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
        raise error
    return fake


@pytest.mark.parametrize("error", [KeyboardInterrupt(), DistillError("bad data")])
def test_a_new_out_folder_left_empty_is_removed(tmp_path: Path, monkeypatch, error: BaseException) -> None:
    monkeypatch.setattr(qad_module, "qad", _makes_then_raises(error))
    out = tmp_path / "qad"
    assert main(["qad", str(tmp_path / "ckpt"), "--out", str(out)]) != 0
    assert not out.exists()


def test_a_folder_that_was_there_stays(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(qad_module, "qad", _makes_then_raises(KeyboardInterrupt()))
    out = tmp_path / "qad"
    out.mkdir()
    assert main(["qad", str(tmp_path / "ckpt"), "--out", str(out)]) != 0
    assert out.is_dir()
