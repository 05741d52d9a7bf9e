"""A tensorrt-flavour `distill qad` folder holds a build_engine.sh for the int8 file the no-harm rule picked (QA F3).
Before, only an export's script existed, and it built the export's own int8 file: QAD's file had no way to an
engine. The folder alone (copied to the device) builds ``model.int8.engine`` from that file on TensorRT 10 and 11
and checks it against ONNX Runtime on the same file."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distill.export.qad import qad
from distill.export.qad_config import QADConfig
from distill.export.tensorrt_script import BUILD_SCRIPT

from .test_tensorrt_script import _by_engine, _run

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.fixture(scope="module")
def trt_qad(run_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("q") / "qad"
    record = qad(QADConfig(checkpoint=str(run_ckpt), out_dir=str(out), flavour="tensorrt", epochs=1, calib_count=32,
                           eval_count=8))
    return out, record.ship_file


@pytest.mark.parametrize("banner, typed", [("[TensorRT v100300] [b17]", False), ("[TensorRT v11.0.0.1]", True)])
def test_the_qad_folder_alone_builds_and_checks_the_engine_of_the_file_the_rule_picked(
        trt_qad: tuple[Path, str], tmp_path: Path, banner: str, typed: bool) -> None:
    out, ship_file = trt_qad
    assert (out / BUILD_SCRIPT).is_file()
    device = Path(shutil.copytree(out, tmp_path / "on-device"))
    proc, trtexec, polygraphy = _run(device, tmp_path, banner)
    assert proc.returncode == 0, proc.stderr
    call = _by_engine(trtexec)["model.int8.engine"]
    assert f"--onnx={ship_file}" in call and ("--stronglyTyped" in call) == typed and ("--int8" in call) != typed
    assert f"model.int8.engine vs ONNX Runtime on {ship_file}: top-1 agreement" in proc.stdout
    assert "built 1 engine(s): model.int8.engine" in proc.stdout
