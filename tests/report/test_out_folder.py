"""``distill report --out DIR`` / ``distill.report(paths, DIR)`` with DIR an existing folder writes DIR/report.html and
DIR/report.md (:func:`distill.outputs.report_files`), still refusing files there that are not reports it wrote.

Before: the API wrote DIR.html and DIR.md beside the folder, and the command refused the folder ("is a folder;
name a file").
"""
from __future__ import annotations

from pathlib import Path

import pytest

from distill.cli import main
from distill.errors import DistillError

from .conftest import write_run

REPORT_MARK = "<!-- written by distill report -->\n"  # distill.outputs.REPORT_MARK: the last line of both files


def _run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "runs" / "kd", strategy="kd", acc={"clean": 0.9, "dark": 0.8}, seed=0)


def test_the_api_writes_the_report_inside_an_existing_folder(tmp_path: Path) -> None:
    from distill.api import report

    run = _run(tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    res = report(run, site)
    assert (res.html, res.markdown) == (site / "report.html", site / "report.md")
    assert res.html.read_text().endswith(REPORT_MARK) and res.markdown.read_text().endswith(REPORT_MARK)
    assert not (tmp_path / "site.html").exists() and not (tmp_path / "site.md").exists()
    again = report(run, str(site), title="again")  # its own earlier report: replaced
    assert again.markdown.read_text().startswith("# again")


def test_the_cli_writes_the_report_inside_an_existing_folder(tmp_path: Path, capsys) -> None:
    run = _run(tmp_path)
    site = tmp_path / "site.v2"  # a folder whose name has a suffix is still a folder
    site.mkdir()
    assert main(["report", str(run), "--out", str(site)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {site / 'report.html'} and {site / 'report.md'}: 1 run(s)"), out
    assert sorted(p.name for p in site.iterdir()) == ["report.html", "report.md"]


@pytest.mark.parametrize("name", ["report.html", "report.md"])
def test_a_file_in_the_folder_that_is_not_a_report_is_refused(tmp_path: Path, name: str) -> None:
    from distill.api import report

    run = _run(tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    (site / name).write_text("my own notes\n")
    with pytest.raises(DistillError) as e:
        report(run, site)
    assert str(e.value) == (f"{site / name}: exists and is not a report distill report wrote; the report would "
                            "replace it: give another --out (or move the file away)")
    assert [p.name for p in site.iterdir()] == [name] and (site / name).read_text() == "my own notes\n"


def test_a_folder_named_report_html_inside_it_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    run = _run(tmp_path)
    site = tmp_path / "site"
    (site / "report.html").mkdir(parents=True)
    assert main(["report", str(run), "--out", str(site)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --out {site / 'report.html'}: is a folder; name a file"], err


@pytest.mark.parametrize("via", ["cli", "api"])
def test_a_trailing_separator_asks_for_a_folder_not_yet_there(tmp_path: Path, capsys, via: str) -> None:
    """``--out site_new/`` where site_new does not exist yet wrote site_new.html and site_new.md beside it (review 1,
    finding 7: the separator was lost with the Path); it makes the folder and writes report.html and report.md in it."""
    run = _run(tmp_path)
    site = tmp_path / "site_new"
    if via == "cli":
        assert main(["report", str(run), "--out", f"{site}/"]) == 0
        assert capsys.readouterr().out.startswith(f"wrote {site / 'report.html'} and {site / 'report.md'}: ")
    else:
        from distill.api import report

        res = report(run, f"{site}/")
        assert (res.html, res.markdown) == (site / "report.html", site / "report.md")
    assert (site / "report.html").read_text().endswith(REPORT_MARK)
    assert (site / "report.md").read_text().endswith(REPORT_MARK)
    assert not (tmp_path / "site_new.html").exists() and not (tmp_path / "site_new.md").exists()
