"""The report's PTQ vs QAD section (distill/report/qad_sections.py): qad.json found, read through its record,
one per-domain table next to fp32 in report.md and report.html."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from distill.errors import DistillError
from distill.records import QADAccuracy, QADRecord
from distill.report.browser import render
from distill.report.write import collect, discover, write_report

from .conftest import write_run
from .test_browser import require_chromium


def _record(checkpoint: Path, *, seed: int = 3, accuracy: bool = True) -> QADRecord:
    """A qad.json as ``distill qad`` writes it, with numbers that are easy to find in the tables."""
    return QADRecord(
        checkpoint=str(checkpoint), student="test_resnet", flavour="tensorrt", library="torch.ao (test)",
        teacher="fp32+cache", config={"checkpoint": str(checkpoint), "out_dir": "qad", "flavour": "tensorrt",
                                      "epochs": 2, "seed": seed, "lr": 1e-4},
        calibration_images=32, test_images=30,
        ptq={"calibration": {"clean": 12.5, "dark": 6.25}, "test": {"clean": 10.0, "dark": 20.0, "noisy": 30.0}},
        qad={"calibration": {"clean": 0.0, "dark": 3.125}, "test": {"clean": 0.0, "dark": 10.0, "noisy": 20.0}},
        qad_file="model.int8-tensorrt.onnx", tuned_checkpoint="checkpoint",
        qdq_check={"compute_nodes": 5, "int8_weight_nodes": 5, "tensorrt_problems": []},
        torch_vs_onnx={"top1_agreement": 1.0}, losses=[0.5, 0.25], elapsed_s=12.0, within_target=False,
        accuracy=QADAccuracy(fp32={"clean": 0.9, "dark": 0.8, "noisy": 0.6},
                             ptq={"clean": 0.8, "dark": 0.7, "noisy": 0.5},
                             qad={"clean": 0.9, "dark": 0.8, "noisy": 0.7},
                             count={"clean": 10, "dark": 10, "noisy": 10}) if accuracy else None)


def _inputs(root: Path, **kw: Any) -> tuple[Path, Path]:
    run = write_run(root / "run", strategy="kd", acc={"clean": 0.9, "dark": 0.8, "noisy": 0.6}, seed=0)
    qad = root / "qad"
    qad.mkdir()
    _record(run / "checkpoints" / "best", **kw).write(qad)
    return run, qad


def test_the_report_shows_ptq_vs_qad_per_domain_next_to_fp32(tmp_path: Path) -> None:
    run, qad = _inputs(tmp_path / "in")
    res = write_report([tmp_path / "in"], tmp_path / "r.html", "r")
    assert res.qad == 1
    md = Path(res.markdown).read_text()
    assert "## PTQ vs QAD per domain (int8 next to fp32)" in md
    # labelled with its run's label (the run is among the inputs), flavour, seed, epochs and teacher
    # (a record without a "ranges" key was written before QAD learned its ranges: observed)
    assert "### test_resnet (kd) · int8/tensorrt · seed 3 · 2 epochs · teacher fp32+cache · ranges observed" in md
    assert ("32 calibration / 30 test images; worst calibration disagreement PTQ 12.50 → QAD 3.12 points "
            "(target ≤ 1: not met).") in md
    assert "| clean | 10 | 90.0 | 80.0 (-10.0) | 90.0 (+0.0) | 12.50 | 0.00 | 10.00 | 0.00 |" in md
    assert "| dark | 10 | 80.0 | 70.0 (-10.0) | 80.0 (+0.0) | 6.25 | 3.12 | 20.00 | 10.00 |" in md
    assert "| noisy | 10 | 60.0 | 50.0 (-10.0) | 70.0 (+10.0) | – | – | 30.00 | 20.00 |" in md  # not calibrated on
    assert "1 QAD result(s)" in md
    assert "int8 weight values" not in md  # a qad.json from before session 19 does not record it
    html = Path(res.html).read_text()
    assert '<section id="qad">' in html and "seed 3 · 2 epochs · teacher fp32+cache" in html
    noisy = html[html.index('<td class="label">noisy</td>'):]
    noisy = noisy[:noisy.index("</tr>")]
    assert ('<td class="num" data-v="0.6">60.0</td><td class="num" data-v="0.5">50.0 <span class="bad">(-10.0)</span>'
            '</td><td class="num" data-v="0.7">70.0 <span class="sd">(+10.0)</span></td>') in noisy
    assert '<td class="num bad" data-v="3.125">3.12</td>' in html  # QAD calibration disagreement over the target


def test_the_report_says_how_many_int8_weights_qad_changed(tmp_path: Path) -> None:
    run = write_run(tmp_path / "in" / "run", strategy="kd", acc={"clean": 0.9, "dark": 0.8, "noisy": 0.6}, seed=0)
    (tmp_path / "in" / "qad").mkdir()
    _record(run / "checkpoints" / "best").model_copy(update={"weights_changed_pct": 0.0312}).write(tmp_path / "in" / "qad")
    res = write_report([tmp_path / "in"], tmp_path / "r.html", "r")
    line = "(target ≤ 1: not met); QAD changed 0.03 % of the int8 weight values (the rest of its effect: biases"
    assert line in Path(res.markdown).read_text() and line in Path(res.html).read_text()


def test_the_report_names_the_layers_qad_kept_in_float(tmp_path: Path) -> None:
    """qad --export keeps the export's float layers in float (qad.json kept_float): the facts line names them."""
    run = write_run(tmp_path / "in" / "run", strategy="kd", acc={"clean": 0.9, "dark": 0.8, "noisy": 0.6}, seed=0)
    record = _record(run / "checkpoints" / "best").model_copy(update={
        "kept_float": ["backbone.conv1", "head"], "float_outputs": ["backbone.conv1"],
        "ptq_origin": "the export's int8, exp/model.int8-tensorrt.onnx (2 layer(s) kept in float)"})
    (tmp_path / "in" / "qad").mkdir()
    record.write(tmp_path / "in" / "qad")
    md = Path(write_report([tmp_path / "in"], tmp_path / "r.html", "r").markdown).read_text()
    assert ("PTQ arm: the export's int8, exp/model.int8-tensorrt.onnx (2 layer(s) kept in float). QAD kept in float the 2 "
            "layer(s) that file keeps in float: backbone.conv1 (its output too), head. 32 calibration") in md


def test_a_qad_json_from_before_accuracies_shows_disagreement_only(tmp_path: Path) -> None:
    _, qad = _inputs(tmp_path / "in", accuracy=False)
    raw = json.loads((qad / "qad.json").read_text())
    raw.pop("accuracy")  # files written before the field existed
    (qad / "qad.json").write_text(json.dumps(raw))
    data = collect([qad])
    assert len(data.qad) == 1 and data.qad[0].record.accuracy is None
    assert data.qad_label(data.qad[0].record) == "test_resnet"  # its run is not among the inputs
    md = Path(write_report([qad], tmp_path / "r.html").markdown).read_text()
    assert "| clean | – | – | – | – | 12.50 | 0.00 | 10.00 | 0.00 |" in md


def test_a_report_without_qad_json_has_no_qad_section(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", strategy="kd", acc={"clean": 0.9, "dark": 0.8, "noisy": 0.6}, seed=0)
    res = write_report([run], tmp_path / "r.html")
    md, html = Path(res.markdown).read_text(), Path(res.html).read_text()
    assert res.qad == 0 and "QAD" not in md and "QAD" not in html and 'id="qad"' not in html
    assert "from 1 run(s), 0 export(s), 0 benchmark record(s).\n" in md


def test_discovery_finds_qad_folders_and_files(tmp_path: Path) -> None:
    _, qad = _inputs(tmp_path / "in")
    assert discover([tmp_path / "in"]).qad == [qad]
    found = discover([qad / "qad.json"])
    assert found.qad == [qad] and not found.runs and not found.exports and not found.benches


@pytest.mark.parametrize("edit,message", [
    (lambda raw: raw.pop("ptq"), r"qad\.json: ptq: Field required"),
    (lambda raw: raw["config"].update(seed="zero"), r"qad\.json: config: Value error, seed: Input should be a valid integer"),
    (lambda raw: raw["accuracy"].pop("count"), r"qad\.json: accuracy\.count: Field required"),
])
def test_a_malformed_qad_json_is_skipped_with_one_line_naming_the_file(tmp_path: Path, edit, message) -> None:
    """The report is built from the rest (here the run); the warning is the record's own one-line error."""
    _, qad = _inputs(tmp_path / "in")
    raw = json.loads((qad / "qad.json").read_text())
    edit(raw)
    (qad / "qad.json").write_text(json.dumps(raw))
    res = write_report([tmp_path / "in"], tmp_path / "r.html")
    assert (res.runs, res.qad) == (1, 0)
    [warning] = res.warnings
    assert re.search(message, warning) and warning.endswith("skipped that QAD result"), warning
    assert "\n" not in warning and str(qad / "qad.json") in warning


def test_invalid_json_is_named(tmp_path: Path) -> None:
    (tmp_path / "qad").mkdir()
    (tmp_path / "qad" / "qad.json").write_text("{")
    with pytest.raises(DistillError, match=r"qad\.json: invalid JSON"):
        collect([tmp_path])


def test_the_qad_table_fits_its_card_in_chromium(tmp_path: Path) -> None:
    """Nine columns: at 800 px a one-row header overflowed the card (868 > 750 px)."""
    chrome = require_chromium()
    _inputs(tmp_path / "in")
    write_report([tmp_path / "in"], tmp_path / "r.html")
    r = render(tmp_path / "r.html", 800, tmp_path / "r.png", chrome=chrome)
    assert r.ready and not r.console and r.problems == [], r.problems


def _bench_line(model: Path) -> str:
    """One ORT-CPU bench record of ``model`` (no sha256: joined by path), as ``bench_model`` writes it."""
    from distill.records import BenchRecord

    from .conftest import SCHEMA

    return BenchRecord(**{
        "schema": SCHEMA, "model": str(model), "model_name": model.name, "model_meta": {"precision": "int8"},
        "runtime": "ort-cpu", "batch": 1, "input_shape": [1, 3, 32, 32], "threads": 1, "warmup": 2, "iters": 5,
        "throughput_ips": 1000.0, "latency_ms": {k: 1.0 for k in ("mean", "std", "min", "p50", "p90", "p99", "max")},
        "timestamp": "2026-01-01T00:00:00+0000", "device": {"cpu": {"model": "test cpu"}, "platform": "linux"},
    }).model_dump_json() + "\n"


def test_the_report_shows_the_no_harm_decision_and_the_picked_file_with_its_accuracy(tmp_path: Path) -> None:
    """The rule picked PTQ's file: the section names it (not what ships: the export's recommendation decides the
    precision) with the hold-out figures per domain, and a bench record of the PTQ file is a point with PTQ's test
    accuracy (a QAD file is in no export.json)."""
    run, qad = _inputs(tmp_path / "in")
    raw = json.loads((qad / "qad.json").read_text())
    raw["ptq"]["holdout"], raw["qad"]["holdout"] = {"clean": 1.0, "dark": 2.0}, {"clean": 3.0, "dark": 2.5}
    raw.update(holdout_images=40, ship="ptq", ptq_file="model.int8-tensorrt.ptq.onnx",
               ship_reason="mean top-1 disagreement with fp32 on 40 hold-out images (2 domains): QAD 2.75 >= PTQ 1.50 "
                           "pts, so QAD did not help")
    (qad / "qad.json").write_text(json.dumps(raw))
    (tmp_path / "in" / "bench.jsonl").write_text(_bench_line(qad / "model.int8-tensorrt.ptq.onnx"))
    res = write_report([tmp_path / "in"], tmp_path / "r.html", "r")
    md = Path(res.markdown).read_text()
    assert ("**No-harm rule: int8 file: PTQ's, model.int8-tensorrt.ptq.onnx (mean top-1 disagreement with fp32 on 40 "
            "hold-out images (2 domains): QAD 2.75 >= PTQ 1.50 pts, so QAD did not help). Precision to ship (int8 or "
            "not): the export's recommendation (Recommended to ship; no export of this checkpoint in this report). "
            "Hold-out disagreement with fp32 per domain, pts: clean PTQ 1.00 / QAD 3.00; dark PTQ 2.00 / QAD 2.50.**") in md
    assert "No-harm rule: int8 file: PTQ&#x27;s" in Path(res.html).read_text() and "ships PTQ" not in md
    data = collect([tmp_path / "in"])
    (point,) = data.points
    assert point.precision == "int8/tensorrt (PTQ)" and point.student == "test_resnet (kd)"
    assert point.accuracy == {"clean": 0.8, "dark": 0.7, "noisy": 0.5} and data.unmatched == 0  # accuracy.ptq


def test_a_qad_json_from_before_the_rule_says_no_decision_was_recorded(tmp_path: Path) -> None:
    _, qad = _inputs(tmp_path / "in")
    md = Path(write_report([qad], tmp_path / "r.html").markdown).read_text()
    assert ("**No-harm rule: not recorded (a qad.json from before the rule); int8 file: QAD's, "
            "model.int8-tensorrt.onnx. Precision to ship (int8 or not): the export's recommendation (Recommended to "
            "ship; no export of this checkpoint in this report).**") in md


def test_a_qad_ptq_file_that_copies_an_exports_int8_is_labelled_by_its_own_path(tmp_path: Path) -> None:
    """qad --export ships a byte copy of the export's int8 file as its PTQ file: a bench record of that copy (same
    sha256 as the export's file) is the qad record's PTQ arm, found by its path, not the export's file."""
    import hashlib

    from distill.records import ExportReport

    run, qad = _inputs(tmp_path / "in")
    raw = json.loads((qad / "qad.json").read_text())
    raw.update(holdout_images=40, ship="ptq", ptq_file="model.int8-tensorrt.ptq.onnx", ship_reason="QAD did not help")
    (qad / "qad.json").write_text(json.dumps(raw))
    body = b"the same int8 bytes"
    (qad / "model.int8-tensorrt.ptq.onnx").write_bytes(body)
    sha = hashlib.sha256(body).hexdigest()
    ex = tmp_path / "in" / "export"
    ex.mkdir()
    (ex / "model.int8-tensorrt.onnx").write_bytes(body)
    ExportReport(format="distill.export/1", created="2026-01-01", status="ok", checkpoint=str(run / "checkpoints" / "best"),
                 student="test_resnet", class_names=["a", "b"], input={}, preprocess={}, models=[
                     {"file": "model.int8-tensorrt.onnx", "bytes": len(body), "sha256": sha, "precision": "int8",
                      "runtime": "ort-cpu", "flavour": "tensorrt", "accuracy": {"clean": 0.1}}]).write(ex)
    line = json.loads(_bench_line(qad / "model.int8-tensorrt.ptq.onnx"))
    (tmp_path / "in" / "bench.jsonl").write_text(json.dumps({**line, "model_sha256": sha}) + "\n")
    (point,) = collect([tmp_path / "in"]).points
    assert point.precision == "int8/tensorrt (PTQ)" and point.accuracy == {"clean": 0.8, "dark": 0.7, "noisy": 0.5}
    # the export's own file, benchmarked, is still the export's
    (tmp_path / "in" / "bench.jsonl").write_text(json.dumps({**line, "model": str(ex / "model.int8-tensorrt.onnx"),
                                                             "model_sha256": sha}) + "\n")
    (point,) = collect([tmp_path / "in"]).points
    assert point.precision == "int8/tensorrt" and point.accuracy == {"clean": 0.1}


def test_the_qad_title_says_whether_its_ranges_were_learned(tmp_path: Path) -> None:
    run = write_run(tmp_path / "in" / "run", strategy="kd", acc={"clean": 0.9, "dark": 0.8, "noisy": 0.6}, seed=0)
    record = _record(run / "checkpoints" / "best")
    record.config["ranges"] = "learned"  # what distill qad writes since session 18
    (tmp_path / "in" / "qad").mkdir()
    record.write(tmp_path / "in" / "qad")
    md = Path(write_report([tmp_path / "in"], tmp_path / "r.html", "r").markdown).read_text()
    assert "· 2 epochs · teacher fp32+cache · ranges learned" in md
