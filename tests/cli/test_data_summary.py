"""``distill data summary``: a data set whose domains name their class folders differently, with no class map,
says so in one line instead of listing every folder name as a class with the rest "missing"."""
from __future__ import annotations

from pathlib import Path

from distill.cli import main
from tests.shapes import make_shapes_root


def _summary(root: Path, capsys, *extra: str) -> list[str]:
    """The lines of stdout and stderr together (the tests below look for notes wherever they went)."""
    assert main(["data", "summary", str(root), *extra]) == 0
    got = capsys.readouterr()
    return got.out.splitlines() + got.err.splitlines()


def test_differing_class_folders_without_a_class_map_suggest_one(tmp_path, capsys):
    root = make_shapes_root(tmp_path / "d", ["red", "green"], per_class=2)
    (root / "green" / "circle").rename(root / "green" / "round")  # the same class, another folder name
    notes = [ln for ln in _summary(root, capsys) if ln.startswith("note: ")]
    assert notes == ["note: no class map found (--class-map FILE, or ROOT/classnames.yaml) and the domains' class "
                     "folders differ (2 of 4 in every domain): if some name the same class, map them with "
                     "--class-map FILE ('DOMAIN/folder: name')"]
    cmap = tmp_path / "map.yaml"
    cmap.write_text("green/round: circle\n")
    assert not [ln for ln in _summary(root, capsys, "--class-map", str(cmap)) if ln.startswith("note: ")]


def test_same_class_folders_need_no_note(tmp_path, capsys):
    root = make_shapes_root(tmp_path / "d", ["red", "green"], per_class=2)
    assert not [ln for ln in _summary(root, capsys) if ln.startswith("note: ")]


def test_the_note_goes_to_stderr_and_stdout_keeps_the_results(tmp_path, capsys):
    """Notes and warnings on stderr, results on stdout (cli/__init__.py): `data summary | head` shows the table."""
    root = make_shapes_root(tmp_path / "d", ["red", "green"], per_class=2)
    (root / "green" / "circle").rename(root / "green" / "round")
    assert main(["data", "summary", str(root)]) == 0
    got = capsys.readouterr()
    assert [ln for ln in got.err.splitlines() if ln.startswith("note: no class map found")]
    assert "note:" not in got.out
    assert got.out.splitlines()[-1].startswith("fingerprint: ")  # the results are all still there
