"""File names that are not UTF-8 (QA K F2): one line naming the file with its bytes escaped, or, with skip_bad,
the file left out and named; never a traceback from deep in the listing."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from distill.cli import main
from distill.data.folder import DomainFolder, list_images
from distill.data.unlabeled import add_folders, scan_folder
from distill.errors import DistillError
from tests.shapes import make_shapes_root

LATIN1 = b"caf\xe9_latin1.jpg"  # a Latin-1 name, as an old Windows machine or a zip archive writes it


def _latin1_file(folder: Path, name: bytes = LATIN1) -> str:
    """Write a valid image under a non-UTF-8 name; return how messages show it (the byte as \\xe9)."""
    path = os.path.join(os.fsencode(folder), name)
    Image.new("RGB", (8, 8), (9, 9, 9)).save(os.fsdecode(path), format="PNG")
    return path.decode("utf-8", "backslashreplace")


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return make_shapes_root(tmp_path / "data", ["red", "green"], per_class=2)


def test_a_non_utf8_file_name_is_one_line_naming_it(root):
    clean = DomainFolder(root)
    shown = _latin1_file(root / "red" / "square")
    assert shown == f"{root}/red/square/caf\\xe9_latin1.jpg"
    with pytest.raises(DistillError) as e:
        DomainFolder(root)
    assert str(e.value) == (f"{shown}: file name is not valid UTF-8 (its undecodable bytes shown as \\xNN); rename it, "
                            "or pass --skip-bad to leave it out")
    _latin1_file(root / "green" / "circle", b"\xff.png")
    with pytest.raises(DistillError, match=rf"; 2 such files under {root} \(`distill data summary {root}` lists "
                                           r"them\); rename it"):
        DomainFolder(root)
    # skip_bad: both left out and named; nothing else changes (samples, classes, fingerprint)
    ds = DomainFolder(root, skip_bad=True)
    assert ds.samples == clean.samples and ds.fingerprint() == clean.fingerprint()
    # named as the data set names its images, ROOT-relative (as skip_undecodable names them): a warning joining both
    # lists names ROOT once (full paths beside relative ones read as two data sets)
    assert ds.left_out() == [("green/circle/\\xff.png", "file name is not valid UTF-8"),
                             ("red/square/caf\\xe9_latin1.jpg", "file name is not valid UTF-8")]
    assert list_images(root)[1].unnamed == (f"{root}/green/circle/\\xff.png", shown)


@pytest.mark.parametrize("what", ["domain", "class"])
def test_a_non_utf8_domain_or_class_folder_is_refused_even_with_skip_bad(root, what):
    parent = root if what == "domain" else root / "red"
    images = os.path.join(os.fsencode(parent), b"d\xe9", *([b"cls"] if what == "domain" else []))
    os.makedirs(images)
    Image.new("RGB", (8, 8)).save(os.fsdecode(os.path.join(images, b"x.png")))
    with pytest.raises(DistillError) as e:
        DomainFolder(root, skip_bad=True)
    assert str(e.value) == (f"{parent}/d\\xe9: {what} folder name is not valid UTF-8 (its undecodable bytes shown "
                            f"as \\xNN); rename the folder (it names a {what}: --skip-bad cannot leave it out)")


def test_an_unlabeled_folder_refuses_or_leaves_out_a_non_utf8_name(root, tmp_path):
    cam = tmp_path / "cam"
    cam.mkdir()
    Image.new("RGB", (8, 8)).save(cam / "a.png")
    shown = _latin1_file(cam)
    with pytest.raises(DistillError) as e:
        scan_folder(str(cam), root, "data.unlabeled")
    assert str(e.value).startswith(f"{cam.resolve()}/caf\\xe9_latin1.jpg: file name is not valid UTF-8")
    folder = scan_folder(str(cam), root, "data.unlabeled", skip_bad=True)
    assert [rel for rel, _ in folder.rows()] == ["a.png"] and folder.unnamed == (f"{cam.resolve()}/caf\\xe9_latin1.jpg",)
    assert folder.files_sha256() == scan_folder(str(cam), root, "k", skip_bad=True).files_sha256()
    ds = DomainFolder(root)
    add_folders(ds, [folder])
    assert [s.relpath for s in ds.select(["cam"])] == ["cam/a.png"] and ds.unnamed == [shown.replace(
        str(cam), str(cam.resolve()))]
    assert ds.left_out() == [("cam/caf\\xe9_latin1.jpg", "file name is not valid UTF-8")]  # as its images: cam/a.png


def test_data_summary_names_every_such_file_and_goes_on(root, capsys):
    shown = _latin1_file(root / "red" / "square")
    assert main(["data", "summary", str(root)]) == 0
    got = capsys.readouterr()
    assert got.err.splitlines()[:2] == [
        "warning: 1 image(s) left out below (file name is not valid UTF-8; every other command refuses them unless "
        "--skip-bad; rename them):", f"  {shown}"]
    assert f"{root}: 2 domains, 3 classes, 12 images" in got.out


def test_cache_build_refuses_in_one_line_and_skips_with_skip_bad(root, tmp_path, capsys):
    shown = _latin1_file(root / "red" / "square")
    argv = ["cache", "build", "--data", str(root), "--out", str(tmp_path / "c"), "--arch", "distill-demo-vit",
            "--pretrained", "none", "--workers", "0", "--no-progress"]
    assert main(argv) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: {shown}: file name is not valid UTF-8 (its undecodable bytes shown as \\xNN); rename it, or pass "
        "--skip-bad to leave it out"]
    assert main(argv + ["--skip-bad"]) == 0
    got = capsys.readouterr()
    assert (f"warning: 1 image(s) left out, not cached (file name is not valid UTF-8; rename them to cache them): "
            f"{shown}") in got.err.splitlines()
    assert f"teacher cache written: {tmp_path / 'c'} (12 rows = 12 images x 1 view(s), 1 shard(s))" in got.out


def test_many_such_names_are_counted_not_all_listed_by_cache_build(root, tmp_path, capsys):
    """Review 4 L2: every name went into one stderr line (unreadable at 10^5 names); ten are shown, and a count."""
    for k in range(12):
        _latin1_file(root / "red" / "square", b"caf\xe9%d.png" % k)
    argv = ["cache", "build", "--data", str(root), "--out", str(tmp_path / "c"), "--arch", "distill-demo-vit",
            "--pretrained", "none", "--workers", "0", "--no-progress", "--skip-bad"]
    assert main(argv) == 0
    line = next(x for x in capsys.readouterr().err.splitlines() if "left out, not cached" in x)
    assert line.startswith("warning: 12 image(s) left out") and line.count("caf\\xe9") == 10
    assert line.endswith(f" and 2 more (`distill data summary {root}` lists them all)"), line


def test_a_left_out_line_names_root_once_and_at_most_ten_files():
    from distill.data.listing import left_out_line

    left = [(f"d/c/{k}.png", "empty file") for k in range(12)]
    line = left_out_line("bad image(s) left out", "/data/root", left)
    assert line.startswith("12 bad image(s) left out (paths under /data/root): d/c/0.png (empty file), d/c/1.png")
    assert line.endswith("d/c/9.png (empty file) and 2 more") and line.count("/data/root") == 1
    assert left_out_line("skipped", "R", ["a.png"]) == "1 skipped (paths under R): a.png"
