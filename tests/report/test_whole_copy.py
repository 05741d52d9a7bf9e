"""A tree of results copied whole (``cp -r``) and reported next to its original (review 4, H2): the copy's stored
paths name its own parts by their path relative to each artifact, and the original's by their absolute path. Both
are inputs, so two places fit every join; they are copies of one another (the same checkpoint sha256, export.json,
timed file), so each artifact joins its own tree's, without a warning. Candidates that differ stay ambiguous
(tests/report/test_partial_copy.py)."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from distill.bench.edge_runner import write_jsonl
from distill.records import ExportReport
from distill.records.base import relative_paths
from distill.report.decision import qad_for
from distill.report.write import collect

from .conftest import write_run
from .test_engine_join import engine_record
from .test_other_folder import ACC, ENGINE, record
from .test_partial_copy import LAYOUTS, new_export
from .test_ship_decision import _qad


def experiment(root: Path, layout: str) -> Path:
    """ROOT/{runs/kd (weights), export/kd (+ a device-built engine), export/kd/qad (--export), bench.jsonl}."""
    run = write_run(root / "runs" / "kd", strategy="kd", acc=ACC, seed=0, options={"temperature": 4})
    ckpt = run / "checkpoints" / "best"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"weights")
    ex = new_export(root / "export" / "kd", run, "a", layout)
    ExportReport.read(ex).model_copy(update={"tensorrt": {"engines": [ENGINE], "built_here": False}}).write(ex)
    (ex / "model.fp32.onnx").write_bytes(b"onnx")
    (ex / "model.fp32.engine").write_bytes(b"engine")  # built on the device: no sha256 in export.json
    sha = hashlib.sha256(b"weights").hexdigest()
    q = _qad(root / "tmpq", ckpt, "ptq")
    rel = relative_paths(ex / "qad", checkpoint=ckpt, export_dir=ex)
    q = q.model_copy(update={"checkpoint": str(ckpt.resolve()), "checkpoint_sha256": sha, "config": {
        **q.config, "export_dir": str(ex.resolve()), **({"relative": rel} if layout == "provenance" else {})},
        **({"relative": rel} if layout == "top" else {})})
    (ex / "qad").mkdir()
    q.write(ex / "qad")
    shutil.rmtree(root / "tmpq")
    write_jsonl([record(str(ex / "model.fp32.onnx"), "a0" * 32).to_dict(),
                 engine_record(str(ex / "model.fp32.engine"), "ef" * 32).to_dict()], root / "bench.jsonl")
    return root


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_tree_copied_whole_and_reported_with_its_original_joins_each_to_itself(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    a = experiment(tmp_path / "A", layout)
    b = tmp_path / "B"
    shutil.copytree(a, b)
    monkeypatch.chdir(tmp_path)
    data = collect([a / "runs" / "kd", a / "export" / "kd", a / "bench.jsonl",
                    b / "runs" / "kd", b / "export" / "kd", b / "bench.jsonl"])
    assert not [w for w in data.warnings if "ambiguous" in w], data.warnings
    assert len(data.exports) == 2 and len(data.qad) == 2
    for ex in data.exports:
        tree = Path(ex.dir).parents[1]
        run = data.run_of(ex)
        assert run is not None and Path(run.dir) == tree / "runs" / "kd"
        assert data.export_label(ex) == run.label
        qad = qad_for(data, ex)
        assert qad is not None and Path(qad.dir) == tree / "export" / "kd" / "qad"
        ran = data.export_of_qad(qad)
        assert ran is not None and Path(ran.dir) == tree / "export" / "kd"
        run_q = data.run_of_qad(qad)
        assert run_q is not None and Path(run_q.dir) == tree / "runs" / "kd"
    assert data.unmatched == 0
    for m in data.records:
        assert "ambiguous" not in m.note and "not joined" not in m.note, (m.source, m.note)
    engines = [m for m in data.records if m.record.runtime == "tensorrt"]
    assert [m.note for m in engines] == ["TensorRT engine of model.fp32.onnx"] * 2


def test_a_copied_qad_result_whose_copied_export_was_redone_joins_neither(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """B re-exported after the copy: B's qad.json (a copy of A's) ran against A's export, not B's new one. The two
    export folders it fits differ (export.json), so it is joined to neither and a warning says so."""
    a = experiment(tmp_path / "A", "provenance")
    b = tmp_path / "B"
    shutil.copytree(a, b)
    redone = ExportReport.read(b / "export" / "kd")
    redone.model_copy(update={"created": "later"}).write(b / "export" / "kd")
    monkeypatch.chdir(tmp_path)
    data = collect([a / "runs" / "kd", a / "export" / "kd", b / "runs" / "kd", b / "export" / "kd"])
    ran = {Path(q.dir).parents[2].name: data.export_of_qad(q) for q in data.qad}
    assert ran["A"] is not None and Path(ran["A"].dir) == a / "export" / "kd"
    assert ran["B"] is None
    (said,) = [w for w in data.warnings if w.startswith("ambiguous: two export folders fit")]
    assert str(b / "export" / "kd" / "qad") in said
    run_b = data.run_of([ex for ex in data.exports if Path(ex.dir).is_relative_to(b)][0])
    assert run_b is not None and Path(run_b.dir) == b / "runs" / "kd"  # the same weights: its own tree's run
