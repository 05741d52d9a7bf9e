"""DomainFolder's samples held as columns (SampleTable): the same samples, selections and fingerprints as the
list of Sample objects they replace, and a few dozen bytes per image instead of ~376."""
from __future__ import annotations

import hashlib
import json
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from distill.data.folder import DomainFolder, FileList, Sample, list_images, load_class_map, split_of
from distill.data.sample_table import SampleTable
from distill.data.unlabeled import UnlabeledFolder

LAYOUT = {"art": ["dog", "n01", "Cat", "a b"], "photo": ["dog", "cat", "auto", "a"], "zz": ["dog"]}
CLASS_MAP = "n01: wolf\nphoto/auto: car\ncat: Cat\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Class folders whose scan order is not relpath order ("a" vs "a b"), nested and non-ASCII names,
    a class map with a per-domain key, sizes that differ per file."""
    root = tmp_path / "root"
    for d, classes in LAYOUT.items():
        for ci, c in enumerate(classes):
            for k in range(7 + ci):
                p = root / d / c / (f"sub/{k}.png" if k % 5 == 4 else f"{k:02d}é.png")
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(b"x" * (10 + 7 * k + ci))
    (root / "art" / "dog" / ".hidden.png").write_bytes(b"x")
    (root / "classnames.yaml").write_text(CLASS_MAP)
    return root


def old_samples(root: Path, test_fraction: float, split_seed: int, val_fraction: float,
                pretrain_fraction: float) -> list[Sample]:
    """The list of Sample objects DomainFolder held before it held columns (its algorithm, verbatim)."""
    cmap = load_class_map(root / "classnames.yaml")
    found = []
    for domain in sorted(d.name for d in root.iterdir() if d.is_dir()):
        for cdir in sorted(p for p in (root / domain).iterdir() if p.is_dir()):
            for f in sorted(cdir.rglob("*")):
                if f.is_file() and f.suffix == ".png" and not f.name.startswith("."):
                    name = cmap.get(f"{domain}/{cdir.name}", cmap.get(cdir.name, cdir.name))
                    found.append((f.relative_to(root).as_posix(), domain, name, f.stat().st_size))
    classes = sorted({c for _, _, c, _ in found})
    found.sort(key=lambda t: t[0])
    return [Sample(i, rel, dom, c, classes.index(c), split_of(rel, test_fraction, split_seed, val_fraction,
                                                              pretrain_fraction), size)
            for i, (rel, dom, c, size) in enumerate(found)]


@pytest.mark.parametrize("rule", [(0.2, 0, 0.1, 0.0), (0.3, 3, 0.1, 0.2), (0.25, 1, 0.3, 0.0)])
def test_samples_selections_and_fingerprints_are_the_list_they_replace(tree: Path, rule) -> None:
    test_fraction, split_seed, val_fraction, pretrain_fraction = rule
    ds = DomainFolder(tree, test_fraction=test_fraction, split_seed=split_seed, val_fraction=val_fraction,
                      pretrain_fraction=pretrain_fraction)
    old = old_samples(tree, *rule)
    assert list(ds.samples) == old and ds.samples == old and len(ds) == len(old) == 75
    assert [s.relpath for s in old] != [s.relpath for s in sorted(old, key=lambda s: (s.domain, s.label))]
    assert ds.samples[-1] == old[-1] and ds.samples[2:40:3] == old[2:40:3]
    assert isinstance(ds.samples[2:40:3], SampleTable)
    for domains in (None, ["art", "zz"], ["zz", "photo"]):
        for split in (None, "train", "val", "test", "pretrain"):
            keep = domains or ds.domains
            splits = ("train", "val", "test") if split is None else (split,)
            assert list(ds.select(domains, split)) == [s for s in old if s.domain in keep and s.split in splits]
    # the fingerprint, as the list gave it
    h = hashlib.sha256()
    rule_json = {"classes": ds.classes, "test_fraction": test_fraction, "split_seed": split_seed,
                 "val_fraction": val_fraction, **({"pretrain_fraction": pretrain_fraction} if pretrain_fraction else {})}
    h.update(json.dumps(rule_json, sort_keys=True).encode())
    for s in old:
        h.update(f"{s.relpath}\t{s.size}\t{s.class_name}\n".encode())
    assert ds.fingerprint() == h.hexdigest()
    files = "".join(f"{s.relpath}\t{s.size}\t{s.class_name}\n" for s in old if s.split != "pretrain")
    assert ds.fingerprint_inputs()["files_sha256"] == hashlib.sha256(files.encode()).hexdigest()
    counts = {d: {sp: sum(s.domain == d and s.split == sp for s in old) for sp in ("train", "val", "test", "pretrain")}
              for d in ds.domains}
    assert ds.summary() == counts
    # a listing passed in (as rank 0 sends it), as tuples or packed, and a pickled folder: the same samples
    domains, files = list_images(tree)
    tuples = [(files.text[a:b].tobytes().decode(), domains[d], files.folders[f][1], int(size)) for a, b, d, f, size
              in zip(files.offsets[:-1], files.offsets[1:], files.domain, files.folder, files.size)]
    for listing in ((domains, files), (domains, tuples), pickle.loads(pickle.dumps((domains, files)))):
        other = DomainFolder(tree, listing=listing, test_fraction=test_fraction, split_seed=split_seed,
                             val_fraction=val_fraction, pretrain_fraction=pretrain_fraction)
        assert other.samples == old
    assert pickle.loads(pickle.dumps(ds)).samples == old


def test_exclude_and_added_folders_are_the_list_they_replace(tree: Path, tmp_path: Path) -> None:
    ds = DomainFolder(tree, test_fraction=0.3, pretrain_fraction=0.2, split_seed=3)
    old = old_samples(tree, 0.3, 3, 0.1, 0.2)
    gone = {old[3].relpath, old[60].relpath}
    ds.exclude([(old[3].relpath, "bad"), (old[60].relpath, "worse"), ("art/dog/none.png", "absent")])
    assert list(ds.select()) == [s for s in old if s.split != "pretrain" and s.relpath not in gone]
    unl = tmp_path / "unl"
    (unl / "s").mkdir(parents=True)
    for k in range(5):
        (unl / ("s" if k % 2 else "") / f"u{k}.jpg").write_bytes(b"y" * (k + 3))
    files = tuple(sorted((p.relative_to(unl).as_posix(), p.stat().st_size) for p in unl.rglob("*.jpg")))
    folder = UnlabeledFolder.of(str(unl), unl, files)
    n = len(old)
    cam = [Sample(n + 5 + i, f"cam/{rel}", "cam", "", -1, "train", size) for i, (rel, size) in enumerate(files)]
    cam2 = [Sample(n + 10 + i, f"cam2/{rel}", "cam2", "", -1, "train", size) for i, (rel, size) in enumerate(files)]
    assert ds.add_folder("cam", folder, n + 5) == cam
    assert ds.add_folder("cam2", folder) == cam2
    assert ds.samples == old + cam + cam2 and ds.index_count == n + 15
    assert ds.first_index("cam") == n + 5 and ds.first_index("cam2") == n + 10
    assert [ds.sample_at(i) for i in (0, 7, n - 1, n + 5, n + 9, n + 10, n + 14)] == \
        [old[0], old[7], old[n - 1], cam[0], cam[4], cam2[0], cam2[4]]
    with pytest.raises(KeyError):
        ds.sample_at(n + 2)  # between ROOT's and the first folder's indices
    assert list(ds.select(["cam", "art"])) == [s for s in old + cam if s.domain in ("cam", "art")
                                               and s.split != "pretrain" and s.relpath not in gone]
    ds.exclude([(cam2[1].relpath, "bad")])
    assert list(ds.select(["cam2"], "train")) == [cam2[0], *cam2[2:]]
    assert ds.path(cam[1]) == unl / files[1][0] and ds.summary() == DomainFolder(
        tree, test_fraction=0.3, pretrain_fraction=0.2, split_seed=3).summary()  # ROOT's only


def test_a_selection_concatenates_like_a_list(tree: Path) -> None:
    ds = DomainFolder(tree)
    a, b = ds.select(["art"], "train"), ds.select(["zz"], "train")
    assert a + b == list(a) + list(b) and (a + []) is a and len([] + list(a)) == len(a)
    extra = [Sample(999, "x/y.png", "x", "", -1, "train", 1)]
    assert a + extra == list(a) + extra and ds.select(["zz"], "val")[:0] + extra == extra
    assert a != list(b) and a == tuple(a)


def test_a_folder_holds_a_few_dozen_bytes_per_image() -> None:
    """50,000 images listed (no files): the folder keeps < 100 bytes an image (one Sample object each: ~376)."""
    n = 50_000
    domains = ["d0", "d1", "d2"]
    files = FileList.of(domains, [(f"d{i % 3}/c{i % 7}/{i:07d}.png", f"d{i % 3}", f"c{i % 7}", 1000 + i)
                                  for i in range(n)])
    root = Path(__file__).parent  # a folder that exists; nothing under it is read (the listing is given)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ds = DomainFolder(root, listing=(domains, files))
        train = ds.select(None, "train")
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(ds) == n and len(train) > n // 2
    print(f"{held / n:.0f} bytes per image")
    assert held / n < 100, f"{held / n:.0f} bytes per image"


def test_columns_read_without_building_samples(tree: Path) -> None:
    """sample_column / sample_domains (what training's item table and evaluation read at start-up) equal the
    per-sample values, for a selection view and for a plain list; a domain missing from the lookup is a KeyError."""
    import numpy as np

    from distill.data.sample_table import sample_column, sample_domains

    folder = DomainFolder(tree)
    domain_index = {d: i for i, d in enumerate(reversed(folder.domains))}
    for samples in (folder.select(["photo", "art"], "train"), list(folder.select(["zz"], "test")), folder.samples):
        for name in ("index", "label", "size"):
            assert sample_column(samples, name).tolist() == [getattr(s, name) for s in samples]
            assert sample_column(samples, name).dtype == np.int64
        assert sample_domains(samples, domain_index).tolist() == [domain_index[s.domain] for s in samples]
    with pytest.raises(KeyError, match="photo"):
        sample_domains(folder.select(["photo"]), {"art": 0})


def test_the_fingerprint_hashes_the_same_lines_in_any_chunking(tree: Path, monkeypatch) -> None:
    """hash_file_lines hashes rows in chunks (no Sample per image): chunk boundaries change nothing."""
    import distill.data.sample_table as table

    ds = DomainFolder(tree, test_fraction=0.3, pretrain_fraction=0.2, split_seed=3)
    whole, inputs = ds.fingerprint(["photo", "zz"]), ds.fingerprint_inputs()
    monkeypatch.setattr(table, "_LINES", 4)  # 75 images: many chunks, the last one short
    assert ds.fingerprint(["photo", "zz"]) == whole and ds.fingerprint_inputs() == inputs
    h = hashlib.sha256()
    table.hash_file_lines(h, ds.select(["zz"], "train"))
    expected = "".join(f"{s.relpath}\t{s.size}\t{s.class_name}\n" for s in ds.select(["zz"], "train"))
    assert h.hexdigest() == hashlib.sha256(expected.encode()).hexdigest()


def test_a_whole_table_hashes_as_its_selection(tree: Path, monkeypatch) -> None:
    """hash_file_lines on a table without positions (every row) makes its rows a chunk at a time."""
    import distill.data.sample_table as table

    ds = DomainFolder(tree)
    monkeypatch.setattr(table, "_LINES", 4)
    whole, selected = hashlib.sha256(), hashlib.sha256()
    table.hash_file_lines(whole, ds.samples)
    table.hash_file_lines(selected, ds.samples.take(np.arange(len(ds.samples))))
    expected = "".join(f"{s.relpath}\t{s.size}\t{s.class_name}\n" for s in ds.samples)
    assert ds.samples.positions is None
    assert whole.hexdigest() == selected.hexdigest() == hashlib.sha256(expected.encode()).hexdigest()
