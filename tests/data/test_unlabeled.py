"""Unlabeled folders outside the root: what is a folder entry, scanning, naming, and joining a DomainFolder."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from distill.data.folder import DomainFolder
from distill.data.unlabeled import add_folders, folder_names, folder_record, is_folder_entry, scan_folder, scan_folders
from distill.errors import DistillError
from tests.shapes import make_shapes_root


def _images(folder: Path, names: list[str]) -> Path:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (len(name), 0, 0)).save(folder / name)
    return folder


@pytest.fixture()
def root(tmp_path) -> Path:
    return make_shapes_root(tmp_path / "data", ["red", "green"], per_class=2)


def test_an_entry_is_a_folder_when_it_looks_like_a_path():
    for folder in ("/srv/cam", "./cam", "../cam", "~/cam", "cams/site1", ".cam"):
        assert is_folder_entry(folder), folder
    for domain in ("svhn", "mnist_m", "field-cam", "a b"):
        assert not is_folder_entry(domain), domain


def test_scan_finds_nested_images_sorted_and_skips_hidden_and_other_files(tmp_path, root):
    folder = _images(tmp_path / "cam", ["b.png", "a/z.jpg", "a/y/x.PNG", ".hidden.png", ".cache/c.png"])
    (folder / "notes.txt").write_text("not an image")
    scanned = scan_folder(str(folder), root, "data.unlabeled")
    assert [rel for rel, _ in scanned.rows()] == ["a/y/x.PNG", "a/z.jpg", "b.png"]
    assert all(size == (folder / rel).stat().st_size for rel, size in scanned.rows())
    assert scanned.path == folder.resolve() and scanned.entry == str(folder)


def test_the_identity_follows_the_file_list_and_the_bytes(tmp_path, root):
    folder = _images(tmp_path / "cam", ["a.png", "b.png"])
    before = scan_folder(str(folder), root, "k")
    same = scan_folder(str(folder), root, "k")
    content = before.content_sha256()  # read now: it hashes the files as they are when asked
    assert before.files_sha256() == same.files_sha256() and content == same.content_sha256()
    _images(folder, ["c.png"])
    assert scan_folder(str(folder), root, "k").files_sha256() != before.files_sha256()
    (folder / "c.png").unlink()
    data = bytearray((folder / "a.png").read_bytes())
    data[-20] ^= 0xFF  # the same size, other bytes: only the content identity sees it
    (folder / "a.png").write_bytes(bytes(data))
    edited = scan_folder(str(folder), root, "k")
    assert edited.files_sha256() == before.files_sha256() and edited.content_sha256() != content


def test_scan_errors_are_one_line_naming_the_key_and_the_folder(tmp_path, root):
    cases = {str(tmp_path / "nowhere"): "does not exist",
             str(_images(tmp_path, ["file.png"]) / "file.png"): "does not exist (it is a file)",
             str(tmp_path / "empty"): "holds no images",
             str(root / "red"): "overlaps the data root",
             str(root / "red" / "circle"): "overlaps the data root",
             str(tmp_path): "overlaps the data root"}
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("x")
    for entry, why in cases.items():
        with pytest.raises(DistillError, match=rf"^data\.unlabeled: folder '{re.escape(entry)}' {re.escape(why)}") as err:
            scan_folder(entry, root, "data.unlabeled")
        assert "\n" not in str(err.value)
    folder = _images(tmp_path / "cam", ["a.png"])
    with pytest.raises(DistillError, match=r"folder '.*cam/' is named twice"):
        scan_folders([str(folder), str(folder) + "/"], root, "data.unlabeled")


def test_names_are_the_directory_names_made_unique():
    class F:
        def __init__(self, p):
            self.path = Path(p)

    folders = [F("/a/images"), F("/b/images"), F("/c/red"), F("/d/cam")]
    assert folder_names(folders, ["red", "green"]) == ["images", "images-2", "red-2", "cam"]


def test_a_folder_joins_after_the_roots_samples_unlabeled_and_the_root_is_unchanged(tmp_path, root):
    plain = DomainFolder(root, test_fraction=0.3)
    ds = DomainFolder(root, test_fraction=0.3)
    b = _images(tmp_path / "site_b" / "cam", ["1.png", "sub/2.png"])
    a = _images(tmp_path / "site_a" / "cam", ["x.jpg"])
    add_folders(ds, scan_folders([str(b), str(a)], root, "k"))  # placed by path, whatever the order named
    assert list(ds.folders) == ["cam", "cam-2"] and ds.folders["cam"].path == a.resolve()
    assert ds.fingerprint() == plain.fingerprint() and ds.domains == plain.domains
    assert ds.select() == plain.select() and ds.summary() == plain.summary()
    assert ds.samples[:len(plain.samples)] == plain.samples
    n = len(plain.samples)
    first, second = ds.select(["cam"]), ds.select(["cam-2"])
    assert [s.index for s in first + second] == [n, n + 1, n + 2] and ds.index_count == n + 3
    assert {(s.label, s.split, s.class_name) for s in first + second} == {(-1, "train", "")}
    assert [ds.path(s) for s in second] == [b.resolve() / "1.png", b.resolve() / "sub/2.png"]
    assert ds.sample_at(n + 2) == second[1] and ds.sample_at(3) == plain.samples[3]
    assert folder_record(ds, "cam-2") == {"name": "cam-2", "path": str(b.resolve()), "first_index": n + 1,
                                          "images": 2, "files_sha256": ds.folders["cam-2"].files_sha256()}


def test_a_run_places_a_folder_at_its_caches_indices_and_refuses_a_collision(tmp_path, root):
    ds = DomainFolder(root, test_fraction=0.3)
    folder = scan_folder(str(_images(tmp_path / "cam", ["a.png", "b.png"])), root, "k")
    n = len(ds.samples)
    added = ds.add_folder("cam", folder, n + 5)  # a cache whose first folder this run does not name
    assert [s.index for s in added] == [n + 5, n + 6] and ds.index_count == n + 7 and ds.sample_at(n + 6) == added[1]
    with pytest.raises(DistillError, match=r"name 'cam' is already a domain or folder"):
        ds.add_folder("cam", folder)
    with pytest.raises(DistillError, match=r"name 'red' is already a domain"):
        ds.add_folder("red", folder)
    with pytest.raises(DistillError, match=r"start at 3, but .* use \d+: data\.root changed"):
        DomainFolder(root, test_fraction=0.3).add_folder("cam", folder, 3)


def test_a_pickled_dataset_holds_an_added_folders_paths_once(tmp_path, root):
    """Review 1 (6): an added folder's listing is a view of the samples' columns, and pickle (a spawn or forkserver
    worker's copy of the dataset) copied it, so each of its paths went once more (and every path once more again:
    the columns' ``text``, a view of their bytes). Now once, and the unpickled dataset lists the same rows and files."""
    import pickle

    ds = DomainFolder(root, test_fraction=0.3)
    folder = _images(tmp_path / "site" / "cam", ["a_name_found_once_only.png"])
    add_folders(ds, scan_folders([str(folder)], root, "k"))
    raw = pickle.dumps(ds)
    assert raw.count(b"a_name_found_once_only") == 1  # neither the folder's listing nor the columns' view adds one
    back = pickle.loads(raw)
    assert back.samples == ds.samples and back.folders["cam"].files_sha256() == ds.folders["cam"].files_sha256()
    assert [back.path(s) for s in back.select(["cam"])] == [folder.resolve() / "a_name_found_once_only.png"]
