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
        with_run_defaults(ExportConfig(), TrainingRun.of_checkpoint(ckpt, ExportLog(lambda s: None)),
                          ExportLog(lambda s: None))
    assert str(e.value).startswith(f"{gone}: the run's data root")
    assert main(["export", str(ckpt), "--out", str(tmp_path / "exp"), "--exporter", "torchscript"]) == 1
    err = capsys.readouterr().err
    assert f"error: {gone}: the run's data root" in err and "pass --data ROOT" in err, err
    assert not (tmp_path / "exp" / "model.fp32.onnx").exists()
