"""The listing walks each folder once with ``os.scandir`` (QA s27 D): the same files in the same order, the same
sizes and so the same fingerprints as the ``Path.rglob`` walk before it, at most one stat per file; and a root
or unlabeled folder whose own path is not UTF-8."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from distill.cli import main
from distill.data.folder import DomainFolder, list_images
from distill.data.unlabeled import add_folders, scan_folder
from tests.shapes import make_shapes_root


def _file(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)  # never decoded: the listing reads names and sizes only


def tricky_tree(top: Path) -> tuple[Path, Path]:
    """(ROOT, an unlabeled folder): nesting, name orders where '.' sorts before '/', upper-case and other
    extensions, hidden files and folders, links to files, folders and nothing, files beside the domains."""
    root, cam = top / "root", top / "cam"
    k = 0
    for rel in ["a/cat/1.png", "a/cat/s/z.jpg", "a/cat/s.b/y.jpg", "a/cat/s.png", "a/cat/S.JPEG", "a/cat/deep/x/y/z.webp",
                "a/cat/.hidden.png", "a/cat/.cache/h.png", "a/cat/notes.txt", "a/cat/noext", "a/cat/dot.",
                "a/dog/q.tif", "a/dog/q.tiff", "a/dog/sub.png/inner.png", "b/cat/m.gif", "b/bird/n.bmp",
                "b/.trash/t.png", ".git/x/y.png", "README.md", "a/loose.png",
                "cam/b.png", "cam/a/z.jpg", "cam/a/y/x.PNG", "cam/.hidden.png", "cam/.cache/c.png", "cam/notes.txt"]:
        k += 1
        _file((top / "root" / rel) if not rel.startswith("cam/") else top / rel, 10 * k + len(rel))
    (root / "b" / "zz").mkdir()  # an empty class folder
    for link, target in [("a/cat/link.png", "1.png"), ("a/cat/dirlink", "s"), ("a/cat/broken.png", "gone.png"),
                         ("a/cat/loop.png", "loop.png"), ("b/linked", "../a/dog"), ("cam/l.jpg", "b.png")]:
        at = (root if not link.startswith("cam/") else top) / link
        os.symlink(target, at)
    for name in (b"r\xe9.png", b"d\xe9/x.png"):  # Latin-1: left out of the listing, named in its unnamed
        _file(Path(os.fsdecode(os.path.join(os.fsencode(root / "a" / "cat"), name))), 7)
    return root, cam


# What main's code (sorted Path.rglob, two stats per file) gives for tricky_tree: the order, sizes and fingerprints
# that existing runs' data.json and caches' manifests hold. Measured with main at 39e6735; must never change.
MAIN_FILES = [("a/cat/.cache/h.png", 98), ("a/cat/1.png", 21), ("a/cat/S.JPEG", 62), ("a/cat/deep/x/y/z.webp", 81),
              ("a/cat/link.png", 21), ("a/cat/s/z.jpg", 33), ("a/cat/s.b/y.jpg", 45), ("a/cat/s.png", 51),
              ("a/dog/q.tif", 131), ("a/dog/q.tiff", 142), ("a/dog/sub.png/inner.png", 163), ("b/bird/n.bmp", 172),
              ("b/cat/m.gif", 161), ("b/linked/q.tif", 131), ("b/linked/q.tiff", 142),
              ("b/linked/sub.png/inner.png", 163)]
MAIN_UNNAMED = ["a/cat/d\\xe9/x.png", "a/cat/r\\xe9.png"]
MAIN_FINGERPRINT = "96497f510d918a6d4a3f810ff86835f4a670a45fc2812d1650f0283fa74ce2bd"
MAIN_CAM_FILES = (("a/y/x.PNG", 243), ("a/z.jpg", 231), ("b.png", 219), ("l.jpg", 219))
MAIN_CAM_SHA256 = "03c67b2231f83df8d2bd0d5be480a3361d6f093f84d3bea3ab13e8367f7f45fb"


def test_the_listing_and_fingerprints_are_mains(tmp_path):
    check_mains_listing(tmp_path)


def check_mains_listing(tmp_path):
    """The tricky tree lists to main's recorded files, order, sizes and fingerprints (test_listing_bounded.py runs it
    with every folder spilled)."""
    root, cam = tricky_tree(tmp_path)
    domains, files = list_images(root)
    rels = [files.text[files.offsets[i]:files.offsets[i + 1]].tobytes().decode() for i in range(len(files))]
    assert domains == ["a", "b"] and list(zip(rels, files.size.tolist())) == MAIN_FILES
    assert list(files.unnamed) == [f"{root}/{rel}" for rel in MAIN_UNNAMED]
    assert DomainFolder(root, skip_bad=True).fingerprint() == MAIN_FINGERPRINT
    folder = scan_folder(str(cam), root, "k")
    assert tuple(folder.rows()) == MAIN_CAM_FILES and folder.files_sha256() == MAIN_CAM_SHA256


def _stats(monkeypatch) -> list[str]:
    """Every ``os.stat`` / ``os.lstat`` call from here on (``Path.is_file()``, ``Path.stat()``, ``realpath``...)."""
    calls: list[str] = []
    for name in ("stat", "lstat"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    return calls


def test_the_walk_stats_no_file_but_through_its_directory_entry(tmp_path, monkeypatch):
    """Main's walk stat-ed each file twice through Path (is_file, then stat): 2 calls more per image. The directory
    entries' own stats (one per image, for its size) do not go through os.stat; what does (the root's checks,
    realpath) is the same whatever the number of images."""
    for images in (2, 40):
        for i in range(images):
            _file(tmp_path / f"root{images}" / "d" / "c" / f"{i:03d}.png", i + 1)
            _file(tmp_path / f"cam{images:02d}" / "sub" / f"{i:03d}.jpg", i + 1)
    calls = _stats(monkeypatch)
    made = []
    for images in (2, 40):
        calls.clear()
        assert len(list_images(tmp_path / f"root{images}")[1]) == images
        assert len(scan_folder(str(tmp_path / f"cam{images:02d}"), tmp_path / "root2", "k").size) == images
        made.append(len(calls))
    assert made[0] == made[1], made


def _bytes_dir(parent: Path, name: bytes) -> Path:
    """``parent/name`` made, ``name`` not UTF-8; the test is skipped where the file system refuses such names."""
    path = os.path.join(os.fsencode(parent), name)
    try:
        os.makedirs(path)
    except OSError as e:  # e.g. a file system that takes UTF-8 names only
        pytest.skip(f"this file system refuses a non-UTF-8 folder name: {e}")
    return Path(os.fsdecode(path))


def test_a_root_whose_own_path_is_not_utf8_works_as_any_other(tmp_path, capsys):
    """Only paths relative to ROOT are stored as text, so its own path may be any bytes: the same samples and
    fingerprint as the same tree elsewhere; `data summary` shows it with \\xNN (printing it raw failed on a
    strict UTF-8 stdout)."""
    plain = make_shapes_root(tmp_path / "plain", ["red", "green"], per_class=2)
    root = make_shapes_root(_bytes_dir(tmp_path, b"caf\xe9") / "data", ["red", "green"], per_class=2)
    assert DomainFolder(root).fingerprint() == DomainFolder(plain).fingerprint()
    assert main(["data", "summary", str(root)]) == 0
    assert f"{tmp_path}/caf\\xe9/data: 2 domains, 3 classes, 12 images" in capsys.readouterr().out


def test_an_unlabeled_folder_whose_name_is_not_utf8_joins_under_its_shown_name(tmp_path):
    """Its name becomes the unlabeled domain's, stored as text in sample paths and manifests: its bytes shown as
    \\xNN, as a left-out file's are; its images are read from the folder itself. One under a non-UTF-8 parent
    keeps its own name. Before: a UnicodeEncodeError traceback from packing the sample paths."""
    root = make_shapes_root(tmp_path / "data", ["red"], per_class=2)
    cam, under = _bytes_dir(tmp_path, b"cam\xe9"), _bytes_dir(tmp_path, b"d\xe9") / "field"
    under.mkdir()
    for folder in (cam, under):
        _file(folder / "a.png", 5)
    ds = DomainFolder(root)
    add_folders(ds, [scan_folder(str(cam), root, "data.unlabeled"), scan_folder(str(under), root, "data.unlabeled")])
    samples = ds.select(["cam\\xe9", "field"])
    assert [s.relpath for s in samples] == ["cam\\xe9/a.png", "field/a.png"]
    assert [ds.path(s) for s in samples] == [cam / "a.png", under / "a.png"] and ds.path(samples[0]).is_file()


def test_cache_build_takes_an_unlabeled_folder_whose_name_is_not_utf8(tmp_path, capsys):
    root = make_shapes_root(tmp_path / "data", ["red"], per_class=1)
    cam = _bytes_dir(tmp_path, b"cam\xe9")
    from PIL import Image  # lazy: only this test decodes images
    Image.new("RGB", (8, 8)).save(cam / "a.png")
    assert main(["cache", "build", "--data", str(root), "--out", str(tmp_path / "c"), "--arch", "distill-demo-vit",
                 "--pretrained", "none", "--workers", "0", "--no-progress", "--unlabeled", str(cam)]) == 0
    out = capsys.readouterr().out
    assert "(4 rows = 4 images x 1 view(s)" in out
    assert f"unlabeled folder {tmp_path}/cam\\xe9: 1 images, cached as 'cam\\xe9'" in out
