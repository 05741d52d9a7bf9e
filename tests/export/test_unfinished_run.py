"""A checkpoint of an unfinished (interrupted) run (QA G F5): export and qad warn in one line that it is the run's
best checkpoint so far, how far the run got and the command that finishes it; the report says the same of a run it
cannot report yet."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from distill.errors import DistillError
from distill.export import ExportConfig, export_checkpoint
from distill.export.log import ExportLog
from distill.export.training_run import TrainingRun
from distill.records import RUN_CONFIG, RUN_FINISHED, RUN_METRICS, RUN_SUMMARY
from distill.report.write import write_report
from tests.report.conftest import write_run

LINE = ("runs/int2 is unfinished (epoch 2 of 40, no summary.json): this is its best checkpoint so far; resume with "
        "distill train --resume runs/int2")


def _interrupted(run_ckpt: Path, where: Path, **config: object) -> Path:
    """``where/runs/int2``: run_ckpt's run as a run stopped after epoch 2 of 40 leaves it (no summary.json)."""
    run = where / "runs" / "int2"
    shutil.copytree(run_ckpt.parent.parent, run)
    for name in (RUN_SUMMARY, RUN_FINISHED):
        (run / name).unlink(missing_ok=True)
    saved = json.loads((run / RUN_CONFIG).read_text())
    (run / RUN_CONFIG).write_text(json.dumps({**saved, "optim": {"epochs": 40}, **config}))
    (run / RUN_METRICS).write_text("epoch,step,loss\n1,10,1.0\n2,20,0.5\n")
    return run


def test_an_interrupted_runs_checkpoint_is_one_warning_line_naming_the_resume(run_ckpt, tmp_path, monkeypatch):
    _interrupted(run_ckpt, tmp_path)
    monkeypatch.chdir(tmp_path)
    log = ExportLog(lambda line: None)
    TrainingRun.of_checkpoint(Path("runs/int2/checkpoints/best"), log)
    assert log.warnings == [LINE]
    finished = ExportLog(lambda line: None)
    TrainingRun.of_checkpoint(run_ckpt, finished)
    assert finished.warnings == []


def test_an_adaptation_run_is_resumed_with_distill_adapt(run_ckpt, tmp_path, monkeypatch):
    _interrupted(run_ckpt, tmp_path, source_checkpoint=str(run_ckpt))
    monkeypatch.chdir(tmp_path)
    log = ExportLog(lambda line: None)
    TrainingRun.of_checkpoint(Path("runs/int2/checkpoints/best"), log)
    assert log.warnings == [LINE.replace("distill train", "distill adapt")]


def test_the_export_of_it_says_so_and_records_it(run_ckpt, tmp_path, monkeypatch):
    _interrupted(run_ckpt, tmp_path)
    monkeypatch.chdir(tmp_path)
    said: list[str] = []
    report = export_checkpoint(Path("runs/int2/checkpoints/best"), Path("exp/int2"),
                               ExportConfig(exporter="torchscript", eval_count=4), log=said.append)
    assert f"warning: {LINE}" in said and LINE in report.warnings and report.run_summary is None


def test_a_report_of_it_alone_says_how_to_finish_it(run_ckpt, tmp_path, monkeypatch):
    _interrupted(run_ckpt, tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DistillError) as e:
        write_report(["runs/int2"], "report.html")
    assert str(e.value).endswith("; runs/int2 is an unfinished run (epoch 2 of 40, no summary.json yet): finish it "
                                 "with distill train --resume runs/int2, then report it")
    write_run(tmp_path / "runs" / "done", strategy="kd", acc={"clean": 0.9, "dark": 0.8, "noisy": 0.5}, seed=0)
    written = write_report(["runs"], "report.html")
    assert written.runs == 1 and ("runs/int2 is an unfinished run (epoch 2 of 40, no summary.json yet) (left out of "
                                  "the report): finish it with distill train --resume runs/int2, then report it"
                                  ) in written.warnings


def test_distill_qad_of_it_warns_too(run_ckpt, tmp_path, monkeypatch, capsys):
    from distill.cli import main

    _interrupted(run_ckpt, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["qad", "runs/int2/checkpoints/best", "--out", "qad/int2", "--epochs", "1", "--calib-count", "16",
                 "--eval-count", "4", "--quiet"]) == 0
    assert f"warning: {LINE}" in capsys.readouterr().err.splitlines()
