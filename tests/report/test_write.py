"""`distill report` (distill/report/write.py): discovery, reading through records, joining, the CLI."""
from __future__ import annotations

from pathlib import Path

import pytest

from distill.bench.edge_runner import SCHEMA
from distill.cli import main
from distill.errors import DistillError
from distill.records import BenchRecord, ExportedModel, ExportReport
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


def test_markdown_is_named_after_the_html(report_inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(report_inputs / "run"), "--out", str(tmp_path / "reportA.html")]) == 0
    out = capsys.readouterr().out  # what it wrote is the command's result: stdout
    assert out.startswith(f"wrote {tmp_path / 'reportA.html'} and {tmp_path / 'reportA.md'}: 1 run(s)"), out
    assert (tmp_path / "reportA.md").is_file() and not (tmp_path / "report.md").exists()
    with pytest.raises(DistillError, match=r"--out .*x\.md: the HTML file must not end in \.md"):
        write_report([report_inputs / "run"], tmp_path / "x.md")


def test_a_summary_that_does_not_match_its_record_is_named(tmp_path: Path) -> None:
    run = write_run(tmp_path / "r", strategy="erm", acc={"clean": 0.9, "dark": 0.5, "noisy": 0.25}, seed=0)
    text = (run / "summary.json").read_text().replace('"best_epoch"', '"best_epoch_typo"')
    (run / "summary.json").write_text(text)
    with pytest.raises(DistillError, match=r"summary\.json: best_epoch: Field required"):
        collect([run])


def _bench(model: Path, sha: str | None) -> BenchRecord:
    """A bench record of ``model`` carrying ``sha`` (what ``distill bench`` read from the file it timed)."""
    lat = {"mean": 1.0, "std": 0.1, "min": 0.9, "p50": 1.0, "p90": 1.2, "p99": 1.5, "max": 1.6}
    return BenchRecord(**{"schema": SCHEMA, "model": str(model), "model_name": model.name, "model_sha256": sha,
                          "model_meta": {"precision": "fp32"}, "runtime": "ort-cpu", "batch": 1,
                          "input_shape": [1, 3, 32, 32], "threads": 1, "warmup": 1, "iters": 5, "throughput_ips": 1e3,
                          "latency_ms": lat, "timestamp": "2026-01-01T00:00:00+0000",
                          "device": {"cpu": {"model": "test CPU", "usable_cores": 1}}, "versions": {}})


def _fp32_export(folder: Path, sha: str, strategy: str) -> Path:
    acc = {"clean": 0.9, "dark": 0.8}
    ExportReport(format="distill.export/1", created="x", status="ok", checkpoint=str(folder / "ckpt"),
                 student="test_resnet", class_names=["a"], input={}, preprocess={},
                 models=[ExportedModel(file="model.fp32.onnx", bytes=1, sha256=sha, precision="fp32",
                                       runtime="onnxruntime", accuracy=acc)],
                 provenance={"strategy": strategy}, data={"eval_domains": list(acc)}).write(folder)
    return folder


def test_a_record_of_a_replaced_file_does_not_take_the_new_models_accuracy(tmp_path: Path, capsys) -> None:
    """Bug: a record timed erm's model.fp32.onnx; fm was then exported into the same folder. The record was joined by
    its path to fm's name and accuracy. The sha256 decides: it stays unmatched, and the report says so once."""
    folder = _fp32_export(tmp_path / "ex" / "X", "b" * 64, "fm")  # the export now in the folder: fm's file
    old = _bench(folder / "model.fp32.onnx", "a" * 64)  # timed erm's file, before the re-export
    old.append_to(tmp_path / "bench.jsonl")
    old.model_copy(update={"batch": 8}).append_to(tmp_path / "bench.jsonl")
    data = collect([tmp_path])
    assert data.unmatched == 2 and all(p.accuracy is None and "(fm)" not in p.student for p in data.points)
    assert len(data.warnings) == 1 and "2 benchmark record(s) timed a file since replaced" in data.warnings[0]
    assert str(folder / "model.fp32.onnx") in data.warnings[0]
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 0
    assert capsys.readouterr().err.count("warning: 2 benchmark record(s) timed a file since replaced") == 1
    assert "timed a file since replaced" in (tmp_path / "r.md").read_text()
    assert "timed a file since replaced" in (tmp_path / "r.html").read_text()


def test_a_record_joins_the_model_whose_sha256_it_carries(tmp_path: Path) -> None:
    """The sha256 first: a record of erm's file (since moved to another folder) is erm's, wherever the path points;
    a record with the sha256 of the file at its path, or without a sha256, is joined by its path as before."""
    _fp32_export(tmp_path / "in" / "erm", "a" * 64, "erm")
    fm = _fp32_export(tmp_path / "in" / "fm", "b" * 64, "fm")
    _bench(fm / "model.fp32.onnx", "a" * 64).append_to(tmp_path / "in" / "moved.jsonl")
    _bench(fm / "model.fp32.onnx", "b" * 64).model_copy(update={"batch": 2}).append_to(tmp_path / "in" / "b.jsonl")
    _bench(fm / "model.fp32.onnx", None).model_copy(update={"batch": 4}).append_to(tmp_path / "in" / "c.jsonl")
    data = collect([tmp_path / "in"])
    assert {p.batch: p.student for p in data.points} == {1: "test_resnet (erm)", 2: "test_resnet (fm)",
                                                         4: "test_resnet (fm)"}
    assert data.unmatched == 0 and data.warnings == []


def test_a_half_written_record_is_skipped_with_one_warning_naming_it(tmp_path: Path, capsys) -> None:
    """An interrupted export or bench leaves a half-written export.json or .jsonl line; a corrupt qad.json: the
    report said `error:` and wrote nothing. Each is left out with one `warning:` line naming the file (and line);
    the report is built from the rest."""
    good = _fp32_export(tmp_path / "in" / "erm", "a" * 64, "erm")
    bad = _fp32_export(tmp_path / "in" / "fm", "b" * 64, "fm")
    text = (bad / "export.json").read_text()
    (bad / "export.json").write_text(text[:len(text) // 2])  # cut off mid-write
    (tmp_path / "in" / "qad").mkdir()
    (tmp_path / "in" / "qad" / "qad.json").write_text('{"checkpoint": ')
    bench = tmp_path / "in" / "bench.jsonl"
    _bench(good / "model.fp32.onnx", "a" * 64).append_to(bench)
    _bench(good / "model.fp32.onnx", "a" * 64).model_copy(update={"batch": 8}).append_to(bench)
    line = bench.read_text().splitlines()[0]
    bench.write_text(bench.read_text() + line[:40] + "\n")  # line 3: the record being written when stopped
    assert main(["report", str(tmp_path / "in"), "--out", str(tmp_path / "r.html")]) == 0
    warnings = [w for w in capsys.readouterr().err.splitlines() if w.startswith("warning: ")]
    assert len(warnings) == 3, warnings
    assert any(w.startswith(f"warning: {bad / 'export.json'}: invalid JSON") for w in warnings), warnings
    assert any(w.startswith(f"warning: {tmp_path / 'in' / 'qad' / 'qad.json'}: invalid JSON") for w in warnings)
    assert any(w.startswith(f"warning: {bench}:3: invalid JSON") and w.endswith("skipped that line") for w in warnings)
    data = collect([tmp_path / "in"])
    assert [e.dir for e in data.exports] == [str(good)] and data.qad == []
    assert sorted(p.batch for p in data.points) == [1, 8] and data.unmatched == 0
    assert str(bad) not in data.sources and str(bench) in data.sources
    assert f"{bad / 'export.json'}: invalid JSON" in (tmp_path / "r.md").read_text()


def test_a_binary_record_or_bench_file_is_skipped_with_one_warning(tmp_path: Path, capsys) -> None:
    """Review 25 M1: a non-UTF-8 export.json, qad.json or .jsonl (every .jsonl under a folder is read) was a
    UnicodeDecodeError traceback and no report. Each is left out with one warning, as a half-written one is."""
    good = _fp32_export(tmp_path / "in" / "erm", "a" * 64, "erm")
    bad = _fp32_export(tmp_path / "in" / "fm", "b" * 64, "fm")
    (bad / "export.json").write_bytes(b'{"format": "\xff\xfe\x00')
    (tmp_path / "in" / "qad").mkdir()
    (tmp_path / "in" / "qad" / "qad.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    bench = tmp_path / "in" / "b.jsonl"
    _bench(good / "model.fp32.onnx", "a" * 64).append_to(bench)
    with open(bench, "ab") as f:
        f.write(b'{"schema": "\xff"}\n')  # line 2: one corrupt line among records
    (tmp_path / "in" / "c.jsonl").write_bytes(b"\xff\xfe garbage\n")
    assert main(["report", str(tmp_path / "in"), "--out", str(tmp_path / "r.html")]) == 0
    warnings = [w for w in capsys.readouterr().err.splitlines() if w.startswith("warning: ")]
    assert len(warnings) == 4, warnings
    assert any(w.startswith(f"warning: {bad / 'export.json'}: not UTF-8 text") for w in warnings), warnings
    assert any(w.startswith(f"warning: {tmp_path / 'in' / 'qad' / 'qad.json'}: not UTF-8 text") for w in warnings)
    assert any(w.startswith(f"warning: {bench}:2: not UTF-8 text") for w in warnings), warnings
    assert any(w.startswith(f"warning: {tmp_path / 'in' / 'c.jsonl'}:1: not UTF-8 text") for w in warnings)
    data = collect([tmp_path / "in"])
    assert [e.dir for e in data.exports] == [str(good)] and [p.batch for p in data.points] == [1]


def test_every_line_of_a_bench_file_that_is_not_a_record_is_one_warning(tmp_path: Path) -> None:
    """A .jsonl of something else (many bad lines) is one warning listing the lines, not one per line."""
    _bench(tmp_path / "m.onnx", None).append_to(tmp_path / "bench.jsonl")
    (tmp_path / "other.jsonl").write_text("".join(f'{{"step": {i}}}\n' for i in range(7)))
    data = collect([tmp_path])
    assert len(data.records) == 1
    [warning] = data.warnings
    assert warning.startswith(f"{tmp_path / 'other.jsonl'}: 7 lines are not bench records (lines 1, 2, 3, 4, 5 ...)")
    assert f"the first: {tmp_path / 'other.jsonl'}:1: " in warning


def test_when_every_input_is_unreadable_the_report_is_refused(tmp_path: Path, capsys) -> None:
    bad = _fp32_export(tmp_path / "in" / "fm", "b" * 64, "fm")
    (bad / "export.json").write_text((bad / "export.json").read_text()[:30])
    (tmp_path / "in" / "bench.jsonl").write_text('{"schema": "distill.bench/1", "mod\n')
    assert main(["report", str(tmp_path / "in"), "--out", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: nothing to report: every input is unreadable: "), err
    assert str(bad / "export.json") in err and "(and 1 more)" in err
    assert not (tmp_path / "r.html").exists()


def test_a_readable_empty_input_is_not_called_unreadable(tmp_path: Path) -> None:
    """Review 25 L7: "every input is unreadable" was said when an empty (readable) .jsonl was among the inputs."""
    bad = _fp32_export(tmp_path / "in" / "fm", "b" * 64, "fm")
    (bad / "export.json").write_text((bad / "export.json").read_text()[:30])
    (tmp_path / "in" / "bench.jsonl").write_text("")
    with pytest.raises(DistillError) as e:
        collect([tmp_path / "in"])
    assert str(e.value).startswith(f"nothing to report: 1 of 2 inputs are unreadable, and the others hold no record: "
                                   f"{bad / 'export.json'}: invalid JSON"), e.value


def test_the_paths_may_be_a_generator(tmp_path: Path) -> None:
    """Review 25 L7: write_report read ``paths`` twice; a generator's second pass, the message's, was empty."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(DistillError) as e:
        write_report((p for p in [tmp_path / "empty"]), tmp_path / "r.html")
    assert str(e.value).endswith(f" found under {tmp_path / 'empty'}")


def test_the_python_api_writes_the_report_and_returns_what_went_in(tmp_path: Path) -> None:
    """distill.api.report: one folder or several, the same files and counts as `distill report`, typed."""
    from distill import api

    runs = [write_run(tmp_path / "in" / f"r{s}", strategy="erm", acc={"clean": 0.9, "dark": 0.5}, seed=s) for s in (0, 1)]
    one = api.report(tmp_path / "in", tmp_path / "a.html", "api")
    both = api.report([str(r) for r in runs], tmp_path / "b.html")
    assert (one.html, one.markdown, one.runs, one.exports, one.warnings) == (
        tmp_path / "a.html", tmp_path / "a.md", 2, 0, ())
    assert both.runs == 2 and both.markdown.read_text().startswith("# distill report")
    assert "<title>api</title>" in one.html.read_text()
