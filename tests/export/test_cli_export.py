"""`distill export` errors are one line, exit status 2, no traceback."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distill.cli import main


def _one_line_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_missing_checkpoint(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    err = _one_line_error(capsys, ["export", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert "nope" in err and "checkpoint not found" in err


def test_folder_that_is_not_a_checkpoint(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    err = _one_line_error(capsys, ["export", str(tmp_path), "--out", str(tmp_path / "o")])
    assert "student.json" in err


def test_unknown_precision(capsys: pytest.CaptureFixture, run_ckpt: Path, tmp_path: Path) -> None:
    err = _one_line_error(capsys, ["export", str(run_ckpt), "--out", str(tmp_path), "--precision", "fp32,int4"])
    assert "int4" in err and "fp32, fp16, int8" in err


def test_int8_without_data(capsys: pytest.CaptureFixture, run_ckpt: Path, tmp_path: Path) -> None:
    lone = tmp_path / "lone"  # a checkpoint outside any run: no config.yaml to take the data from
    shutil.copytree(run_ckpt, lone)
    err = _one_line_error(capsys, ["export", str(lone), "--out", str(tmp_path / "o"), "--precision", "int8"])
    assert "--data" in err


def test_unknown_domain(capsys: pytest.CaptureFixture, run_ckpt: Path, tiny_root: Path, tmp_path: Path) -> None:
    err = _one_line_error(capsys, ["export", str(run_ckpt), "--out", str(tmp_path), "--data", str(tiny_root),
                                   "--eval-domains", "clean,foggy", "--exporter", "torchscript"])
    assert "foggy" in err
