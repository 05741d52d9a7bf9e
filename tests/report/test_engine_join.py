"""TensorRT engine records join their export through export.json's tensorrt.engines (QA finding 1)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.bench.edge_runner import SCHEMA
from distill.records import BenchRecord, ExportedModel, ExportReport
from distill.report.write import collect

ACC = {"clean": 0.9, "noisy": 0.6}
FILES = {"model.fp32.onnx": ("fp32", None, 0.0), "model.fp16.onnx": ("fp16", None, 0.01),
         "model.int8-tensorrt.onnx": ("int8", "tensorrt", 0.05)}
ENGINES = [{"onnx": "model.fp32.onnx", "onnx_strongly_typed": "model.fp32.onnx", "engine": "model.fp32.engine",
            "precision": "fp32"},
           {"onnx": "model.fp32.onnx", "onnx_strongly_typed": "model.fp16.onnx", "engine": "model.fp16.engine",
            "precision": "fp16"},
           {"onnx": "model.int8-tensorrt.onnx", "onnx_strongly_typed": "model.int8-tensorrt.onnx",
            "engine": "model.int8.engine", "precision": "int8"}]


def write_export(folder: Path, tag: str, engines: list[dict[str, Any]] = ENGINES, built_here: bool = False) -> Path:
    """An export.json with the three ONNX files and the engines build_engine.sh makes of them."""
    folder.mkdir(parents=True)
    models = [ExportedModel(file=f, bytes=1000, sha256=f"{tag}{i}" * 32, precision=prec, runtime="onnxruntime",
                            flavour=flav, accuracy={d: a - drop for d, a in ACC.items()})
              for i, (f, (prec, flav, drop)) in enumerate(FILES.items())]
    ExportReport(**{
        "format": "distill.export/1", "created": "2026-01-01T00:00:00", "status": "ok", "student": "resnet18",
        "class_names": ["a", "b"], "input": {"shape": [1, 3, 32, 32]}, "preprocess": {}, "checkpoint": "/ck/best",
        "models": models, "provenance": {"strategy": "erm", "checkpoint_sha256": "cd" * 32},
        "data": {"eval_count": {d: 100 for d in ACC}},
        "tensorrt": {"build_script": "build_engine.sh", "engines": engines, "batches": [1, 8, 32],
                     "built_here": built_here, "check_files": []}}).write(folder)
    return folder


def engine_record(model: str, sha: str = "ee" * 32) -> BenchRecord:
    """What edge_runner.py --runtime tensorrt writes: no model metadata, the engine's own sha256."""
    return BenchRecord(**{
        "schema": SCHEMA, "model": model, "model_name": Path(model).name, "model_sha256": sha, "model_meta": {},
        "runtime": "tensorrt", "batch": 1, "input_shape": [1, 3, 32, 32], "threads": 1, "warmup": 3, "iters": 20,
        "latency_ms": {"mean": 0.7, "std": 0.02, "min": 0.68, "p50": 0.7, "p90": 0.74, "p99": 0.77, "max": 0.77},
        "throughput_ips": 1400.0, "timestamp": "2026-01-01T00:00:00+0000",
        "device": {"jetson": {"board": "Jetson Orin Nano"}, "gpus": [{"name": "Orin"}]}})


def test_an_engine_timed_in_its_export_folder_gets_the_accuracy_of_its_onnx(tmp_path: Path) -> None:
    ex = write_export(tmp_path / "exp", "1")
    engine_record(str(ex / "model.int8.engine")).append_to(tmp_path / "trt.jsonl")
    engine_record(str(ex / "model.fp16.engine"), "ff" * 32).append_to(tmp_path / "trt.jsonl")
    data = collect([ex, tmp_path / "trt.jsonl"])
    by_model = {Path(p.model).name: p for p in data.points}
    int8 = by_model["model.int8.engine"]
    assert int8.precision == "int8/tensorrt"
    assert int8.accuracy == {d: a - 0.05 for d, a in ACC.items()}
    assert int8.student == "resnet18 (erm)" and int8.count == {d: 100 for d in ACC}
    assert int8.note == "TensorRT engine of model.int8-tensorrt.onnx"
    fp16 = by_model["model.fp16.engine"]  # from the fp32 ONNX on TensorRT 10, but fp16: the fp16 file's accuracy
    assert fp16.precision == "fp16" and fp16.accuracy == {d: a - 0.01 for d, a in ACC.items()}
    assert data.unmatched == 0
    assert {m.label for m in data.records} == {"resnet18 (erm) · int8/tensorrt · TensorRT engine of model.int8-tensorrt.onnx",
                                              "resnet18 (erm) · fp16 · TensorRT engine of model.fp16.onnx"}


def test_an_engine_timed_on_the_device_joins_the_export_its_jsonl_lies_in(tmp_path: Path) -> None:
    a, b = write_export(tmp_path / "a", "1"), write_export(tmp_path / "b", "2")
    engine_record("/home/nvidia/exp/model.int8.engine").append_to(b / "bench.jsonl")
    engine_record("/home/nvidia/other/model.int8.engine", "dd" * 32).append_to(tmp_path / "loose.jsonl")
    data = collect([a, b, tmp_path / "loose.jsonl"])
    joined = [p for p in data.points if p.accuracy]
    assert len(joined) == 1 and joined[0].precision == "int8/tensorrt"
    # the same file name, from a .jsonl beside no export: every export has a model.int8.engine, so it joins none
    assert data.unmatched == 1


def test_an_engine_built_by_the_export_joins_by_its_sha256_and_a_rebuilt_one_does_not(tmp_path: Path) -> None:
    engines = [dict(e, sha256=f"{i}a" * 32) for i, e in enumerate(ENGINES)]
    ex = write_export(tmp_path / "exp", "1", engines, built_here=True)
    engine_record("/elsewhere/copy.engine", "2a" * 32).append_to(tmp_path / "trt.jsonl")  # the int8 engine, copied
    engine_record(str(ex / "model.fp32.engine"), "99" * 32).append_to(tmp_path / "trt.jsonl")  # rebuilt since
    data = collect([ex, tmp_path / "trt.jsonl"])
    by_model = {Path(p.model).name: p for p in data.points}
    assert by_model["copy.engine"].precision == "int8/tensorrt" and by_model["copy.engine"].accuracy
    assert by_model["model.fp32.engine"].accuracy is None


def _two_exports_timed(tmp_path: Path) -> tuple[Path, Path]:
    """TMP/exp_a and TMP/exp_b, each with its fp32 file timed on ort-cpu, exp_a's int8 engine timed, and a loose
    file joined to no export, all in TMP/bench.jsonl."""
    a, b = write_export(tmp_path / "exp_a", "1"), write_export(tmp_path / "exp_b", "2")
    for folder, tag in ((a, "1"), (b, "2")):
        record = engine_record(str(folder / "model.fp32.onnx"), f"{tag}0" * 32)
        record.model_copy(update={"runtime": "ort-cpu"}).append_to(tmp_path / "bench.jsonl")
    engine_record(str(tmp_path / "loose" / "fixed1.onnx"), "77" * 32).model_copy(update={"runtime": "ort-cpu"}).append_to(
        tmp_path / "bench.jsonl")  # an ONNX file: timed by ONNX Runtime (a tensorrt record's note says how to join it)
    engine_record(str(a / "model.int8.engine")).append_to(tmp_path / "bench.jsonl")
    return a, b


def test_report_md_names_each_measurement_s_file_and_marks_the_unjoined(tmp_path: Path) -> None:
    """QA finding 8: two fp32 rows of two exports could not be told apart in report.md, and a file joined to no
    export looked like any other row."""
    from distill.report.write import write_report

    a, b = _two_exports_timed(tmp_path)
    md = Path(write_report([tmp_path], tmp_path / "r.html").markdown).read_text()
    rows = md[md.index("## All measurements"):].split("\n\n")[1].splitlines()
    assert rows[0] == "| batch | student | precision | runtime | file | p50 ms | p90 ms | p99 ms | accuracy % |"
    files = [row.split(" | ")[4] for row in rows[2:]]
    assert sorted(files) == ["exp_a/model.fp32.onnx", "exp_a/model.int8.engine (TensorRT engine of model.int8-tensorrt.onnx)",
                             "exp_b/model.fp32.onnx", "loose/fixed1.onnx (not joined to an export or run)"]


def test_report_html_names_each_record_s_file_as_report_md_does(tmp_path: Path) -> None:
    """report.html's latency table: a file column saying what report.md's does (short; the full path on hover), so two
    fp32 rows of two exports differ and a record joined to no export says so there too."""
    import html
    import re

    from distill.report.write import write_report

    a, b = _two_exports_timed(tmp_path)
    written = write_report([tmp_path], tmp_path / "r.html")
    page = Path(written.html).read_text()
    table = page[page.index("<h3>All records"):]
    table = table[:table.index("</table>")]

    def text(cell: str) -> str:
        return html.unescape(re.sub(r"<[^>]+>", "", cell))

    head = [text(c) for c in re.findall(r"<th[^>]*>(.*?)</th>", table)]
    assert head[:3] == ["model", "file", "runtime"]
    rows = [re.findall(r'<td([^>]*)>(.*?)</td>', row) for row in re.findall(r"<tr><td.*?</tr>", table)]
    html_rows = {(text(r[0][1]), text(r[1][1])) for r in rows}
    assert html_rows == {("resnet18 (erm) · fp32", "exp_a/model.fp32.onnx"), ("resnet18 (erm) · fp32", "exp_b/model.fp32.onnx"),
                         ("resnet18 (erm) · int8/tensorrt",
                          "exp_a/model.int8.engine (TensorRT engine of model.int8-tensorrt.onnx)"),
                         ("? · ?", "loose/fixed1.onnx (not joined to an export or run)")}  # no metadata: not fp32
    titles = {html.unescape(re.search(r'title="([^"]*)"', r[1][0]).group(1)) for r in rows}  # the full path on hover
    assert titles == {str(a / "model.fp32.onnx"), str(b / "model.fp32.onnx"), str(a / "model.int8.engine"),
                      str(tmp_path / "loose" / "fixed1.onnx")}
    md = Path(written.markdown).read_text()  # report.md's rows say the same: student · precision, file
    md_rows = [row.split(" | ") for row in md[md.index("## All measurements"):].split("\n\n")[1].splitlines()[2:]]
    assert {(f"{r[1]} · {r[2]}", r[4]) for r in md_rows} == html_rows


def test_one_thread_count_is_named_once_above_the_table_not_in_a_column(tmp_path: Path) -> None:
    """The demo's report overflowed its card at 800 px (760 > 750) once the file column came in; a column that says
    the same for every row (every demo record runs at 1 thread) moves into the heading, as one device already did."""
    from distill.report.write import write_report

    a, _ = _two_exports_timed(tmp_path)  # every record at 1 thread
    page = Path(write_report([tmp_path], tmp_path / "one.html").html).read_text()
    table = page[page.index("<h3>All records"):page.index("</table>", page.index("<h3>All records"))]
    assert "<th>threads</th>" not in table and "threads: 1</span></h3>" in table
    engine_record(str(a / "model.fp16.engine"), "ff" * 32).model_copy(update={"threads": 4}).append_to(
        tmp_path / "bench.jsonl")
    page = Path(write_report([tmp_path], tmp_path / "two.html").html).read_text()
    table = page[page.index("<h3>All records"):page.index("</table>", page.index("<h3>All records"))]
    assert "<th>threads</th>" in table and "threads:" not in table


def test_the_pareto_table_and_chart_name_each_point_s_file_as_the_latency_table_does(tmp_path: Path) -> None:
    """The Pareto tables (report.md, report.html), the chart's key and its points' hover text named no file: the two
    exports' fp32 points both read 'resnet18 (erm) · fp32'. They name it as data.file_cell does in the latency table."""
    import html
    import re

    from distill.report.data import file_cell
    from distill.report.write import write_report

    _two_exports_timed(tmp_path)
    front = {file_cell(p.file, p.note) for p in collect([tmp_path]).points if p.pareto}
    assert {"exp_a/model.fp32.onnx", "exp_b/model.fp32.onnx"} <= front
    written = write_report([tmp_path], tmp_path / "r.html")
    md = Path(written.markdown).read_text()
    rows = [r for r in md[md.index("## Pareto front"):md.index("## All measurements")].splitlines() if r.startswith("|")]
    assert rows[0] == "| batch | student | precision | runtime | file | device | p50 ms | p99 ms | accuracy % |"
    assert {r.split(" | ")[4] for r in rows[2:]} == front
    page = Path(written.html).read_text()
    section = page[page.index('<section id="pareto">'):page.index("</section>", page.index('<section id="pareto">'))]

    def text(cell: str) -> str:
        return html.unescape(re.sub(r"<[^>]+>", "", cell))

    table = section[section.index("<table"):]
    assert [text(c) for c in re.findall(r"<th[^>]*>(.*?)</th>", table)][:2] == ["model", "file"]
    assert {text(re.findall(r"<td[^>]*>(.*?)</td>", row)[1]) for row in re.findall(r"<tr><td.*?</tr>", table)} == {
        file_cell(p.file, p.note) for p in collect([tmp_path]).points}
    key = [text(li) for li in re.findall(r"<li>(.*?)</li>", section[section.index('<ol class="key"'):])]
    assert [k for k in key if k.endswith(" exp_a/model.fp32.onnx")] and [k for k in key if k.endswith(" exp_b/model.fp32.onnx")]
    titles = [html.unescape(t) for t in re.findall(r"<title>(.*?)</title>", section)]
    assert any("exp_a/model.fp32.onnx" in t for t in titles) and any("exp_b/model.fp32.onnx" in t for t in titles)
