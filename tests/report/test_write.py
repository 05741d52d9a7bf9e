"""`distill report` (distill/report/write.py): discovery, reading through records, joining, the CLI."""
from __future__ import annotations

from pathlib import Path

import pytest

from distill.cli import main
from distill.errors import DistillError
from distill.report.data import dominates
from distill.report.write import collect, discover, write_report

from .conftest import write_run


def test_discovery_rule(report_inputs: Path) -> None:
    runs, exports, benches, qad = discover([report_inputs])
    assert [p.name for p in runs] == ["run"] and [p.name for p in exports] == ["export"]
    assert [p.name for p in benches] == ["bench.jsonl"] and qad == []
    # explicit files work too, and duplicates collapse
    runs2, exports2, benches2, _ = discover([report_inputs / "export" / "export.json", benches[0], report_inputs / "run"])
    assert len(runs2) == 1 and len(exports2) == 1 and len(benches2) == 1
    with pytest.raises(DistillError):
        discover([report_inputs / "nope"])


def test_joining_and_pareto(report_inputs: Path) -> None:
    data = collect([report_inputs])
    assert data.unmatched == 0  # every record found its accuracy (onnx by sha256, torch by checkpoint sha256)
    kinds = {(p.precision, p.runtime) for p in data.points}
    assert {("fp32", "ort-cpu"), ("fp16", "ort-cpu"), ("int8/ort-cpu", "ort-cpu"), ("int8/tensorrt", "ort-cpu"),
            ("fp32", "torch")} <= kinds
    assert data.common_domains == ["clean", "dark", "noisy"]
    for b in (1, 4):
        front = [p for p in data.points if p.batch == b and p.pareto]
        others = [p for p in data.points if p.batch == b and not p.pareto]
        assert front
        for o in others:  # off the front: some point is as fast and not significantly less accurate
            assert any(dominates(q, o) for q in data.points if q.batch == b and q is not o)
        for f in front:
            assert not any(dominates(q, f) for q in data.points if q.batch == b and q is not f)


def test_points_carry_test_set_size(report_inputs: Path) -> None:
    data = collect([report_inputs])
    onnx = [p for p in data.points if p.runtime == "ort-cpu"]
    assert onnx and all(p.count == {"clean": 10, "dark": 10, "noisy": 10} and p.score_se for p in onnx)


def test_stress_inputs_read_as_meant(stress_inputs: Path) -> None:
    data = collect([stress_inputs])
    assert len(data.groups) == 3 and all(g.n == 2 for g in data.groups)
    assert {g.label for g in data.groups} == {
        "mobilenetv3_small_050 (custom_feature_kd; alpha=0.9; feature_weight=0; temperature=4)",
        "mobilenetv3_small_050 (custom_feature_kd; alpha=0.5; feature_weight=1; temperature=2)",
        "mobilenetv3_small_050 (custom_feature_kd; alpha=0.9; feature_weight=0.25; temperature=8)"}
    assert len(data.points) == 18 and all(p.count and p.score_se for p in data.points)


def test_report_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DistillError, match="nothing to report"):
        write_report([tmp_path / "empty"], tmp_path / "r.html")


def test_markdown_is_named_after_the_html(report_inputs: Path, tmp_path: Path) -> None:
    assert main(["report", str(report_inputs / "run"), "--out", str(tmp_path / "reportA.html")]) == 0
    assert (tmp_path / "reportA.md").is_file() and not (tmp_path / "report.md").exists()
    with pytest.raises(DistillError, match=r"--out .*x\.md: the HTML file must not end in \.md"):
        write_report([report_inputs / "run"], tmp_path / "x.md")


def test_a_summary_that_does_not_match_its_record_is_named(tmp_path: Path) -> None:
    run = write_run(tmp_path / "r", strategy="erm", acc={"clean": 0.9, "dark": 0.5, "noisy": 0.25}, seed=0)
    text = (run / "summary.json").read_text().replace('"best_epoch"', '"best_epoch_typo"')
    (run / "summary.json").write_text(text)
    with pytest.raises(DistillError, match=r"summary\.json: best_epoch: Field required"):
        collect([run])
