"""`--trt-workspace-mib` on `distill export` and `distill qad` (issue 21 "Edge"): the TensorRT builder workspace of
build_engine.sh was settable from the Python API only (ExportConfig / QADConfig ``trt_workspace_mib``); from the
command line every script built with 1024 MiB. The flag sets it; a value that is not a positive integer is one line
naming the flag and the value, and nothing is written."""
from __future__ import annotations

from pathlib import Path

import pytest

from distill.cli import main
from distill.export.tensorrt_script import BUILD_SCRIPT
from distill.records import ExportReport


def _workspaces(script: Path) -> set[str]:
    """The ``--memPoolSize=workspace:N`` values the script passes to trtexec."""
    return {word.split("workspace:")[1].strip("\"'") for word in script.read_text().split()
            if "--memPoolSize=workspace:" in word}


def test_distill_export_writes_the_workspace_into_build_engine_sh(run_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    assert main(["export", str(run_ckpt), "--out", str(out), "--precision", "fp32", "--exporter", "torchscript",
                 "--no-build-engine", "--eval-count", "4", "--trt-workspace-mib", "512"]) == 0
    assert _workspaces(out / BUILD_SCRIPT) == {"512"}
    assert ExportReport.read(out).config["trt_workspace_mib"] == 512  # what distill qad --export takes over


def test_distill_export_keeps_1024_mib_by_default(run_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    assert main(["export", str(run_ckpt), "--out", str(out), "--precision", "fp32", "--exporter", "torchscript",
                 "--no-build-engine", "--eval-count", "4"]) == 0
    assert _workspaces(out / BUILD_SCRIPT) == {"1024"}


@pytest.mark.parametrize("command", ["export", "qad"])
@pytest.mark.parametrize("value, problem", [("0", "greater than or equal to 1"), ("-5", "greater than or equal to 1"),
                                            ("1.5", "valid integer"), ("lots", "valid integer")])
def test_a_bad_workspace_is_one_line_naming_the_flag_and_value(
        capsys: pytest.CaptureFixture, run_ckpt: Path, tmp_path: Path, command: str, value: str, problem: str) -> None:
    out = tmp_path / "o"
    assert main([command, str(run_ckpt), "--out", str(out), f"--trt-workspace-mib={value}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: --trt-workspace-mib: ") and problem in err[0] and repr(value) in err[0], err
    assert not out.exists()
