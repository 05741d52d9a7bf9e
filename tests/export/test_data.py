"""distill.export.data: which images parity, accuracy and calibration run on."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from distill.data.folder import DomainFolder
from distill.errors import DistillError
from distill.export import ExportConfig
from distill.export.data import load_export_data, relabel
from distill.export.images import load_images
from distill.export.log import ExportLog
from distill.student.model import default_spec
from distill.utils import rowfile as rowfile_mod


def _spec(classes: list[str]):
    spec = default_spec("test_resnet", classes, input_size=32)
    spec.interpolation = "bilinear"
    return spec


def test_without_data_parity_runs_on_noise_and_says_so() -> None:
    lines: list[str] = []
    data = load_export_data(ExportConfig(), _spec(["a", "b"]), [], ExportLog(lines.append))
    assert len(data.eval_images) == 32 and data.calib_images is None and not data.labeled
    assert lines == ["warning: no data_root: fp32/fp16 parity is checked on 32 random-noise images and no accuracy "
                     "is measured"]


def test_calibration_is_spread_over_source_and_target_domains(tiny_root: Path) -> None:
    folder = DomainFolder(tiny_root)
    cfg = ExportConfig(precisions=("int8",), data_root=str(tiny_root), test_fraction=0.3, split_seed=0,
                       val_fraction=0.1, calib_count=7, eval_count=3, target_domains=("noisy", "clean"))
    data = load_export_data(cfg, _spec(folder.classes), ["clean", "dark", "elsewhere"], ExportLog(lambda s: None))
    info = data.info
    assert info["calib_domains"] == ["clean", "dark"]  # the run's sources that exist here
    assert info["target_domains"] == ["noisy"]  # a target already calibrated on is not added twice
    assert info["calib_per_domain"] == {"clean": 3, "dark": 2, "noisy": 2} and len(data.calib_images) == 7
    assert info["eval_count"] == {"clean": 3, "dark": 3, "noisy": 3} and data.labeled


def test_labels_follow_the_student_class_order(tiny_root: Path) -> None:
    folder = DomainFolder(tiny_root)
    images = load_images(folder, folder.select(["clean"], "test")[:8], _spec(folder.classes))
    before = images.labels.copy()
    reverse = folder.classes[::-1]
    relabel(images, folder.classes, reverse, str(tiny_root))
    assert np.array_equal(images.labels, len(reverse) - 1 - before)
    with pytest.raises(DistillError, match="not among the student's"):
        relabel(images, folder.classes, reverse[:-1], str(tiny_root))


def test_a_test_split_past_the_spill_size_is_memory_mapped_from_the_given_folder(
        tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--eval-count 0 on a large test split: the pixels go to an unlinked file in the export's folder (anonymous
    memory does not grow with the images; benchmarks/export_memory.py), with the same values, and an undecodable
    image is still skipped and listed."""
    from distill.export import images as images_mod

    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    folder = DomainFolder(root)
    samples = folder.select(["clean", "dark"], "test")
    bad = folder.path(samples[3])
    bad.write_bytes(b"not an image")
    spec = _spec(folder.classes)
    in_ram = load_images(folder, samples, spec)
    assert not isinstance(in_ram.images, np.memmap)
    monkeypatch.setattr(images_mod, "SPILL_BYTES", 0)
    spill = tmp_path / "spill"
    spill.mkdir()
    mapped = load_images(folder, samples, spec, spill_dir=spill)
    assert isinstance(mapped.images, np.memmap) and mapped.images.shape == in_ram.images.shape
    assert np.array_equal(mapped.images, in_ram.images) and np.array_equal(mapped.labels, in_ram.labels)
    assert mapped.skipped == in_ram.skipped == [str(bad)] and len(mapped) == len(samples) - 1
    assert list(spill.iterdir()) == []  # unlinked: nothing is left behind, even on a crash


def test_without_posix_fallocate_the_pixels_are_still_mapped(tiny_root: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """macOS has no os.posix_fallocate: the spill file is sized by truncate instead."""
    from distill.export import images as images_mod

    monkeypatch.setattr(images_mod, "SPILL_BYTES", 0)
    monkeypatch.delattr(rowfile_mod.os, "posix_fallocate")
    folder = DomainFolder(tiny_root)
    samples = folder.select(["clean"], "test")[:8]
    mapped = load_images(folder, samples, _spec(folder.classes), spill_dir=tmp_path)
    assert isinstance(mapped.images, np.memmap)
    assert np.array_equal(mapped.images, load_images(folder, samples, _spec(folder.classes)).images)


def test_no_room_for_the_test_pixels_is_one_line_naming_the_folder(
        tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk found before decoding (posix_fallocate), not as a SIGBUS halfway through."""
    from distill.export import images as images_mod

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(images_mod, "SPILL_BYTES", 0)
    monkeypatch.setattr(rowfile_mod.os, "posix_fallocate", full)
    folder = DomainFolder(tiny_root)
    with pytest.raises(DistillError, match=rf"^{re.escape(str(tmp_path))}: cannot hold 8 images' pixels .* there: "
                                           r"No space left on device; free space there or read fewer images "
                                           r"\(--eval-count, --calib-count\)$"):
        load_images(folder, folder.select(["clean"], "test")[:8], _spec(folder.classes), spill_dir=tmp_path)


def test_a_file_system_without_fallocate_gets_a_sparse_spill_file(tiny_root: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """EOPNOTSUPP (musl, some file systems) is not a full disk: the file is sized by truncate, and the spill folder
    is made when it is missing (and only then: an export that never spills leaves none)."""
    import errno

    from distill.export import images as images_mod

    def unsupported(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(rowfile_mod.os, "posix_fallocate", unsupported)
    folder = DomainFolder(tiny_root)
    samples = folder.select(["clean"], "test")[:8]
    spill = tmp_path / "new" / "spill"
    in_ram = load_images(folder, samples, _spec(folder.classes), spill_dir=spill)
    assert not isinstance(in_ram.images, np.memmap) and not spill.exists()
    monkeypatch.setattr(images_mod, "SPILL_BYTES", 0)
    mapped = load_images(folder, samples, _spec(folder.classes), spill_dir=spill)
    assert isinstance(mapped.images, np.memmap) and np.array_equal(mapped.images, in_ram.images)
    assert spill.is_dir() and list(spill.iterdir()) == []


def test_decoding_many_test_images_shows_progress(tiny_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distill.export import data as data_mod
    from distill.export import images as images_mod

    monkeypatch.setattr(images_mod, "PROGRESS_EVERY", 4)
    monkeypatch.setattr(data_mod, "PROGRESS_EVERY", 4)
    lines: list[str] = []
    cfg = ExportConfig(data_root=str(tiny_root), eval_count=None, eval_domains=("clean",))
    data = load_export_data(cfg, _spec(DomainFolder(tiny_root).classes), [], ExportLog(lines.append))
    n = len(data.eval_images)
    step = max(1, n // 10)
    assert lines == [f"decoding {n:,} test images of clean",
                     *(f"  read {i:,} of {n:,} images" for i in range(step, n, step)),
                     f"  decoded {n:,} of {n:,} images"]


def test_a_non_utf8_file_name_is_left_out_and_listed_as_undecodable_images_are(tiny_root: Path, tmp_path: Path) -> None:
    """Export and QAD skip bad images always (and list them): a file whose name is not UTF-8 (QA K F2) is one more."""
    import os

    root = Path(shutil.copytree(tiny_root, tmp_path / "tiny"))
    name = os.path.join(os.fsencode(root / "clean"), os.fsencode(next((root / "clean").iterdir()).name), b"\xe9.png")
    shutil.copy(next(p for p in (root / "clean").rglob("*.png")), os.fsdecode(name))
    lines: list[str] = []
    folder = DomainFolder(root, skip_bad=True)
    cfg = ExportConfig(data_root=str(root), test_fraction=0.3, split_seed=0, val_fraction=0.1, eval_count=3)
    data = load_export_data(cfg, _spec(folder.classes), ["clean"], ExportLog(lines.append))
    shown = name.decode("utf-8", "backslashreplace")
    assert data.info["skipped"] == [shown] and data.info["fingerprint"] == DomainFolder(tiny_root).fingerprint()
    assert lines == [f"warning: 1 undecodable image(s) skipped: {shown}"]
