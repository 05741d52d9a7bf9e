"""load_rgb: every bad-image kind fails with one line naming the file; odd modes become RGB."""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distill.data.images import BadImageError, load_rgb
from distill.errors import DistillError


def _jpeg_bytes(size: int = 64) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _bad(tmp_path: Path, kind: str) -> Path:
    if kind == "truncated_jpeg":
        data = _jpeg_bytes()
        path, payload = tmp_path / "truncated.jpg", data[: len(data) // 2]
    elif kind == "empty":
        path, payload = tmp_path / "empty.jpg", b""
    elif kind == "not_an_image":
        path, payload = tmp_path / "readme.jpg", b"this is a text file, not a JPEG\n" * 4
    else:
        raise ValueError(kind)
    path.write_bytes(payload)
    return path


@pytest.mark.parametrize("kind,reason", [
    ("truncated_jpeg", "cannot decode"),
    ("empty", "empty file"),
    ("not_an_image", "not a readable image"),
])
def test_bad_images_raise_one_line_naming_the_path(tmp_path: Path, kind: str, reason: str) -> None:
    path = _bad(tmp_path, kind)
    with pytest.raises(BadImageError) as err:
        load_rgb(path)
    msg = str(err.value)
    assert str(path) in msg and reason in msg and "\n" not in msg
    assert err.value.path == str(path)
    assert isinstance(err.value, DistillError)  # the CLI prints it without a traceback


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadImageError, match="file not found"):
        load_rgb(tmp_path / "nope.png")


def test_good_rgb_jpeg_is_usable_after_load(tmp_path: Path) -> None:
    path = tmp_path / "ok.jpg"
    path.write_bytes(_jpeg_bytes(16))
    img = load_rgb(path)
    assert img.mode == "RGB" and img.size == (16, 16)
    assert np.asarray(img).shape == (16, 16, 3)  # pixels still readable after the file is closed


def test_grayscale_to_rgb(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    Image.fromarray(np.array([[0, 77], [200, 255]], dtype=np.uint8), mode="L").save(path)
    arr = np.asarray(load_rgb(path))
    assert arr.shape == (2, 2, 3)
    assert arr[..., 0].tolist() == [[0, 77], [200, 255]]
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


def test_cmyk_jpeg_to_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path, quality=95)  # pure red in CMYK
    assert Image.open(path).mode == "CMYK"
    arr = np.asarray(load_rgb(path)).astype(int)
    assert arr.shape == (8, 8, 3)
    r, g, b = arr[4, 4]
    assert r > 200 and g < 60 and b < 60


def test_palette_png_with_transparency_to_rgb(tmp_path: Path) -> None:
    path = tmp_path / "pal.png"
    img = Image.new("P", (4, 4), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    img.putpixel((1, 1), 1)
    img.save(path, transparency=0)
    reopened = Image.open(path)
    assert reopened.mode == "P" and "transparency" in reopened.info
    arr = np.asarray(load_rgb(path))
    assert arr.shape == (4, 4, 3)
    assert arr[0, 0].tolist() == [255, 0, 0] and arr[1, 1].tolist() == [0, 0, 255]


def test_16bit_grayscale_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    Image.fromarray(np.array([[65535, 32768], [0, 257]], dtype=np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    arr = np.asarray(load_rgb(path))[..., 0].astype(int)
    assert arr[0, 0] == 255
    assert abs(arr[0, 1] - 128) <= 1
    assert arr[1, 0] == 0 and arr[1, 1] == 1


def test_dark_16bit_png_stays_dark(tmp_path: Path) -> None:
    """A 16-bit image whose pixels are all <= 255 is near black, not stretched to white."""
    path = tmp_path / "dark16.png"
    Image.fromarray(np.array([[255, 100]], dtype=np.uint16)).save(path)
    assert np.asarray(load_rgb(path))[..., 0].max() <= 1


@pytest.mark.parametrize("limit", [100, 300])  # 2x over the limit -> error; 1x-2x -> warning
def test_decompression_bomb_is_bad_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (20, 20)).save(path)  # 400 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(BadImageError, match="decompression-bomb") as err:
        load_rgb(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """A 40x20 landscape stored with orientation 6 ("rotate 90 CW to view") is read as 20x40, upright."""
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 0, 0), (0, 0, 10, 20))  # red strip on the stored image's left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    path = tmp_path / "exif_rotated.jpg"
    img.save(path, exif=exif, quality=95)
    out = load_rgb(path)
    assert out.size == (20, 40)
    top, bottom = np.asarray(out)[:5].mean(axis=(0, 1)), np.asarray(out)[-5:].mean(axis=(0, 1))
    assert top[0] > 200 and bottom[0] < 50  # the left edge is now the top


def test_cache_records_exif_and_refuses_caches_built_before(tmp_path: Path) -> None:
    import json

    import torch

    from distill.data import DomainFolder
    from distill.teacher import Teacher
    from distill.teacher.cache import CacheMismatchError, TeacherCache, build_cache

    (tmp_path / "d" / "a" / "x").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "d" / "a" / "x" / "0.png")
    ds = DomainFolder(tmp_path / "d")
    torch.manual_seed(0)
    out = build_cache(ds, Teacher("distill-demo-vit", None, ds.classes), tmp_path / "c", num_workers=0, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["preprocess"]["exif_transpose"] is True
    del manifest["preprocess"]["exif_transpose"]  # as every cache built before EXIF was applied
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CacheMismatchError) as e:
        TeacherCache.open(out)
    assert str(e.value) == (
        f"{out}: teacher cache does not match this run (cache vs expected: preprocess.exif_transpose: <absent> vs "
        "true (images are now read with their EXIF orientation applied)); rebuild it with `distill cache build` or "
        "point to the matching cache")


class _Files(torch.utils.data.Dataset):
    def __init__(self, paths: list[Path]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> int:
        load_rgb(self.paths[i])
        return i


def test_bad_image_in_a_dataloader_worker_is_still_a_bad_image_error(tmp_path: Path) -> None:
    """torch re-raises a worker's exception as ``type(e)(text)`` (text: "Caught ... Original Traceback ...");
    a type it cannot build from one string became a RuntimeError, and the CLI printed a 45-line traceback."""
    path = _bad(tmp_path, "truncated_jpeg")
    with pytest.raises(BadImageError) as direct:
        load_rgb(path)
    loader = torch.utils.data.DataLoader(_Files([path]), batch_size=1, num_workers=1)
    with pytest.raises(BadImageError) as err:
        next(iter(loader))
    assert str(err.value) == str(direct.value) and "\n" not in str(err.value)  # the worker's line, no traceback
    assert err.value.path == str(path) and err.value.reason == direct.value.reason
    again = pickle.loads(pickle.dumps(direct.value))  # the same one-argument form
    assert (str(again), again.path, again.reason) == (str(direct.value), direct.value.path, direct.value.reason)
    assert str(BadImageError("something else")) == "something else"
