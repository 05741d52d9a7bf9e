"""The validation split: carved from train by the path hash, disjoint from train and test, stable, and part
of the dataset's identity."""
from __future__ import annotations

from pathlib import Path

import pytest

from distill.data.folder import DomainFolder, split_of
from tests.shapes import make_shapes_root


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_shapes_root(tmp_path_factory.mktemp("val"), ["red", "green"], per_class=40)


def test_val_is_disjoint_carved_from_train_and_leaves_test_alone(root: Path) -> None:
    ds = DomainFolder(root, test_fraction=0.3, val_fraction=0.2)
    train, val, test = ({s.relpath for s in ds.select(split=x)} for x in ("train", "val", "test"))
    assert train and val and test
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == {s.relpath for s in ds.samples}
    # about 0.2 of the non-test images (240 images: a loose bound that a wrong formula still fails)
    assert 0.1 < len(val) / (len(train) + len(val)) < 0.3
    # the test split does not depend on val_fraction; val only takes images from train
    no_val = DomainFolder(root, test_fraction=0.3, val_fraction=0.0)
    assert {s.relpath for s in no_val.select(split="test")} == test
    assert {s.relpath for s in no_val.select(split="train")} == train | val
    # more val takes more from train, never gives any back
    more = DomainFolder(root, test_fraction=0.3, val_fraction=0.4)
    assert val < {s.relpath for s in more.select(split="val")}


def test_val_split_is_stable_and_in_the_fingerprint(root: Path) -> None:
    a = DomainFolder(root, test_fraction=0.3, val_fraction=0.1)
    b = DomainFolder(root, test_fraction=0.3, val_fraction=0.1)
    assert [s.split for s in a.samples] == [s.split for s in b.samples]
    assert all(s.split == split_of(s.relpath, 0.3, 0, 0.1) for s in a.samples)
    assert a.fingerprint() == b.fingerprint()
    assert DomainFolder(root, test_fraction=0.3, val_fraction=0.2).fingerprint() != a.fingerprint()
    assert a.summary()["red"]["val"] == len(a.select(["red"], "val")) > 0
