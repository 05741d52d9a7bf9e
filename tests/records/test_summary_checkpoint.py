"""summary.json's ``checkpoint`` names the run's checkpoints/best from any working folder (QA G F2): written
absolute, read in the folder the summary is in, so an older summary (relative to the folder the run was started
in) and a run folder copied or moved whole still name their own checkpoint."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from distill.records import RunSummary

FIELDS = {"strategy": "kd", "student": "s", "source_domains": ["a"], "target_domains": ["b"], "trained_on": ["a"],
          "best_epoch": 1, "selected_on": "source_val", "test_acc": {"a": 0.5}, "params": 1,
          "train_seconds_this_session": 1.0}


def _run(folder: Path, checkpoint: str) -> Path:
    (folder / "checkpoints" / "best").mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({**FIELDS, "checkpoint": checkpoint}))
    return folder


def test_an_older_summary_relative_to_where_the_run_started_reads_from_another_folder(tmp_path, monkeypatch):
    run = _run(tmp_path / "proj" / "runs" / "kd", "runs/kd/checkpoints/best")  # as typed in tmp_path/proj
    elsewhere = tmp_path / "notebooks"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    checkpoint = RunSummary.read(run).checkpoint
    assert checkpoint == str(run / "checkpoints" / "best") and Path(checkpoint).is_dir()
    assert RunSummary.read(run / "summary.json").checkpoint == checkpoint


def test_a_moved_run_folder_names_its_own_checkpoint_not_the_old_place(tmp_path, monkeypatch):
    old = _run(tmp_path / "old" / "kd", str(tmp_path / "old" / "kd" / "checkpoints" / "best"))
    new = tmp_path / "new" / "kd"
    new.parent.mkdir()
    shutil.copytree(old, new)
    monkeypatch.chdir(tmp_path)
    assert RunSummary.read(new).checkpoint == str(new / "checkpoints" / "best")


def test_a_summary_copied_away_from_its_run_keeps_the_absolute_checkpoint(tmp_path):
    run = _run(tmp_path / "runs" / "kd", str(tmp_path / "runs" / "kd" / "checkpoints" / "best"))
    alone = tmp_path / "copies"
    alone.mkdir()
    shutil.copy(run / "summary.json", alone / "summary.json")
    assert RunSummary.read(alone).checkpoint == str(run / "checkpoints" / "best")


def test_a_checkpoint_outside_any_checkpoints_folder_is_kept_as_stored(tmp_path):
    run = _run(tmp_path / "run", "elsewhere/model")
    assert RunSummary.read(run).checkpoint == "elsewhere/model"


@pytest.mark.parametrize("stored", [r"C:\runs\kd\checkpoints\best", r"runs\kd\checkpoints\best",
                                    r"\\server\share\kd\checkpoints\best", "C:/runs/kd/checkpoints/best"])
def test_a_summary_written_on_windows_names_the_checkpoint_of_the_folder_it_is_read_from(tmp_path, stored):
    """A run trained on Windows and copied to Linux: its summary.json's checkpoint is a Windows path, re-based like a
    POSIX one (before: kept as stored, a path no one can open here)."""
    run = _run(tmp_path / "from_windows" / "kd", stored)
    assert RunSummary.read(run).checkpoint == str(run / "checkpoints" / "best")


def test_a_windows_checkpoint_outside_any_checkpoints_folder_is_kept_as_stored(tmp_path):
    run = _run(tmp_path / "run", r"D:\models\student")
    assert RunSummary.read(run).checkpoint == r"D:\models\student"
