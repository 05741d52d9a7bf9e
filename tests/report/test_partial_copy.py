"""Results copied in part (review 2, H1, L3): a folder copied into another tree of results finds, by its path
relative to its own folder, the other tree's run, engine or export, and by its absolute path its own. Both fit, so
the report joins neither (and says which two), unless an identity (a checkpoint's sha256) tells them apart; never
the wrong one silently."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from distill.bench.edge_runner import write_jsonl
from distill.records import ExportedModel, ExportReport
from distill.records.base import relative_paths
from distill.report.decision import qad_for
from distill.report.write import collect

from .conftest import write_run
from .test_engine_join import engine_record
from .test_other_folder import ACC, old_export, record

LAYOUTS = ["provenance", "top"]  # where the relative paths are: this version's place, the release before's


def new_export(folder: Path, run: Path, tag: str, layout: str = "provenance") -> Path:
    """export.json as this version writes it: absolute paths, and relative ones in ``provenance.relative`` (or, as
    the release before wrote them, top-level ``relative``)."""
    ckpt = run / "checkpoints" / "best"
    weights = ckpt / "model.safetensors"
    sha = hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else f"c{tag}" * 32
    rel = relative_paths(folder, checkpoint=ckpt, run=run)
    ExportReport(format="distill.export/1", created="x", status="ok", checkpoint=str(ckpt.resolve()),
                 student="test_resnet", class_names=["a"], input={}, preprocess={},
                 models=[ExportedModel(file="model.fp32.onnx", bytes=1, sha256=f"{tag}0" * 32, precision="fp32",
                                       runtime="onnxruntime", accuracy=ACC)],
                  provenance={"strategy": "kd", "run": str(run.resolve()), "checkpoint_sha256": sha,
                             **({"relative": rel} if layout == "provenance" else {})},
                 data={"eval_domains": list(ACC), "eval_count": {d: 10 for d in ACC}},
                 **({"relative": rel} if layout == "top" else {})).write(folder)
    return folder


def two_experiments(t: Path, layout: str, weights: bool = False) -> dict[str, Path]:
    runs = {}
    for exp, temp in (("expA", 4), ("expB", 2)):
        runs[exp] = write_run(t / exp / "runs" / "kd", strategy="kd", acc=ACC, seed=0, options={"temperature": temp})
        (runs[exp] / "checkpoints" / "best").mkdir(parents=True)
        if weights:
            (runs[exp] / "checkpoints" / "best" / "model.safetensors").write_bytes(exp.encode())
        new_export(t / exp / "export" / "kd", runs[exp], "a" if exp == "expA" else "b", layout)
    return runs


@pytest.mark.parametrize("layout", LAYOUTS)
def test_an_export_copied_into_another_tree_is_not_labelled_with_that_trees_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    two_experiments(tmp_path, layout)
    shutil.copytree(tmp_path / "expA/export/kd", tmp_path / "expB/export/kd_from_A")
    monkeypatch.chdir(tmp_path)
    data = collect([tmp_path / "expA/runs/kd", tmp_path / "expB/runs/kd", tmp_path / "expB/export/kd",
                    tmp_path / "expB/export/kd_from_A"])
    labels = {Path(ex.dir).name: data.export_label(ex) for ex in data.exports}
    assert labels == {"kd": "test_resnet (kd; temperature=2)", "kd_from_A": "test_resnet (kd)"}  # not T=2's
    said = [w for w in data.warnings if w.startswith("ambiguous: two runs fit export")]
    assert len(said) == 1 and "kd_from_A" in said[0] and "expA" in said[0] and "expB" in said[0]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_checkpoints_sha256_tells_two_runs_that_fit_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              layout: str) -> None:
    two_experiments(tmp_path, layout, weights=True)
    shutil.copytree(tmp_path / "expA/export/kd", tmp_path / "expB/export/kd_from_A")
    monkeypatch.chdir(tmp_path)
    data = collect([tmp_path / "expA/runs/kd", tmp_path / "expB/runs/kd", tmp_path / "expB/export/kd_from_A"])
    assert data.export_label(data.exports[0]) == "test_resnet (kd; temperature=4)"  # expA's, by its weights
    assert not [w for w in data.warnings if w.startswith("ambiguous")]


def test_an_engines_bench_file_copied_beside_another_export_is_not_given_its_accuracy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for exp, acc in (("expA", 0.9), ("expB", 0.5)):
        run = write_run(tmp_path / exp / "runs" / "kd", strategy="kd", acc={d: acc for d in ACC}, seed=0)
        ex = old_export(tmp_path / exp / "export" / "kd", run / "checkpoints" / "best", str(run), exp[-1].lower())
        raw = json.loads((ex / "export.json").read_text())
        for m in raw["models"]:
            m["accuracy"] = {k: acc for k in m["accuracy"]}
        (ex / "export.json").write_text(json.dumps(raw))
        (ex / "model.fp32.engine").write_bytes(exp.encode())  # built on the device: no sha256 in export.json
    write_jsonl([engine_record(str(tmp_path / "expA/export/kd/model.fp32.engine")).to_dict()], tmp_path / "expA/t.jsonl")
    shutil.copy(tmp_path / "expA/t.jsonl", tmp_path / "expB/trt_A.jsonl")
    monkeypatch.chdir(tmp_path)
    data = collect([tmp_path / "expA/export/kd", tmp_path / "expB/export/kd", tmp_path / "expB/trt_A.jsonl"])
    (p,) = data.points
    assert p.accuracy is None and p.note == "ambiguous: two timed files fit"  # not expB's 0.5
    (said,) = [w for w in data.warnings if w.startswith("ambiguous: two timed files fit")]
    assert str((tmp_path / "expA/export/kd/model.fp32.engine").resolve()) in said
    assert str((tmp_path / "expB/export/kd/model.fp32.engine").resolve()) in said
    data = collect([tmp_path / "expA/export/kd", tmp_path / "expA/t.jsonl"])  # in its own tree: joined
    assert data.points[0].accuracy == {d: 0.9 for d in ACC}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_qad_result_copied_beside_another_export_is_not_that_exports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       layout: str) -> None:
    from .test_ship_decision import _qad

    run = write_run(tmp_path / "runs" / "kd", strategy="kd", acc={"clean": 0.9}, seed=0)
    ckpt = run / "checkpoints" / "best"
    ckpt.mkdir(parents=True)
    a = old_export(tmp_path / "export" / "A", ckpt, str(run), "1")
    b = old_export(tmp_path / "export" / "B", ckpt, str(run), "2")
    for ex in (a, b):  # one checkpoint
        raw = json.loads((ex / "export.json").read_text())
        raw["provenance"]["checkpoint_sha256"] = "c1" * 32
        (ex / "export.json").write_text(json.dumps(raw))
    q = _qad(tmp_path / "tmpq", ckpt, "ptq")
    rel = relative_paths(a / "qad", checkpoint=ckpt, export_dir=a)
    q = q.model_copy(update={"checkpoint_sha256": "c1" * 32, "config": {
        **q.config, "export_dir": str(a), **({"relative": rel} if layout == "provenance" else {})},
        **({"relative": rel} if layout == "top" else {})})
    (a / "qad").mkdir()
    q.write(a / "qad")
    shutil.copytree(a / "qad", b / "qad")
    monkeypatch.chdir(tmp_path)
    data = collect([run, a, b])
    got = {Path(ex.dir).name: qad_for(data, ex) for ex in data.exports}
    assert got["A"] is not None and Path(got["A"].dir) == a / "qad"
    assert got["B"] is None  # B's copy ran against A's int8 file: no decision of B's rests on it


def test_a_bench_file_copied_beside_another_export_is_not_called_a_replaced_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for exp, tag in (("expA", "a"), ("expB", "b")):
        run = write_run(tmp_path / exp / "runs" / "kd", strategy="kd", acc=ACC, seed=0)
        ex = old_export(tmp_path / exp / "export" / "kd", run / "checkpoints" / "best", str(run), tag)
        (ex / "model.fp32.onnx").write_bytes(exp.encode())
    write_jsonl([record(str(tmp_path / "expA/export/kd/model.fp32.onnx"), "a0" * 32).to_dict()],
                tmp_path / "expA/bench.jsonl")
    shutil.copy(tmp_path / "expA/bench.jsonl", tmp_path / "expB/bench_A.jsonl")
    monkeypatch.chdir(tmp_path)
    data = collect([tmp_path / "expB/export/kd", tmp_path / "expB/bench_A.jsonl"])
    (said,) = data.warnings
    assert "since replaced" not in said and "re-exported" not in said
    assert "copied next to another export" in said and str(tmp_path / "expA/export/kd/model.fp32.onnx") in said


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_tree_that_reaches_its_runs_through_a_symlink_still_joins_when_copied_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    """runs/ is a link to scratch (review 2, M2): the relative path is stored as laid out (../../runs/kd), so the
    tree copied with its links followed, scratch gone, still finds its run."""
    scratch, proj = tmp_path / "scratch", tmp_path / "home" / "proj"
    run = write_run(scratch / "runs" / "kd", strategy="kd", acc=ACC, seed=0, options={"temperature": 4})
    (run / "checkpoints" / "best").mkdir(parents=True)
    proj.mkdir(parents=True)
    os.symlink(scratch / "runs", proj / "runs")
    new_export(proj / "export" / "kd", proj / "runs" / "kd", "a", layout)
    stored = ExportReport.read(proj / "export" / "kd")
    assert (stored.relative or stored.provenance["relative"])["run"] == "../../runs/kd"
    laptop = tmp_path / "laptop" / "proj"
    shutil.copytree(proj, laptop, symlinks=False)
    shutil.rmtree(scratch)
    monkeypatch.chdir(tmp_path)
    data = collect([laptop / "runs" / "kd", laptop / "export" / "kd"])
    run_of = data.run_of(data.exports[0])
    assert run_of is not None and Path(run_of.dir) == laptop / "runs" / "kd"
