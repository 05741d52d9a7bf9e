"""An unlabeled folder's listing is packed as it is walked (no Python object per image, held for the run): the same
files, order, sizes, left-out names and so the same ``files_sha256`` / ``content_sha256``, cache record and samples
as the list of ``(path, size)`` tuples before it, pinned on a tree of odd names."""
from __future__ import annotations

import os
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from distill.data.folder import DomainFolder
from distill.data.unlabeled import add_folders, folder_record, scan_folder
from distill.errors import DistillError

NFC, NFD = "caf\u00e9", "cafe\u0301"
ODD = ["b.png", "a/z.jpg", "a/y/x.PNG", "a/.h/i.png", "a/.hidden.png", ".hidden.png", ".cache/c.png",
       "deep/1/2/3/4.webp", "sp ace.jpg", "tab\tname.png", "new\nline.png", "\u00fcn\u00ef/\u00e7\u00f8d\u00e9.png",
       "\U0001f600.png", "a-b.png", "a.b/c.png", "a0.png", "A.png", "dot.", "noext", "x.JPEG", "x.tiff",
       "notes.txt", f"{NFC}.png", f"{NFD}.png", "r\u00e9s/1.png", "re\u0301s/1.png", "z.bmp/inner.gif"]


def _file(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes([size % 251]) * size)  # never decoded: content_sha256 reads the bytes


def odd_tree(top: Path) -> tuple[Path, Path]:
    """(ROOT, an unlabeled folder): nesting, hidden files and folders (a hidden folder is skipped in a folder), NFC
    and NFD forms of one name, tab/newline/emoji names, non-image names, links to a file (inside and outside), a
    folder (not entered), nothing and itself, and three names that are not UTF-8 (one a folder's)."""
    root, cam = top / "root", top / "cam"
    for k, rel in enumerate(["d/c/1.png", "d/c/2.png"]):
        _file(root / rel, k + 3)
    for k, rel in enumerate(ODD):
        _file(cam / rel, 11 * (k + 1) + len(rel.encode()))
    _file(top / "outside.png", 5)
    for link, target in [("l.jpg", "b.png"), ("dirlink", "a"), ("broken.png", "gone.png"), ("loop.png", "loop.png"),
                         ("out.png", str(top / "outside.png"))]:
        os.symlink(target, cam / link)
    for name, size in ((b"lat\xe9.png", 7), (b"d\xe9/x.png", 8), (b"a/\xff.jpg", 9)):
        try:
            _file(Path(os.fsdecode(os.path.join(os.fsencode(cam), name))), size)
        except OSError as e:  # a file system that takes UTF-8 names only
            pytest.skip(f"this file system refuses a non-UTF-8 name: {e}")
    return root, cam


# What main's code (a94ae8c: a list of (path, size) tuples) gives for odd_tree; must never change.
MAIN_ODD_FILES = (("A.png", 192), ("a/y/x.PNG", 42), ("a/z.jpg", 29), ("a-b.png", 161), ("a.b/c.png", 174),
                  ("a0.png", 182), ("b.png", 16), ("cafe\u0301.png", 274), ("caf\xe9.png", 262),
                  ("deep/1/2/3/4.webp", 105), ("l.jpg", 16), ("new\nline.png", 133), ("out.png", 5),
                  ("re\u0301s/1.png", 297), ("r\xe9s/1.png", 285), ("sp ace.jpg", 109), ("tab\tname.png", 122),
                  ("x.JPEG", 226), ("x.tiff", 237), ("z.bmp/inner.gif", 312), ("\xfcn\xef/\xe7\xf8d\xe9.png", 149),
                  ("\U0001f600.png", 151))
MAIN_ODD_UNNAMED = ("a/\\xff.jpg", "d\\xe9/x.png", "lat\\xe9.png")
MAIN_ODD_FILES_SHA256 = "cfe8544a31e8756a70072db4ab969728f755aa3f1f4bbc93e03b6fccb5613e49"
MAIN_ODD_CONTENT_SHA256 = "8b07db05c19c3373ea253bc1d68654f5d75ed411d87c021d90a9228dba5f3de6"
MAIN_ODD_FINGERPRINT = "221f49eea9baee28b6e8503f67b03a76dc734c8b00f48e0d127e076368b41b15"


def test_the_packed_listing_is_mains(tmp_path):
    root, cam = odd_tree(tmp_path)
    with pytest.raises(DistillError) as e:
        scan_folder(str(cam), root, "k")
    assert str(e.value) == (f"{cam}/a/\\xff.jpg: file name is not valid UTF-8 (its undecodable bytes shown as \\xNN); "
                            f"3 such files under k folder '{cam}'; rename it, or pass --skip-bad to leave it out")
    folder = scan_folder(str(cam), root, "k", skip_bad=True)
    assert tuple(folder.rows()) == MAIN_ODD_FILES and folder.images == len(MAIN_ODD_FILES)
    assert folder.unnamed == tuple(f"{cam}/{rel}" for rel in MAIN_ODD_UNNAMED)
    assert folder.files_sha256() == MAIN_ODD_FILES_SHA256 and folder.content_sha256() == MAIN_ODD_CONTENT_SHA256
    ds = DomainFolder(root)
    add_folders(ds, [folder])
    assert folder_record(ds, "cam", content=True) == {
        "name": "cam", "path": str(cam), "first_index": 2, "images": len(MAIN_ODD_FILES),
        "files_sha256": MAIN_ODD_FILES_SHA256, "content_sha256": MAIN_ODD_CONTENT_SHA256}
    assert [(s.index, s.relpath, s.domain, s.class_name, s.label, s.split, s.size) for s in ds.select(["cam"])] == \
        [(2 + i, f"cam/{rel}", "cam", "", -1, "train", size) for i, (rel, size) in enumerate(MAIN_ODD_FILES)]
    assert ds.fingerprint() == MAIN_ODD_FINGERPRINT and ds.unnamed == [f"{cam}/{rel}" for rel in MAIN_ODD_UNNAMED]
    assert [ds.path(s) for s in ds.select(["cam"])] == [cam / rel for rel, _ in MAIN_ODD_FILES]


def _blocks_held(scan) -> int:
    """Memory blocks (Python objects, buffers) allocated by ``scan()`` and still held by what it returns."""
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        kept = scan()
        grown = tracemalloc.take_snapshot().compare_to(before, "filename")
        del kept
    finally:
        tracemalloc.stop()
    return sum(stat.count_diff for stat in grown)


def test_a_scanned_folder_holds_no_python_object_per_image(tmp_path):
    """Main's folder held one (path, size) tuple, its path string and its size per image for the whole run (~150
    bytes each: 1.5 GB at 10^7 images); packed, it holds the same few buffers whatever the number of images."""
    root = tmp_path / "root"
    root.mkdir()
    held = []
    for n in (20, 2020):
        cam = tmp_path / f"cam{n}"
        for i in range(n):
            _file(cam / f"s{i % 3}" / f"img_{i:05d}.jpg", 300 + i)  # sizes past the small ints Python shares
        held.append(_blocks_held(lambda: scan_folder(str(cam), root, "k")))
    assert held[1] - held[0] < 100, held  # main's: > 2 * 2000 more


def test_chunk_boundaries_change_nothing(tmp_path, monkeypatch):
    """Rows, identities and the samples' "NAME/path" strings are made a chunk of images at a time."""
    import distill.data.sample_table as table
    import distill.data.unlabeled as unlabeled

    root, cam = odd_tree(tmp_path)
    folder = scan_folder(str(cam), root, "k", skip_bad=True)
    for chunk in (1, 3, 5):
        monkeypatch.setattr(unlabeled, "CHUNK", chunk)
        monkeypatch.setattr(table, "_CHUNK", chunk)
        assert tuple(folder.rows()) == MAIN_ODD_FILES and folder.files_sha256() == MAIN_ODD_FILES_SHA256
        assert folder.content_sha256() == MAIN_ODD_CONTENT_SHA256
        for prefix in ("", "cam/", "caf\u00e9\\xe9/"):
            text, offsets = table.prefix_strings(prefix, folder.text, folder.offsets)
            want_text, want_offsets = table.pack_strings(prefix + rel for rel, _ in MAIN_ODD_FILES)
            assert text.tobytes() == want_text.tobytes() and offsets.tolist() == want_offsets.tolist()
            back = table.strip_strings(text[offsets[2]:], offsets[2:], len(prefix.encode()))  # rows 2.. as a view
            assert back[0].tobytes() == folder.text[folder.offsets[2]:].tobytes()
            assert back[1].tolist() == (folder.offsets[2:] - folder.offsets[2]).tolist()
    empty = table.prefix_strings("cam/", *table.pack_strings([]))
    assert empty[0].tolist() == [] and empty[1].tolist() == [0]


def test_a_dataset_holds_each_folders_paths_once(tmp_path):
    """Once added, a folder's listing is a view of the dataset's sample columns (its paths as "NAME/path"): the
    same rows and identities, for every folder after each add and after a pickle round trip."""
    root, cam = odd_tree(tmp_path)
    small = tmp_path / "small"
    for i, rel in enumerate(["b.jpg", "a/c.png"]):
        _file(small / rel, 40 + i)
    scanned = [scan_folder(str(cam), root, "k", skip_bad=True), scan_folder(str(small), root, "k")]
    want = {f.path: (tuple(f.rows()), f.files_sha256(), f.content_sha256()) for f in scanned}
    ds = DomainFolder(root)
    add_folders(ds, scanned)
    assert list(ds.folders) == ["cam", "small"] and want[cam][1] == MAIN_ODD_FILES_SHA256
    for ds_ in (ds, pickle.loads(pickle.dumps(ds))):
        for name, folder in ds_.folders.items():
            assert (tuple(folder.rows()), folder.files_sha256(), folder.content_sha256()) == want[folder.path], name
    again = DomainFolder(root)  # a folder one dataset holds, added to another: the same samples
    add_folders(again, [ds.folders["small"], ds.folders["cam"]])
    assert again.samples == ds.samples and [f.files_sha256() for f in again.folders.values()] == \
        [want[f.path][1] for f in again.folders.values()]
    for name, folder in ds.folders.items():
        assert np.shares_memory(folder.text, ds.samples.columns.text) and folder.skip == len(f"{name}/")
        assert np.shares_memory(folder.size, ds.samples.columns.size)
