"""View params are a pure function of (seed, sample, view) and replay the same crop at any size."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from distill.data.views import ViewConfig, apply_view, clean_box, view_params
from distill.errors import DistillError


def _image(w: int = 61, h: int = 43, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_params_ignore_global_rng_and_depend_on_row():
    cfg = ViewConfig()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    a = view_params(7, 12, 2, (61, 43), cfg)
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    _ = np.random.rand(5), torch.rand(5), random.random()
    assert np.array_equal(a, view_params(7, 12, 2, (61, 43), cfg))
    others = [view_params(8, 12, 2, (61, 43), cfg), view_params(7, 13, 2, (61, 43), cfg),
              view_params(7, 12, 3, (61, 43), cfg)]
    assert all(not np.array_equal(a, o) for o in others)
    assert a.dtype == np.float32 and a.shape == (5,)


def test_boxes_respect_config():
    W, H = 80, 60
    for hflip, want in ((0.0, {0.0}), (1.0, {1.0})):
        cfg = ViewConfig(scale=(0.3, 0.6), ratio=(0.8, 1.25), hflip=hflip)
        flips = set()
        for i in range(200):
            x0, y0, w, h, f = view_params(0, i, 1, (W, H), cfg).tolist()
            assert 0 <= x0 and 0 <= y0 and x0 + w <= 1 + 1e-6 and y0 + h <= 1 + 1e-6
            assert 0.25 <= w * h <= 0.65  # area fraction (integer rounding tolerance)
            flips.add(f)
        assert flips == want
    mixed = {view_params(0, i, 1, (W, H), ViewConfig(hflip=0.5))[4] for i in range(50)}
    assert mixed == {0.0, 1.0}


def test_clean_box_matches_open_clip_resize_modes():
    assert np.allclose(clean_box((64, 32), (32, 32), "shortest"), [0.25, 0, 0.5, 1, 0])
    assert np.allclose(clean_box((32, 64), (32, 32), "shortest"), [0, 0.25, 1, 0.5, 0])
    assert np.allclose(clean_box((64, 32), (32, 32), "longest"), [0, -0.5, 1, 2, 0])
    assert np.allclose(clean_box((64, 32), (32, 32), "squash"), [0, 0, 1, 1, 0])
    assert np.allclose(view_params(0, 3, 0, (64, 32), ViewConfig(), clean_size=(32, 32)), [0.25, 0, 0.5, 1, 0])


@pytest.mark.parametrize("size", [(32, 32), (48, 40)])
def test_apply_view_equals_torchvision_resized_crop(size):
    img = _image()
    W, H = img.size
    for i in range(10):
        p = view_params(3, i, 1, img.size, ViewConfig(hflip=0.5))
        x0, y0, w, h, flip = p.tolist()
        want = TF.resized_crop(img, round(y0 * H), round(x0 * W), round(h * H), round(w * W), list(size),
                               InterpolationMode.BICUBIC, antialias=True)
        if flip:
            want = TF.hflip(want)
        got = apply_view(img, p, size, "bicubic")
        assert got.size == (size[1], size[0])
        assert np.array_equal(np.asarray(got), np.asarray(want))


def test_bad_config_is_one_line_error():
    with pytest.raises(DistillError, match="hflip"):
        ViewConfig(hflip=1.5)
    with pytest.raises(DistillError, match="scale"):
        ViewConfig(scale=(0.0, 1.0))
    with pytest.raises(DistillError, match="unknown key"):
        ViewConfig.from_dict({"scale": [0.5, 1.0], "jitter": 0.1})
    assert ViewConfig.from_dict(ViewConfig(hflip=0.0).to_dict()) == ViewConfig(hflip=0.0)
