"""How the built-in digits suite's images are made: padding, the MNIST-M blend, the MNIST-C corruptions, PNG.

Pure functions of a source array and a seeded generator (:mod:`distill.data.builtin` picks the
rows and seeds, and writes the suite); each returns the 32x32 RGB uint8 image it makes.
"""
from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import convolve, gaussian_filter, sobel

SIZE = 32


def pad32(gray: np.ndarray) -> np.ndarray:
    """Center a [h, w] image on a zero 32x32 canvas."""
    h, w = gray.shape
    top, left = (SIZE - h) // 2, (SIZE - w) // 2
    out = np.zeros((SIZE, SIZE), dtype=gray.dtype)
    out[top:top + h, left:left + w] = gray
    return out


def rgb(gray: np.ndarray) -> np.ndarray:
    """[32, 32] float in [0, 1] or uint8 -> [32, 32, 3] uint8."""
    if gray.dtype != np.uint8:
        gray = (np.clip(gray, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def render_optdigit(img8: np.ndarray) -> np.ndarray:
    up = Image.fromarray((img8 / 16.0).astype(np.float32)).resize((24, 24), Image.Resampling.BICUBIC)
    return rgb(pad32(np.clip(np.asarray(up), 0.0, 1.0)))


def render_mnist_m(digit28: np.ndarray, photos: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, str]:
    name = sorted(photos)[int(rng.integers(len(photos)))]
    photo = photos[name]
    s = int(rng.integers(32, 129))
    y0, x0 = int(rng.integers(0, photo.shape[0] - s + 1)), int(rng.integers(0, photo.shape[1] - s + 1))
    crop = Image.fromarray(photo[y0:y0 + s, x0:x0 + s]).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    digit = pad32(digit28).astype(np.int16)[:, :, None]
    out = np.abs(np.asarray(crop, dtype=np.int16) - digit).astype(np.uint8)
    return out, f"{name}@x={x0},y={y0},size={s}"


# ---------------------------------------------------------------------------- MNIST-C corruptions
# Each takes a [32, 32] float32 image in [0, 1] and a Generator, and returns one in [0, 1].
def _affine(x: np.ndarray, m: np.ndarray, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Apply ``p' = m @ (p - c) + c + shift`` about the image center, bilinear."""
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
    x = gaussian_filter(x, 0.7).copy()
    d = rng.integers(-1, 2, size=(SIZE, SIZE, 2))  # swap each pixel with a random neighbour (MNIST-C)
    for h in range(SIZE - 1, 0, -1):
        for w in range(SIZE - 1, 0, -1):
            hp, wp = min(max(h + d[h, w, 0], 0), SIZE - 1), min(max(w + d[h, w, 1], 0), SIZE - 1)
            x[h, w], x[hp, wp] = x[hp, wp], x[h, w]
    return gaussian_filter(x, 0.7)


def _motion_blur(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
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
    acc = np.zeros((SIZE, SIZE), np.float32)
    for i, n in enumerate(octaves):
        grid = Image.fromarray(rng.random((n, n)).astype(np.float32))
        acc += np.asarray(grid.resize((SIZE, SIZE), Image.Resampling.BICUBIC)) * 0.5 ** i
    acc -= acc.min()
    return acc / max(float(acc.max()), 1e-6)


def _fog(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (x + rng.uniform(0.5, 0.8) * _smooth_noise(rng)) / 1.4


def _spatter(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    blobs = gaussian_filter(rng.random((SIZE, SIZE)), rng.uniform(1.0, 2.0))
    blobs = (blobs - blobs.mean()) / max(float(blobs.std()), 1e-6)
    mask = blobs > rng.uniform(1.2, 1.8)
    return np.where(mask, rng.uniform(0.5, 0.9), x)


def _draw(x: np.ndarray, points: list[tuple[float, float]], width: int, dots: bool = False) -> np.ndarray:
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
    s = gaussian_filter(x, rng.uniform(0.5, 1.0))
    mag = np.hypot(sobel(s, 0), sobel(s, 1))
    return (mag > 0.3 * max(float(mag.max()), 1e-6)).astype(np.float32)


CORRUPTIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "shot_noise": _shot_noise, "impulse_noise": _impulse_noise, "glass_blur": _glass_blur,
    "motion_blur": _motion_blur, "shear": _shear, "scale": _scale, "rotate": _rotate,
    "brightness": _brightness, "translate": _translate, "stripe": _stripe, "fog": _fog,
    "spatter": _spatter, "dotted_line": _dotted_line, "zigzag": _zigzag, "canny_edges": _canny_edges,
}


def render_mnist_c(digit28: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    name = sorted(CORRUPTIONS)[int(rng.integers(len(CORRUPTIONS)))]
    x = pad32(digit28).astype(np.float32) / 255.0
    return rgb(np.clip(CORRUPTIONS[name](x, rng), 0.0, 1.0)), name



def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG", compress_level=6, optimize=False)
    return buf.getvalue()
