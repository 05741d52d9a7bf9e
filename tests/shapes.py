"""A tiny synthetic multi-domain image set for tests: the class is the shape, the domain the colour.

``make_shapes_root(root, ["red", "green"], per_class=8)`` writes ROOT/DOMAIN/CLASS/K.png,
16x16 RGB: a circle, a square or stripes (:data:`CLASSES`) in the domain's colour over
uniform noise seeded by (domain position, K). Small enough that a test student learns it in
a few steps, and the domains differ only in colour, so it also exercises domain shift.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["circle", "square", "stripes"]
COLOURS = {"red": (1.0, 0.2, 0.2), "green": (0.2, 1.0, 0.2), "blue": (0.3, 0.3, 1.0)}


def draw(cls: str, colour: tuple[float, float, float], seed: int, k: int) -> Image.Image:
    """One 16x16 image of shape ``cls`` (varying with ``k``) in ``colour`` over noise from ``seed``."""
    rng = np.random.default_rng(seed)
    img = np.zeros((16, 16, 3), np.float32) + rng.uniform(0, 0.3, (16, 16, 3))
    yy, xx = np.mgrid[:16, :16]
    if cls == "circle":
        mask = (yy - 8) ** 2 + (xx - 8) ** 2 < (4 + k % 3) ** 2
    elif cls == "square":
        mask = (abs(yy - 8) < 4 + k % 2) & (abs(xx - 8) < 4 + k % 2)
    elif cls == "stripes":
        mask = (xx // (2 + k % 2)) % 2 == 0
    else:
        raise ValueError(f"unknown shape class '{cls}' (have {CLASSES})")
    img[mask] = np.array(colour, np.float32)
    return Image.fromarray((img.clip(0, 1) * 255).astype(np.uint8))


def make_shapes_root(root: Path, domains: list[str], per_class: int) -> Path:
    """Write ``per_class`` images of every class in every domain (a colour name of :data:`COLOURS`)."""
    for d, dom in enumerate(domains):
        for cls in CLASSES:
            (root / dom / cls).mkdir(parents=True)
            for k in range(per_class):
                draw(cls, COLOURS[dom], d * 1000 + k, k).save(root / dom / cls / f"{k}.png")
    return root
