"""Lookups that join by identity, not by a stored path, when several copies share it: a bench record found by its
sha256 (its path leads nowhere: timed on the device), and the decision's checkpoint of a qad.json or export.json
(``existing``). The copies are interchangeable in content, but the report names the one it took: it takes the copy in
the tree being reported (the tiers' rule, distill/report/locate.py), whatever order the inputs come in, not the last
one read."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from distill.bench.edge_runner import write_jsonl
from distill.records import ExportReport
from distill.records.base import relative_paths
from distill.report.decision import qad_for
from distill.report.locate import nearest
from distill.report.write import collect

from .conftest import write_run
from .test_engine_join import engine_record
from .test_other_folder import ACC, ENGINE, record
from .test_partial_copy import new_export
from .test_ship_decision import _qad


def _tree(root: Path, sha256s: bool = True) -> Path:
    """ROOT/{runs/kd (weights), export/kd (+ a listed engine), qad/kd (plain PTQ, beside the export, not in it)}."""
    run = write_run(root / "runs" / "kd", strategy="kd", acc=ACC, seed=0, options={"temperature": 4})
    ckpt = run / "checkpoints" / "best"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"weights")
    ex = new_export(root / "export" / "kd", run, "a")
    report = ExportReport.read(ex)
    prov = {k: v for k, v in report.provenance.items() if sha256s or k != "checkpoint_sha256"}
    report.model_copy(update={"provenance": prov, "tensorrt": {"engines": [{**ENGINE, "sha256": "ef" * 32}]}}).write(ex)
    q = _qad(root / "tmpq", ckpt, "ptq")
    rel = relative_paths(root / "qad" / "kd", checkpoint=ckpt)
    q = q.model_copy(update={"checkpoint": str(ckpt.resolve()), "config": {**q.config, "relative": rel},
                             "checkpoint_sha256": hashlib.sha256(b"weights").hexdigest() if sha256s else None})
    (root / "qad" / "kd").mkdir(parents=True)
    q.write(root / "qad" / "kd")
    shutil.rmtree(root / "tmpq")
    return root


@pytest.mark.parametrize("order", ["A first", "B first"])
def test_a_record_found_by_its_sha256_names_the_copy_in_its_own_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     order: str) -> None:
    """A's export copied into B under another name; each tree has a bench file of records timed on the device (their
    paths lead nowhere here). Each record is joined by its sha256 to its own tree's copy: before, to the copy read
    last (B's records named A's export folder when A's was read last)."""
    a = _tree(tmp_path / "A")
    b = tmp_path / "B"
    shutil.copytree(a / "runs", b / "runs")
    shutil.copytree(a / "export" / "kd", b / "export" / "kd-copy")
    for tree in (a, b):
        write_jsonl([record("/device/model.fp32.onnx", "a0" * 32).to_dict(),
                     engine_record("/device/model.fp32.engine", "ef" * 32).to_dict()], tree / "bench.jsonl")
    monkeypatch.chdir(tmp_path)
    data = collect([a, b] if order == "A first" else [b, a])
    files = {(Path(m.source).parent.name, m.record.runtime): m.file for m in data.records}
    assert files == {("A", "ort-cpu"): "kd/model.fp32.onnx", ("B", "ort-cpu"): "kd-copy/model.fp32.onnx",
                     ("A", "tensorrt"): "kd/model.fp32.engine", ("B", "tensorrt"): "kd-copy/model.fp32.engine"}


@pytest.mark.parametrize("order", ["A first", "B first"])
def test_the_decision_finds_each_trees_checkpoint_in_that_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               order: str) -> None:
    """Records without the checkpoint's sha256 (the path decides), a tree copied whole and reported with its original:
    the qad.json and export.json of each tree find two checkpoints (their own tree's, by the relative path, and A's,
    by the absolute one), copies of one another. Before, neither was taken and the stored path (A's) stood in for
    both trees, so each export had two QAD results of 'its' checkpoint, neither inside its folder, and named none."""
    a = _tree(tmp_path / "A", sha256s=False)
    b = tmp_path / "B"
    shutil.copytree(a, b)
    monkeypatch.chdir(tmp_path)
    data = collect([a, b] if order == "A first" else [b, a])
    assert len(data.exports) == 2 and len(data.qad) == 2
    for ex in data.exports:
        tree = Path(ex.dir).parents[1]
        qad = qad_for(data, ex)
        assert qad is not None and Path(qad.dir) == tree / "qad" / "kd", (ex.dir, qad)


def test_a_retrained_copy_is_not_taken_for_the_original(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """B's checkpoint was retrained in place after the copy: the two places the qad.json finds hold different
    weights, so the checkpoint is not settled by its place in a tree (the stored path stands, as before)."""
    a = _tree(tmp_path / "A", sha256s=False)
    b = tmp_path / "B"
    shutil.copytree(a, b)
    (b / "runs" / "kd" / "checkpoints" / "best" / "model.safetensors").write_bytes(b"retrained")
    monkeypatch.chdir(tmp_path)
    data = collect([b])
    (q,) = data.qad
    (ex,) = data.exports
    assert qad_for(data, ex) is q  # both name A's checkpoint by their stored path, as before


def test_nearest_prefers_the_artifacts_own_folder_then_the_folders_above_then_the_path(tmp_path: Path) -> None:
    here = tmp_path / "t" / "bench"
    got = nearest([str(tmp_path / "z"), str(tmp_path / "t" / "x" / "e"), str(tmp_path / "a"),
                   str(here / "e")], here)
    assert got == [str(here / "e"), str(tmp_path / "t" / "x" / "e"), str(tmp_path / "a"), str(tmp_path / "z")]


def test_two_exports_of_the_same_bytes_with_other_results_join_neither(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Review 1 L2: the same checkpoint exported twice with other eval data holds the same model bytes; a record
    found by that sha256 took the export nearest it (here, outside both: the first by path) as if they were copies,
    silently, with its accuracy. Exports of one sha256 whose results differ are ambiguous now; copies still join."""
    a = _tree(tmp_path / "A")
    other = tmp_path / "B" / "export" / "kd-fewer"
    shutil.copytree(a / "export" / "kd", other)
    report = ExportReport.read(other)
    models = [m.model_copy(update={"accuracy": {d: v - 0.1 for d, v in (m.accuracy or {}).items()}})
              for m in report.models]
    report.model_copy(update={"models": models, "data": {**(report.data or {}), "eval_count": {"clean": 5}}}).write(other)
    bench = tmp_path / "bench.jsonl"
    write_jsonl([record("/device/model.fp32.onnx", "a0" * 32).to_dict()], bench)
    monkeypatch.chdir(tmp_path)
    data = collect([a, tmp_path / "B", bench])
    (m,) = [m for m in data.records if m.record.runtime == "ort-cpu"]
    assert [p.accuracy for p in data.points if p.runtime == "ort-cpu"] == [None]
    (said,) = [w for w in data.warnings if w.startswith("ambiguous: ")]
    assert said.startswith(f"ambiguous: two exports of its bytes with other results fit the benchmark record of "
                           f"/device/model.fp32.onnx in {bench} ({a / 'export' / 'kd'}, {other}): joined to neither")
    shutil.rmtree(other)  # a copy with the same results joins (its accuracy): the point of the sha256 join
    shutil.copytree(a / "export" / "kd", other)
    data = collect([a, tmp_path / "B", bench])
    assert [p.accuracy for p in data.points if p.runtime == "ort-cpu"] != [None]
    assert not [w for w in data.warnings if w.startswith("ambiguous: ")]
