"""`distill report ... --out rep` (QA F10): a name without a suffix wrote an HTML file named ``rep`` (no browser opens it
as a page by its name) next to ``rep.md``. It now writes ``rep.html`` and ``rep.md``; a named suffix is kept."""
from __future__ import annotations

from pathlib import Path

from distill.report.write import write_report

from .conftest import write_run


def test_an_out_name_without_a_suffix_gets_html(tmp_path: Path) -> None:
    write_run(tmp_path / "run", strategy="kd", acc={"clean": 0.9, "dark": 0.8}, seed=0)
    res = write_report([tmp_path / "run"], tmp_path / "rep")
    assert res.html == tmp_path / "rep.html" and res.markdown == tmp_path / "rep.md"
    assert (tmp_path / "rep.html").read_text().lstrip().lower().startswith("<!doctype html")
    assert not (tmp_path / "rep").exists()
    kept = write_report([tmp_path / "run"], tmp_path / "page.htm")
    assert kept.html == tmp_path / "page.htm" and kept.markdown == tmp_path / "page.md"
