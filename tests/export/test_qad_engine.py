"""A tensorrt-flavour `distill qad` folder holds a build_engine.sh for the int8 file the no-harm rule picked (QA F3).
Before, only an export's script existed, and it built the export's own int8 file: QAD's file had no way to an
engine. The folder alone (copied to the device) builds ``model.int8-qad.engine`` from that file on TensorRT 10 and 11
and checks it against ONNX Runtime on the same file. The engine is not named as the export's ``model.int8.engine``
(a qad folder often sits in its export), and qad.json records it, so that the report can join its bench records
(review 2 M3)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from distill.export.qad import qad
from distill.export.qad_config import QADConfig, QADRecord
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
    call = _by_engine(trtexec)["model.int8-qad.engine"]
    assert f"--onnx={ship_file}" in call and "--stronglyTyped" not in call and ("--int8" in call) != typed
    assert f"model.int8-qad.engine vs ONNX Runtime on {ship_file}: top-1 agreement" in proc.stdout
    assert "built 1 engine(s): model.int8-qad.engine" in proc.stdout
    # polygraphy ran four batches of 8 of the 32 check images: trtexec runs the profile's min and max (1, 32)
    assert "model.int8-qad.engine: ran at batch 1, 32 (trtexec --loadEngine, one inference each)" in proc.stdout
    assert (device / "model.int8-qad.engine").is_file() and not (device / "model.int8.engine").exists()


def test_qad_json_records_the_engine_and_the_script_that_builds_it(trt_qad: tuple[Path, str]) -> None:
    from tests.records.old_release import OldQADRecord

    out, ship_file = trt_qad
    record = QADRecord.read(out)
    assert record.tensorrt is not None and record.tensorrt.build_script == BUILD_SCRIPT
    assert [(e.engine, e.onnx, e.precision) for e in record.tensorrt.engines] == [
        ("model.int8-qad.engine", ship_file, "int8")]
    assert (record.tensorrt.batches, record.tensorrt.workspace_mib) == ([1, 8, 32], 1024)
    assert "tensorrt" not in record.qad_config  # this record's key, not a QADConfig setting
    QADConfig.model_validate(record.qad_config)
    OldQADRecord.model_validate_json((out / "qad.json").read_text())  # the release before reads the file


def test_the_qad_script_builds_for_the_exports_batch_profile_and_workspace(run_ckpt: Path, tiny_root: Path, tmp_path: Path) -> None:
    """QAD from an export (--export) exported with --trt-batches 2,4,16: QAD's build_engine.sh used the default
    profile 1/8/32, so QAD's engine served other batches than the export's. It takes the export's; --trt-batches
    (QADConfig.trt_batches) sets another. So for the builder's workspace (ExportConfig.trt_workspace_mib: 512 here;
    QAD's script used the default 1024 MiB)."""
    import distill.export.qad as qad_module
    from distill.export import ExportConfig, export_checkpoint
    from distill.export.engine_check import IMAGES_FILE
    from distill.export.kept_float import export_int8
    from distill.export.log import ExportLog
    from distill.export.quantize import FLAVOURS
    from distill.export.training_run import TrainingRun

    export = tmp_path / "exp"
    export_checkpoint(run_ckpt, export, ExportConfig(
        precisions=("fp32", "int8"), data_root=str(tiny_root), int8_flavour="tensorrt", calib_count=32,
        eval_count=8, max_drop=100.0, latency_iters=1, threads=1, trt_batches=(2, 4, 16), trt_workspace_mib=512),
        log=lambda s: None)
    lines: list[str] = []
    qad(QADConfig(checkpoint=str(run_ckpt), out_dir=str(tmp_path / "qad"), flavour="tensorrt", epochs=1,
                  eval_count=8, export_dir=str(export)), log=lines.append)
    script = (tmp_path / "qad" / BUILD_SCRIPT).read_text()
    assert "batch min/opt/max = 2/4/16" in script
    assert "--memPoolSize=workspace:512" in script and "workspace:1024" not in script
    assert QADRecord.read(tmp_path / "qad").tensorrt.workspace_mib == 512
    assert any("profile batches 2/4/16" in line for line in lines), lines
    with np.load(tmp_path / "qad" / IMAGES_FILE) as check:  # the engine check runs the profile's batches too
        assert (int(check["min_batch"]), int(check["batch"])) == (2, 4)

    say = ExportLog(lambda s: None)
    run, exported = TrainingRun.of_checkpoint(run_ckpt, say), export_int8(export, run_ckpt, FLAVOURS["tensorrt"])
    told = QADConfig(checkpoint=str(run_ckpt), out_dir="unused", flavour="tensorrt", export_dir=str(export),
                     trt_batches="1,1,4", trt_workspace_mib=2048)
    set_here = qad_module.export_config(told, run, say, exported)
    assert (set_here.trt_batches, set_here.trt_workspace_mib) == ((1, 1, 4), 2048)
    alone = qad_module.export_config(QADConfig(checkpoint=str(run_ckpt), out_dir="unused", flavour="tensorrt"), run, say)
    assert (alone.trt_batches, alone.trt_workspace_mib) == ((1, 8, 32), 1024)


def test_a_bad_trt_batches_is_one_line_naming_the_flag(run_ckpt: Path, tmp_path: Path, capsys) -> None:
    from distill.cli import main

    assert main(["qad", str(run_ckpt), "--out", str(tmp_path / "q"), "--flavour", "tensorrt",
                 "--trt-batches", "8,4,2"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--trt-batches" in err[0] and "min <= opt <= max" in err[0], err
    assert not (tmp_path / "q").exists()
