"""QA G F14: ``report('runs/kd', 'b2.jsonl')`` (the API's second positional is the output) turned the bench file into
HTML, and ``distill report runs/kd exp/kd --out runs/kd/summary.json`` replaced the run's summary. The report's
output is now never a record's name, nor an existing file other than a report this tool wrote (so never one of its
inputs): one line naming it, nothing written. Rewriting its own earlier report still works."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.cli import main
from distill.errors import DistillError
from distill.report.write import write_report

from .conftest import write_run

REPORT_MARK = "<!-- written by distill report -->\n"  # distill.outputs.REPORT_MARK: the last line of both files
BENCH_LINE = json.dumps({"schema": "distill.bench/1", "model": "/x/model.fp32.onnx"}) + "\n"


def _run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "runs" / "kd", strategy="kd", acc={"clean": 0.9, "dark": 0.8}, seed=0)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_api_refuses_an_input_bench_file_as_the_output(tmp_path: Path) -> None:
    from distill.api import report

    run = _run(tmp_path)
    bench = tmp_path / "b2.jsonl"
    bench.write_text(BENCH_LINE)
    before = _snapshot(tmp_path)
    with pytest.raises(DistillError) as e:
        report(str(run), str(bench))  # meant: report([run, bench])
    assert str(e.value).startswith(f"{bench}: a record's suffix (.jsonl); the report's output is an .html file"), e.value
    assert _snapshot(tmp_path) == before  # neither b2.jsonl nor a b2.md touched


@pytest.mark.parametrize("name", ["summary.json", "summary", "config.yaml"])
def test_the_cli_refuses_a_runs_record_as_the_output(tmp_path: Path, capsys, name: str) -> None:
    """``--out RUN/summary.json``; ``--out RUN/summary`` wrote RUN/summary.html (fine) and RUN/summary.md (fine too:
    not a record); ``--out RUN/config.yaml`` replaced the run's config."""
    run = _run(tmp_path)
    before = _snapshot(tmp_path)
    rc = main(["report", str(run), "--out", str(run / name)])
    err = capsys.readouterr().err.strip().splitlines()
    if name == "summary":
        assert rc == 0 and (run / "summary.html").is_file() and (run / "summary.md").is_file()
        return
    assert rc == 1 and len(err) == 1, err
    assert err[0].startswith(f"error: {run / name}: a record's name ({name}); "), err
    assert _snapshot(tmp_path) == before


def test_an_existing_file_that_is_not_a_report_is_refused_html_or_markdown(tmp_path: Path) -> None:
    run = _run(tmp_path)
    page = tmp_path / "page.html"
    page.write_text("<!DOCTYPE html><html><body>my page</body></html>")
    with pytest.raises(DistillError, match=r"page.html: exists and is not a report distill report wrote"):
        write_report([run], page)
    assert page.read_text().endswith("my page</body></html>")
    notes = tmp_path / "notes.md"  # the Markdown beside an HTML name not yet there: the user's notes
    notes.write_text("# my notes\n")
    with pytest.raises(DistillError, match=r"notes.md: exists and is not a report distill report wrote"):
        write_report([run], tmp_path / "notes.html")
    assert notes.read_text() == "# my notes\n" and not (tmp_path / "notes.html").exists()


def test_a_report_replaces_its_own_earlier_report_marked_or_not(tmp_path: Path) -> None:
    run = _run(tmp_path)
    out = tmp_path / "rep" / "report.html"
    first = write_report([run], out)
    assert first.html.read_text().endswith(REPORT_MARK) and first.markdown.read_text().endswith(REPORT_MARK)
    assert first.html.read_text().lstrip().lower().startswith("<!doctype html")
    again = write_report([run], out, title="again")  # rerun into its own output: replaced
    assert "again" in again.html.read_text() and again.markdown.read_text().startswith("# again")
    for path in (again.html, again.markdown):  # a report written before the mark: still a report to replace
        path.write_text(path.read_text().removesuffix(REPORT_MARK))
    third = write_report([run], out, title="third")
    assert third.markdown.read_text().startswith("# third")
