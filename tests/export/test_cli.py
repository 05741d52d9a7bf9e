"""`distill export` (distill/cli/export.py): one-line errors with exit status 1; one printed line per file."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distill.cli import main
from distill.records import ExportReport


def _one_line_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 1, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_missing_checkpoint(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    err = _one_line_error(capsys, ["export", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert "nope" in err and "checkpoint not found" in err


def test_folder_that_is_not_a_checkpoint(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    err = _one_line_error(capsys, ["export", str(tmp_path), "--out", str(tmp_path / "o")])
    assert "student.json" in err


def test_a_run_folder_is_pointed_to_its_best_checkpoint(capsys: pytest.CaptureFixture, run_ckpt: Path,
                                                        tmp_path: Path) -> None:
    """`distill export RUN_DIR` (the run folder, not RUN_DIR/checkpoints/best): the error names the folder to pass."""
    run_dir = run_ckpt.parent.parent
    err = _one_line_error(capsys, ["export", str(run_dir), "--out", str(tmp_path / "o")])
    assert err.startswith(f"error: {run_dir}: not a student checkpoint (no student.json)")
    assert err.endswith(f"pass {run_ckpt}"), err
    assert not (tmp_path / "o").exists()


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


def test_prints_one_line_per_file_with_its_mean_accuracy(capsys: pytest.CaptureFixture, run_ckpt: Path,
                                                        tiny_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    # `--out exp/`: the line names exp/model.fp32.onnx, not exp//model.fp32.onnx (as `distill qad` since fix-B)
    rc = main(["export", str(run_ckpt), "--out", f"{out}/", "--data", str(tiny_root), "--eval-count", "4",
               "--exporter", "torchscript", "--no-build-engine"])
    assert rc == 0
    fp32 = ExportReport.read(out).models[0]
    assert 0.0 <= fp32.mean_accuracy <= 1.0  # a fraction in export.json, a percent when printed
    printed = capsys.readouterr()
    assert printed.out == (f"{out}/model.fp32.onnx: fp32, mean accuracy {100 * fp32.mean_accuracy:.2f}%\n"
                           "recommendation: ship fp32 — no int8 exported\n")  # last: what to ship
    assert "recommendation" not in printed.err  # once, with the results: it was also a progress line on stderr


def test_the_float_output_candidates_are_switched_on_from_the_command_line() -> None:
    """``--fallback-outputs``: ExportConfig.fallback_outputs on (the fallback ranks float-output variants too); off by
    default."""
    import argparse

    from distill.cli.export import config_options, register
    from distill.export.config import ExportConfig

    sub = argparse.ArgumentParser().add_subparsers()
    register(sub)
    parser = sub.choices["export"]
    off = config_options(parser.parse_args(["ckpt", "--out", "o"]))
    on = config_options(parser.parse_args(["ckpt", "--out", "o", "--fallback-outputs"]))
    assert ExportConfig.from_options(on).fallback_outputs and not ExportConfig.from_options(off).fallback_outputs


def test_out_naming_a_file(capsys: pytest.CaptureFixture, run_ckpt: Path, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("kept")
    err = _one_line_error(capsys, ["export", str(run_ckpt), "--out", str(afile), "--exporter", "torchscript"])
    assert str(afile) in err and "is a file" in err
    assert afile.read_text() == "kept"


def test_a_refused_export_leaves_no_folder_it_made(capsys: pytest.CaptureFixture, run_ckpt: Path, tiny_root: Path,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "new" / "o"  # neither exists: both are the export's to make, and to take back
    err = _one_line_error(capsys, ["export", str(run_ckpt), "--out", str(out), "--data", str(tiny_root),
                                   "--eval-domains", "clean,foggy", "--exporter", "torchscript"])
    assert "foggy" in err
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_says_that_a_rerun_starts_over(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    """An export does not resume (it rewrites every file), unlike a cache build or a training run."""
    import distill.export

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(distill.export, "export_checkpoint", interrupted)
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "o")]) == 130
    err = capsys.readouterr().err.strip()
    assert err == "interrupted: the export did not finish; rerun the same command to export again from the start"
