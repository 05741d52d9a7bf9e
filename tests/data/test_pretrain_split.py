"""The stand-in teacher's pretraining pool: carved from the top of the path hash, so test and val never move;
out of every default selection; in the fingerprint only when there is one."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from distill.config import load_train_config
from distill.data.folder import DomainFolder, split_of
from distill.errors import DistillError
from tests.shapes import make_shapes_root


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_shapes_root(tmp_path_factory.mktemp("pool"), ["red", "green"], per_class=40)


def _relpaths(ds: DomainFolder, split: str) -> set[str]:
    return {s.relpath for s in ds.select(split=split)}


def test_test_and_val_are_the_same_whatever_the_pool(root: Path) -> None:
    base = DomainFolder(root)
    for fraction in (0.1, 0.3, 0.5):
        ds = DomainFolder(root, pretrain_fraction=fraction)
        assert _relpaths(ds, "test") == _relpaths(base, "test") and _relpaths(ds, "val") == _relpaths(base, "val")
        pool = _relpaths(ds, "pretrain")
        assert pool and _relpaths(ds, "train") == _relpaths(base, "train") - pool  # the pool comes out of train only
        assert 0.5 * fraction < len(pool) / len(ds) < 1.5 * fraction  # 240 images: loose, a wrong formula still fails
    grown = DomainFolder(root, pretrain_fraction=0.4)
    assert _relpaths(DomainFolder(root, pretrain_fraction=0.2), "pretrain") < _relpaths(grown, "pretrain")
    assert all(s.split == split_of(s.relpath, 0.3, 0, 0.1, 0.4) for s in grown.samples)


def test_the_pool_is_never_in_a_default_selection(root: Path) -> None:
    ds = DomainFolder(root, pretrain_fraction=0.3)
    pool = _relpaths(ds, "pretrain")
    assert pool and not pool & {s.relpath for s in ds.select()} and not pool & {s.relpath for s in ds.select(["red"])}
    assert len(ds.select()) + len(pool) == len(ds.samples)
    counts = ds.summary()
    assert sum(c["pretrain"] for c in counts.values()) == len(pool)
    assert sum(sum(c.values()) for c in counts.values()) == len(ds.samples)
    assert ds.fingerprint_inputs()["images"] == len(ds.select()) and ds.fingerprint_inputs()["pretrain_fraction"] == 0.3


def test_fingerprint_unchanged_without_a_pool_and_changed_with_one(root: Path) -> None:
    ds = DomainFolder(root)
    h = hashlib.sha256()  # the fingerprint as it was before pools existed: every recorded cache keeps matching
    h.update(json.dumps({"classes": ds.classes, "test_fraction": 0.3, "split_seed": 0, "val_fraction": 0.1},
                        sort_keys=True).encode())
    for s in ds.samples:
        h.update(f"{s.relpath}\t{s.size}\t{s.class_name}\n".encode())
    assert ds.fingerprint() == DomainFolder(root, pretrain_fraction=0.0).fingerprint() == h.hexdigest()
    assert len({DomainFolder(root, pretrain_fraction=f).fingerprint() for f in (0.0, 0.2, 0.3)}) == 3


def test_fractions_that_leave_no_train_split_are_refused(root: Path) -> None:
    with pytest.raises(DistillError, match=r"test_fraction 0.3 \+ val_fraction 0.1 .* pretrain_fraction 0.7 .* "
                                           "leaves no train split"):
        DomainFolder(root, pretrain_fraction=0.7)
    with pytest.raises(DistillError, match="pretrain_fraction must be in"):
        DomainFolder(root, pretrain_fraction=-0.1)
    DomainFolder(root, test_fraction=0.3, val_fraction=0.1, pretrain_fraction=0.6)  # 0.97: a little train is left
    data = {"root": str(root), "source": ["red"], "pretrain_fraction": 0.65}
    with pytest.raises(DistillError, match=r"data.*leaves no train split"):  # refused at the config boundary too
        load_train_config(None, base={"data": data, "strategy": {"name": "erm"}})
