"""Decode an image file to RGB, or fail with one line naming the file.

Convertible images are converted: grayscale, palette, CMYK, alpha and 16-bit PNGs become
8-bit RGB. Undecodable ones raise :class:`BadImageError`: 0-byte files, non-images with an
image extension, truncated JPEGs, and images over PIL's decompression-bomb limit (their size
is refused before any pixel is decoded).

EXIF orientation is applied (``PIL.ImageOps.exif_transpose``), as torchvision's and timm's
loaders that users compare against do: a phone photo stored sideways with an orientation tag is
seen upright. Caches record it (``preprocess.exif_transpose``) and refuse caches built before it.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from distill.errors import DistillError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

_HINT = "fix or remove it, or pass --skip-bad"
_MESSAGE = re.compile(rf"(?P<path>.*?): bad image \((?P<reason>.*)\); {re.escape(_HINT)}")


class BadImageError(DistillError):
    """An image file that cannot be decoded to RGB. Carries the offending ``path`` and ``reason``.

    ``BadImageError(message)`` (one argument) also works, as torch's DataLoader needs: it re-raises a
    worker's exception as ``type(e)(text)``, where the text is "Caught BadImageError in DataLoader worker
    process 0. Original Traceback ..." ending in the worker's own message. That message (its last line) is
    kept, so a bad image read by a worker is still the CLI's one ``error:`` line, not a RuntimeError
    (torch's fallback for a type it cannot build from one string). Pickling round-trips the same way.
    """

    def __init__(self, path: str | Path, reason: str | None = None):
        if reason is None:
            lines = [line for line in str(path).splitlines() if line.strip()]
            message = (lines or [""])[-1].split(f"{type(self).__name__}: ", 1)[-1].strip()
            found = _MESSAGE.fullmatch(message)
            if not found:  # not this class's message: keep it whole
                self.path, self.reason = "", message
                super().__init__(message)
                return
            path, reason = found["path"], found["reason"]
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: bad image ({reason}); {_HINT}")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        # 16-bit (or 32-bit) grayscale: PIL's convert("RGB") clips instead of scaling.
        arr = np.asarray(img).astype(np.float64)
        top = float(arr.max(initial=0))
        if img.mode.startswith("I;16"):
            peak = 65535.0  # full scale of the format, whatever the content (a dark image stays dark)
        elif img.mode == "I":
            peak = 255.0 if top <= 255 else 65535.0 if top <= 65535 else top
        else:  # "F": [0, 1] floats, 8-bit-range floats, or anything else stretched to its max
            peak = 1.0 if top <= 1.0 else 255.0 if top <= 255 else top
        arr8 = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def _upright(img: Image.Image) -> Image.Image:
    """``img`` rotated/flipped as its EXIF orientation tag says (unchanged without one). A malformed
    EXIF block is not worth failing the image for: it is then read as stored."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - PIL raises assorted errors on broken EXIF
        return img


def load_rgb(path: str | Path) -> Image.Image:
    """Open ``path`` and return a fully decoded 8-bit RGB ``PIL.Image``.

    Raises:
        BadImageError: the file cannot be decoded to RGB (message names the file).
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and 2x that; treat both as bombs.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return _to_rgb(_upright(img))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImageError(path, f"over PIL's decompression-bomb limit: {e}") from None
    except UnidentifiedImageError:
        size = path.stat().st_size if path.exists() else 0
        raise BadImageError(path, "empty file" if size == 0 else "not a readable image") from None
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImageError(path, f"cannot decode: {e}") from None
