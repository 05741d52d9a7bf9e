"""DomainFolder: scanning, class lists and maps, hash-based splits, fingerprints, PACS-mini."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from distill.cli import main
from distill.data import class_map_keys
from distill.data.folder import DomainFolder, load_class_map, split_of
from distill.errors import DistillError

PACS_MINI = Path(__file__).resolve().parents[2].parent / "shared/data/pacs_mini"


def _png(path: Path, value: int = 0, size: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (value, value, value)).save(path)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """real/{cat,dog}, sketch/{dog,car} (2 images each) and non-image noise."""
    for rel in ["real/cat/a.png", "real/cat/b.png", "real/dog/a.png", "real/dog/b.jpg",
                "sketch/dog/x.png", "sketch/dog/y.png", "sketch/car/z.png", "sketch/car/w.png"]:
        _png(tmp_path / rel)
    (tmp_path / "real/cat/notes.txt").write_text("not an image")
    (tmp_path / "real/cat/.hidden.png").write_bytes(b"")
    (tmp_path / ".cache").mkdir()
    return tmp_path


def test_scan_global_sorted_classes_and_missing_class(tree: Path) -> None:
    ds = DomainFolder(tree)
    assert ds.domains == ["real", "sketch"]
    assert ds.classes == ["car", "cat", "dog"]  # sorted union over all domains
    assert len(ds) == 8
    assert {s.relpath for s in ds.select(["real"])} == {"real/cat/a.png", "real/cat/b.png",
                                                        "real/dog/a.png", "real/dog/b.jpg"}
    # 'car' exists only in sketch, 'cat' only in real: labels still agree across domains
    dog_labels = {s.label for s in ds.samples if s.class_name == "dog"}
    assert dog_labels == {ds.classes.index("dog")}
    assert {s.class_name for s in ds.select(["real"])} == {"cat", "dog"}
    assert [s.index for s in ds.samples] == list(range(8))
    assert [s.relpath for s in ds.samples] == sorted(s.relpath for s in ds.samples)
    assert sum(ds.summary()["real"].values()) == 4


def test_class_map_global_and_per_domain_keys(tree: Path) -> None:
    cmap = tree.parent / "map.yaml"
    cmap.write_text("dog: puppy\nsketch/car: automobile\n")
    ds = DomainFolder(tree, class_map=cmap)
    assert ds.classes == ["automobile", "cat", "puppy"]
    assert {s.class_name for s in ds.select(["sketch"])} == {"puppy", "automobile"}
    assert ds.class_map_source == str(cmap)
    # a per-domain key wins over the global one, in that domain only
    ds2 = DomainFolder(tree, class_map={"dog": "canine", "real/dog": "hound"})
    assert {s.class_name for s in ds2.select(["real"])} == {"cat", "hound"}
    assert {s.class_name for s in ds2.select(["sketch"])} == {"canine", "car"}


def test_root_classnames_yaml_is_picked_up(tree: Path) -> None:
    (tree / "classnames.yaml").write_text('"cat": kitty\n')
    ds = DomainFolder(tree)
    assert "kitty" in ds.classes and "cat" not in ds.classes
    assert ds.class_map_source == str(tree / "classnames.yaml")
    # an explicit map replaces the automatic one
    assert "cat" in DomainFolder(tree, class_map={}).classes


@pytest.mark.parametrize("content", [
    "dog: [a, b]\n",        # value not a name
    "- dog\n- cat\n",       # not a mapping
    "dog: : :\n  bad",      # invalid YAML
    "dog: ''\n",            # empty name
    "dog: no\n",            # YAML boolean
    b"\x89PNG\r\n\x1a\n\x00\xff\xfe",  # binary file
    None,                   # file missing
])
def test_bad_class_map_is_one_line_naming_the_file(tmp_path: Path, content: str | bytes | None) -> None:
    path = tmp_path / "bad map.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(DistillError) as err:
        load_class_map(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg


def test_class_map_directory_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(DistillError, match="class-name map"):
        load_class_map(tmp_path)


def test_split_is_hash_based_and_independent_of_other_files(tree: Path) -> None:
    before = {s.relpath: s.split for s in DomainFolder(tree, test_fraction=0.5).samples}
    for i in range(20):
        _png(tree / "real" / "cat" / f"extra{i}.png")
    _png(tree / "photo" / "dog" / "p.png")
    after = {s.relpath: s.split for s in DomainFolder(tree, test_fraction=0.5).samples}
    assert {k: after[k] for k in before} == before
    assert all(v == split_of(k, 0.5) for k, v in after.items())
    # a different split seed gives a different split of the same files
    other = {s.relpath: s.split for s in DomainFolder(tree, test_fraction=0.5, split_seed=1).samples}
    assert other != after


def test_split_fraction_roughly_respected() -> None:
    paths = [f"dom/cls{i % 7}/img{i:04d}.jpg" for i in range(600)]
    for frac in (0.2, 0.5):
        n_test = sum(split_of(p, frac) == "test" for p in paths)
        assert abs(n_test / len(paths) - frac) < 0.07, (frac, n_test)
    assert all(split_of(p, 0.0, val_fraction=0.0) == "train" for p in paths)
    assert [split_of(p, 0.3, seed=3) for p in paths] == [split_of(p, 0.3, seed=3) for p in paths]


def test_fingerprint_changes_on_add_and_on_size_change(tree: Path) -> None:
    fp0 = DomainFolder(tree).fingerprint()
    assert DomainFolder(tree).fingerprint() == fp0
    _png(tree / "real" / "cat" / "c.png")
    fp1 = DomainFolder(tree).fingerprint()
    assert fp1 != fp0
    target = tree / "real" / "cat" / "a.png"
    old = target.stat().st_size
    _png(target, size=64)
    assert target.stat().st_size != old
    assert DomainFolder(tree).fingerprint() != fp1
    # a domain-restricted fingerprint ignores other domains
    fp_sketch = DomainFolder(tree).fingerprint(["sketch"])
    _png(tree / "real" / "dog" / "new.png")
    assert DomainFolder(tree).fingerprint(["sketch"]) == fp_sketch


def test_unknown_domain_is_named(tree: Path) -> None:
    ds = DomainFolder(tree)
    with pytest.raises(DistillError, match="'clipart'") as err:
        ds.select(["real", "clipart"])
    assert "real" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DistillError, match="split"):
        ds.select(split="valid")


def test_bad_roots(tmp_path: Path) -> None:
    with pytest.raises(DistillError, match="not found"):
        DomainFolder(tmp_path / "nope")
    with pytest.raises(DistillError, match="no domain folders"):
        DomainFolder(tmp_path)
    (tmp_path / "d" / "c").mkdir(parents=True)
    with pytest.raises(DistillError, match="no images"):
        DomainFolder(tmp_path)
    _png(tmp_path / "d" / "c" / "a.png")
    with pytest.raises(DistillError, match="test_fraction"):
        DomainFolder(tmp_path, test_fraction=1.0)


def test_pacs_mini() -> None:
    if not PACS_MINI.is_dir():
        pytest.skip(f"PACS-mini not found at {PACS_MINI} (shared test data is optional)")
    ds = DomainFolder(PACS_MINI)
    assert ds.domains == ["art_painting", "cartoon", "photo", "sketch"]
    assert ds.classes == ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]
    assert len(ds) == 40
    assert "giraffe" not in {s.class_name for s in ds.select(["photo"])}
    assert "giraffe" in {s.class_name for s in ds.select(["sketch"])}
    assert sum(v["train"] + v["val"] + v["test"] for v in ds.summary().values()) == 40


def test_class_map_key_for_an_unknown_domain_is_an_error(tree: Path) -> None:
    cmap = tree.parent / "typo.yaml"
    cmap.write_text("sketch/car: automobile\nsketchh/car: automobile\n")
    with pytest.raises(DistillError) as e:
        DomainFolder(tree, class_map=cmap)
    assert str(e.value) == (f"{cmap}: key 'sketchh/car' names domain 'sketchh', which is not under {tree} "
                            "(domains: real, sketch)")
    with pytest.raises(DistillError) as e:
        DomainFolder(tree, class_map={"real/car": "automobile"})  # no car folder in real
    assert str(e.value) == f"class-name map: key 'real/car' names class folder 'car', which is not under {tree / 'real'}"


def test_a_class_map_key_that_names_no_folder_anywhere_is_a_warning(tree: Path, capsys, monkeypatch) -> None:
    """QA-A B8: `dgo: hound` (a typo of `dog`) was ignored without a word; a DOMAIN/folder typo is an error."""
    (tree / "real" / "bird").mkdir()  # a class folder without images is still a folder
    cmap = tree.parent / "typo.yaml"
    cmap.write_text("dgo: hound\ncar: automobile\nbird: robin\nfish: trout\n")  # car: in sketch only; bird: empty
    ds = DomainFolder(tree, class_map=cmap)
    assert ds.classes == ["automobile", "cat", "dog"]  # the typo changes nothing
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {cmap}: key(s) 'dgo', 'fish' name no class folder in any domain under {tree}: ignored (a typo? "
        "a key is 'folder' or 'DOMAIN/folder')"]
    DomainFolder(tree, class_map={"dog": "hound", "sketch/car": "automobile"})  # every key matches: nothing said
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(class_map_keys, "_WARNED", set())  # as in a fresh process
    monkeypatch.setenv("RANK", "1")  # a DDP rank other than 0 says nothing (rank 0 does)
    DomainFolder(tree, class_map=cmap)
    assert capsys.readouterr().err == ""
    # through the CLI (a fresh process): the QA's command, one warning line on stderr, rc 0
    monkeypatch.delenv("RANK")
    assert main(["data", "summary", str(tree), "--class-map", str(cmap)]) == 0
    err = capsys.readouterr().err
    assert [ln for ln in err.splitlines() if ln.startswith("warning: ")] == [
        f"warning: {cmap}: key(s) 'dgo', 'fish' name no class folder in any domain under {tree}: ignored (a typo? "
        "a key is 'folder' or 'DOMAIN/folder')"]


def test_the_class_map_key_warning_is_said_once_per_process(tree: Path, capsys, monkeypatch) -> None:
    """Review 25 L8: the warning was said at every DomainFolder build, and a command builds several (train, export,
    eval, qad, data summary): once per map, root and keys now."""
    monkeypatch.setattr(class_map_keys, "_WARNED", set())
    cmap = tree.parent / "shared.yaml"
    cmap.write_text("dog: hound\nhorse: stallion\n")  # a shared map: horse is another data set's
    for _ in range(3):
        DomainFolder(tree, class_map=cmap)
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {cmap}: key(s) 'horse' name no class folder in any domain under {tree}: ignored (a typo? "
        "a key is 'folder' or 'DOMAIN/folder')"]
    other = tree.parent / "other.yaml"  # another map's keys are said in their turn
    other.write_text("zebra: zebra\n")
    DomainFolder(tree, class_map=other)
    DomainFolder(tree, class_map=cmap)
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {other}: key(s) 'zebra' name no class folder in any domain under {tree}: ignored (a typo? "
        "a key is 'folder' or 'DOMAIN/folder')"]


def test_a_folder_built_from_a_shared_listing_is_the_scanned_one(tmp_path):
    """DomainFolder(listing=list_images(ROOT)) (what a run's other ranks get from rank 0) equals a scan."""
    from distill.data.folder import list_images
    from tests.shapes import make_shapes_root
    root = make_shapes_root(tmp_path / "r", ["red", "green"], per_class=3)
    (root / "classnames.yaml").write_text("circle: round thing\n")
    listing = list_images(root)
    scanned, shared = DomainFolder(root), DomainFolder(root, listing=listing)
    assert shared.samples == scanned.samples and shared.classes == scanned.classes == sorted(shared.classes)
    assert "round thing" in shared.classes and shared.fingerprint() == scanned.fingerprint()
    assert listing[0] == ["green", "red"] and all(f in ("circle", "square", "stripes") for _, f in listing[1].folders)


def test_two_folders_of_a_domain_mapped_to_one_class_are_merged_with_a_warning(tree: Path, capsys, monkeypatch) -> None:
    """QA K F8: `cat: a` + `dog: a` merged two classes without a word. Merging may be meant (`husky: dog`,
    `beagle: dog`), so it is a warning, said once per process; one folder name in several domains is one class by
    design and says nothing."""
    monkeypatch.setattr(class_map_keys, "_WARNED_MERGED", set(), raising=False)  # a fresh process
    cmap = tree.parent / "merge.yaml"
    cmap.write_text("cat: pet\ndog: pet\n")
    for _ in range(2):
        ds = DomainFolder(tree, class_map=cmap)
    assert ds.classes == ["car", "pet"]
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {cmap}: class folders 'cat', 'dog' (in domain(s) real) are all mapped to 'pet': merged into one "
        "class (intended? give each its own name to keep them apart)"]
    DomainFolder(tree, class_map={"sketch/car": "dog"})  # sketch: car + dog -> dog
    assert "class folders 'car', 'dog' (in domain(s) sketch) are all mapped to 'dog'" in capsys.readouterr().err
    DomainFolder(tree, class_map={"dog": "hound"})  # 'dog' in real and sketch: one class, nothing said
    assert capsys.readouterr().err == ""
