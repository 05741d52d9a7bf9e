"""Runs copied without their weights (checkpoints left behind: a results folder synced without them) have no
checkpoint sha256 to tell copies of one run from different runs, so a tree copied whole and reported next to its
original read "ambiguous: two runs fit" for every export. Such a run is known by what it recorded instead
(config.yaml, data.json, summary.json's values: distill/report/identity.py ``recorded_identity``): copies join as
copies, runs that differ in any of these still join neither."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distill.bench.edge_runner import write_jsonl
from distill.records import RunSummary
from distill.report.write import collect

from .conftest import write_run
from .test_other_folder import ACC, record
from .test_partial_copy import new_export


def _tree(root: Path) -> Path:
    """ROOT/{runs/kd (no weights), export/kd, bench.jsonl (a torch record of the checkpoint)}."""
    run = write_run(root / "runs" / "kd", strategy="kd", acc=ACC, seed=0, options={"temperature": 4})
    (run / "checkpoints" / "best").mkdir(parents=True)
    new_export(root / "export" / "kd", run, "a")  # its checkpoint_sha256: of weights no longer here
    torch_record = record(str((run / "checkpoints" / "best").resolve()), None, runtime="torch").to_dict()
    torch_record["model_relative"] = "runs/kd/checkpoints/best"
    write_jsonl([torch_record], root / "bench.jsonl")
    return root


def _inputs(a: Path, b: Path) -> list[Path]:
    return [a / "runs" / "kd", a / "export" / "kd", a / "bench.jsonl", b / "runs" / "kd", b / "export" / "kd",
            b / "bench.jsonl"]


def test_copies_of_a_run_without_weights_join_each_to_its_own_tree(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    a = _tree(tmp_path / "A")
    b = tmp_path / "B"
    shutil.copytree(a, b)
    monkeypatch.chdir(tmp_path)
    data = collect(_inputs(a, b))
    assert not [w for w in data.warnings if "ambiguous" in w], data.warnings
    for ex in data.exports:
        run = data.run_of(ex)
        assert run is not None and Path(run.dir) == Path(ex.dir).parents[1] / "runs" / "kd"
        assert data.export_label(ex) == run.label
    assert data.unmatched == 0 and [m.name for m in data.records] == [f"{data.runs[0].label} · fp32"] * 2


@pytest.mark.parametrize("change", ["result", "time taken", "config"])
def test_runs_without_weights_that_differ_still_join_neither(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             change: str) -> None:
    """B's run was redone after the copy (another result, or the same result in another time) or its config
    changed: two different runs fit A's export (its relative path names B's run when the export is copied into B)."""
    a = _tree(tmp_path / "A")
    b = tmp_path / "B"
    shutil.copytree(a / "runs", b / "runs")
    shutil.copytree(a / "export", b / "export")
    run_b = b / "runs" / "kd"
    summary = RunSummary.read(run_b)
    if change == "result":
        summary.model_copy(update={"test_acc": {**ACC, "noisy": 0.5}}).write(run_b)
    elif change == "time taken":
        summary.model_copy(update={"train_seconds_this_session": 2.0}).write(run_b)
    else:
        text = (run_b / "config.yaml").read_text()
        assert "  lr: 0.002\n" in text
        (run_b / "config.yaml").write_text(text.replace("  lr: 0.002\n", "  lr: 0.003\n"))
    monkeypatch.chdir(tmp_path)
    data = collect([a / "runs" / "kd", b / "runs" / "kd", b / "export" / "kd"])
    (ex,) = data.exports
    assert data.run_of(ex) is None
    (said,) = [w for w in data.warnings if w.startswith("ambiguous: two runs fit")]
    assert str(run_b.resolve()) in said and str((a / "runs" / "kd").resolve()) in said
