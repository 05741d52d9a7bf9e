"""report.md's "All measurements" table had no threads, which only report.html's latency table showed: it shows them
as that table does (:meth:`BenchRecord.threads_label`): a column where the records' threads differ, else named once,
with how they are known (report.html: on hover)."""
from __future__ import annotations

import json
from pathlib import Path

from distill.bench.edge_runner import ORT_POOL_COUNTED
from distill.report.write import write_report

from .test_engine_join import engine_record, write_export


def _tables(tmp_path: Path) -> tuple[list[str], str, str]:
    """report.md's All measurements table (its lines), the text after it, and report.html's All records table."""
    written = write_report([tmp_path], tmp_path / "r.html")
    md = written.markdown.read_text()
    part = md[md.index("## All measurements"):].split("\n\n")
    html = written.html.read_text()
    return part[1].splitlines(), part[2], html[html.index("<h3>All records"):html.index("</table>", html.index("<h3>All records"))]


def test_records_of_several_thread_counts_get_a_threads_column(tmp_path: Path) -> None:
    folder = write_export(tmp_path / "exp", "1")
    asked = engine_record(str(folder / "model.fp32.onnx"), "10" * 32).model_copy(update={"runtime": "ort-cpu"})
    default = engine_record(str(folder / "model.int8-tensorrt.onnx"), "12" * 32).model_copy(update={
        "runtime": "ort-cpu", "threads": None, "threads_used": 2, "threads_basis": ORT_POOL_COUNTED})
    for r in (asked, default):
        r.append_to(tmp_path / "bench.jsonl")
    rows, _, html = _tables(tmp_path)
    head = rows[0].split(" | ")
    assert head[5] == "threads" and rows[1].count("|") == rows[0].count("|")
    cells = {r.split(" | ")[4]: r.split(" | ")[5] for r in rows[2:]}
    assert cells == {"exp/model.fp32.onnx": "1", "exp/model.int8-tensorrt.onnx": "2 (default)"}
    assert "<th>threads</th>" in html and ">2 (default)</span></td>" in html and '<td class="num">1</td>' in html


def test_one_thread_setting_is_named_once_with_its_basis(tmp_path: Path) -> None:
    folder = write_export(tmp_path / "exp", "1")
    record = engine_record(str(folder / "model.fp32.onnx"), "10" * 32).to_dict() | {
        "runtime": "ort-cpu", "threads": None, "threads_used": 2, "threads_basis": ORT_POOL_COUNTED}
    (tmp_path / "bench.jsonl").write_text(json.dumps(record) + "\n")
    rows, after, html = _tables(tmp_path)
    assert "threads" not in rows[0] and "<th>threads</th>" not in html  # one setting: no column, in both
    assert after == f"Threads: 2 (default) ({ORT_POOL_COUNTED})."
    assert "threads: <span" in html and ">2 (default)</span>" in html


def test_one_file_timed_at_two_thread_counts_is_told_apart_in_the_pareto_tables(tmp_path: Path) -> None:
    """A user who timed model.int8 at --threads 4 and again at --threads 1 (as the README's two bench commands do)
    got two identical rows in the Pareto section's table (model, file, precision, runtime), and report.md's front
    named the faster one without saying it ran on 4 threads: both now have a threads column where the points'
    threads differ (the front's key says it too)."""
    folder = write_export(tmp_path / "exp", "1")
    one = engine_record(str(folder / "model.fp32.onnx"), "10" * 32).model_copy(update={"runtime": "ort-cpu"})
    four = one.model_copy(update={"threads": 4, "latency_ms": one.latency_ms.model_copy(update={"p50": 0.5, "p90": 0.6})})
    for r in (one, four):
        r.append_to(tmp_path / "bench.jsonl")
    written = write_report([tmp_path], tmp_path / "r.html")
    md = written.markdown.read_text()
    front = md[md.index("## Pareto front"):md.index("## All measurements")].strip().splitlines()
    head = [c.strip() for c in front[-3].strip("|").split("|")]
    row = [c.strip() for c in front[-1].strip("|").split("|")]
    assert head[6] == "threads" and row[6] == "4" and row[7] == "0.5", front
    html = written.html.read_text()
    table = html[html.index('<section id="pareto">'):html.index("</section>", html.index('<section id="pareto">'))]
    assert "<th>threads</th>" in table and '<td class="num">4</td>' in table and '<td class="num">1</td>' in table
    assert "· threads 4</span></li>" in table
