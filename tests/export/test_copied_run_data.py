"""A run copied from elsewhere names a data root that is not here: the export says so and names --data (QA H 14)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from distill.cli import main
from distill.errors import DistillError
from distill.export import ExportConfig
from distill.export.log import ExportLog
from distill.export.training_run import TrainingRun, with_run_defaults
from distill.records import RUN_CONFIG


def test_a_copied_runs_missing_data_root_names_it_and_the_data_flag(run_ckpt: Path, tmp_path: Path,
                                                                    capsys) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(run_ckpt.parent.parent, run_dir)
    gone = tmp_path / "elsewhere" / "data" / "digits"  # absolute, as a run started on another machine wrote it
    config = json.loads((run_dir / RUN_CONFIG).read_text())
    (run_dir / RUN_CONFIG).write_text(json.dumps({**config, "data": {**config["data"], "root": str(gone)}}))
    ckpt = run_dir / "checkpoints" / "best"
    with pytest.raises(DistillError, match="data_root=ROOT") as e:
        with_run_defaults(ExportConfig(precisions=("fp32", "int8")), TrainingRun.of_checkpoint(ckpt, ExportLog(lambda s: None)),
                          ExportLog(lambda s: None))
    assert str(e.value).startswith(f"{gone}: the run's data root")
    assert main(["export", str(ckpt), "--out", str(tmp_path / "exp"), "--exporter", "torchscript", "--precision",
                 "fp32,int8"]) == 1
    err = capsys.readouterr().err
    assert f"error: {gone}: the run's data root" in err and "pass --data ROOT" in err, err
    assert not (tmp_path / "exp" / "model.fp32.onnx").exists()


def test_an_fp32_only_export_of_a_copied_run_goes_on_without_data(run_ckpt: Path, tmp_path: Path, capsys) -> None:
    """No data is needed for fp32: the same checkpoint outside its run exports with parity on random-noise images.
    Until review 2 its run's missing data root refused it."""
    run_dir = tmp_path / "run"
    shutil.copytree(run_ckpt.parent.parent, run_dir)
    gone = tmp_path / "elsewhere" / "data"
    config = json.loads((run_dir / RUN_CONFIG).read_text())
    (run_dir / RUN_CONFIG).write_text(json.dumps({**config, "data": {**config["data"], "root": str(gone)}}))
    assert main(["export", str(run_dir / "checkpoints" / "best"), "--out", str(tmp_path / "exp"), "--precision",
                 "fp32", "--exporter", "torchscript", "--latency-iters", "1"]) == 0
    err = capsys.readouterr().err
    assert (f"warning: {gone}: the run's data root (data.root in {run_dir / RUN_CONFIG}) is not there: exporting "
            "without data; pass --data ROOT") in err, err
    assert "random-noise images" in err and (tmp_path / "exp" / "model.fp32.onnx").is_file()


def test_an_fp32_only_export_of_an_older_runs_missing_relative_root_goes_on_without_data(
        run_ckpt: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """Review 4 finding 6: an older run's relative data root found nowhere was refused for an fp32-only export
    too (the missing-path refusal ran before the fp32/fp16 warning); int8 is still refused."""
    run_dir = tmp_path / "run"
    shutil.copytree(run_ckpt.parent.parent, run_dir)
    config = json.loads((run_dir / RUN_CONFIG).read_text())
    (run_dir / RUN_CONFIG).write_text(json.dumps({**config, "data": {**config["data"], "root": "data/gone"}}))
    monkeypatch.chdir(tmp_path)
    ckpt = str(run_dir / "checkpoints" / "best")
    assert main(["export", ckpt, "--out", str(tmp_path / "exp"), "--precision", "fp32", "--exporter", "torchscript",
                 "--latency-iters", "1"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "data/gone" in err and "exporting without data; pass --data ROOT" in err, err
    assert (tmp_path / "exp" / "model.fp32.onnx").is_file()
    assert main(["export", ckpt, "--out", str(tmp_path / "exp8"), "--exporter", "torchscript", "--precision",
                 "fp32,int8"]) == 1
    assert "data/gone" in capsys.readouterr().err


@pytest.mark.parametrize("via", ["python", "command"])
def test_qad_against_a_copied_export_whose_data_root_is_gone_names_the_data_flag(run_ckpt: Path, export_dir: Path,
                                                                                 tmp_path: Path, capsys, via) -> None:
    """qad --export takes its data root from export.json: a copied export's missing root got 'dataset root not
    found (expected ROOT/DOMAIN/CLASS/image)' with no hint until review 2."""
    from distill.export.qad import qad
    from distill.export.qad_config import QADConfig
    from distill.records import EXPORT_REPORT

    exp = tmp_path / "exp"
    shutil.copytree(export_dir, exp)
    gone = tmp_path / "elsewhere" / "data"
    report = json.loads((exp / EXPORT_REPORT).read_text())
    (exp / EXPORT_REPORT).write_text(json.dumps({**report, "data": {**report["data"], "root": str(gone)}}))
    want = f"{gone}: the export's data root (data.root in {exp / EXPORT_REPORT}) is not there: pass "
    if via == "python":
        with pytest.raises(DistillError, match="data_root=ROOT, the dataset's folder here") as e:
            qad(QADConfig(checkpoint=str(run_ckpt), out_dir=str(tmp_path / "q"), export_dir=str(exp), epochs=1,
                          eval_count=4, flavour="ort-cpu"), log=lambda s: None)
        assert str(e.value).startswith(want), e.value
    else:
        assert main(["qad", str(run_ckpt), "--out", str(tmp_path / "q"), "--export", str(exp), "--epochs", "1",
                     "--flavour", "ort-cpu"]) == 1
        err = capsys.readouterr().err
        assert f"error: {want}--data ROOT" in err, err
