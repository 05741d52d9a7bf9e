"""View policies: params are a pure function of (seed, sample, view), and a vector replays to the same bytes."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from distill.data.view_policy import (
    LAM,
    MIX_MODE,
    PARAMS_LAYOUT,
    Mix,
    PartnerPools,
    PolicyRender,
    ViewPolicy,
    cutmix_box,
    draw_params,
    preset,
    render_view,
)
from distill.data.views import ViewConfig, view_params, view_pixels
from distill.errors import DistillError

REPO = Path(__file__).resolve().parents[2]
SIZE = (32, 32)
POOL = np.arange(8, dtype=np.int64)


def _images(n: int = 8) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (int(rng.integers(24, 60)), int(rng.integers(24, 60)), 3),
                                         dtype=np.uint8)) for _ in range(n)]


def _draws(policy: ViewPolicy, images: list[Image.Image], views: int = 6) -> list[tuple[int, int, np.ndarray, int, int]]:
    out = []
    for i, img in enumerate(images):
        for v in range(views):
            vec, partner, pview = draw_params(7, i, v, img.size, policy, POOL, size=SIZE)
            out.append((i, v, vec, partner, pview))
    return out


def _render(policy: ViewPolicy, images, i: int, view: int, vec, partner: int, pview: int) -> torch.Tensor:
    """Row ``(i, view)`` rendered at SIZE, its partner's params drawn afresh (``view`` only labels the row)."""
    if partner < 0:
        return render_view(images[i], vec, SIZE, "bicubic")
    pvec = draw_params(7, partner, pview, images[partner].size, policy, POOL, size=SIZE)[0]
    return render_view(images[i], vec, SIZE, "bicubic", images[partner], pvec)


def test_layout_and_constants():
    assert len(PARAMS_LAYOUT) == 22 and PARAMS_LAYOUT[:5] == ("x0", "y0", "w", "h", "flip")
    assert PARAMS_LAYOUT[MIX_MODE] == "mix_mode" and PARAMS_LAYOUT[LAM] == "lam"
    assert preset("crops").layout == PARAMS_LAYOUT[:5] and preset("fm").layout == PARAMS_LAYOUT


def test_policy_round_trips_and_refuses_unknown_keys():
    pol = preset("fm", mixup=0.2)
    assert ViewPolicy.from_dict(pol.to_dict()) == pol and pol.mix.mixup_alpha == 0.2
    assert pol.crop.hflip == 0.0  # digits: no flips
    assert preset("crops").crop_only and not preset("crops", cutmix=1.0).crop_only
    with pytest.raises(DistillError, match="unknown key"):
        ViewPolicy.from_dict({**pol.to_dict(), "bogus": 1})
    with pytest.raises(DistillError, match="mix.prob"):
        Mix(prob=2.0)
    with pytest.raises(DistillError, match="unknown view policy"):
        preset("nope")


def test_draw_params_is_pure_and_keeps_the_crop_stream():
    pol, images = preset("fm"), _images()
    a, b = _draws(pol, images), _draws(pol, images)
    for (i, v, va, pa, wa), (_, _, vb, pb, wb) in zip(a, b):
        assert np.array_equal(va, vb) and (pa, wa) == (pb, wb)
        assert va.dtype == np.float32 and va.shape == (22,)
        crop = view_params(7, i, v, images[i].size, pol.crop, clean_size=SIZE)
        assert np.array_equal(va[:5], crop)  # the first 5 params are a crop-only cache's
    # the drawn views do differ: photometric ops and both mix modes occur
    vecs = np.stack([d[2] for d in a if d[1] > 0])
    assert set(vecs[:, MIX_MODE].tolist()) == {0.0, 1.0, 2.0}
    assert (vecs[:, PARAMS_LAYOUT.index("bright")] != 0).any()


def test_draw_params_is_identical_in_another_process():
    pol = preset("fm")
    code = ("import numpy as np, hashlib; from distill.data.view_policy import draw_params, preset; "
            "h = hashlib.sha256(); "
            "[h.update(np.append(draw_params(7, i, v, (40, 30), preset('fm'), np.arange(8), size=(32, 32))[0], "
            "draw_params(7, i, v, (40, 30), preset('fm'), np.arange(8), size=(32, 32))[1]).astype(np.float32)"
            ".tobytes()) for i in range(8) for v in range(6)]; print(h.hexdigest())")
    h = hashlib.sha256()
    for i in range(8):
        for v in range(6):
            vec, partner, _ = draw_params(7, i, v, (40, 30), pol, POOL, size=SIZE)
            h.update(np.append(vec, partner).astype(np.float32).tobytes())
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, check=True)
    assert out.stdout.strip() == h.hexdigest()


def test_view_zero_is_clean_and_partners_come_from_the_pool():
    pol, images = preset("fm"), _images()
    pools = PartnerPools.of([(i, "a" if i < 4 else "b", "train") for i in range(8)])
    for i, img in enumerate(images):
        vec, partner, _ = draw_params(7, i, 0, img.size, pol, pools.pool(i), size=SIZE)
        assert partner == -1 and vec[MIX_MODE] == 0 and vec[LAM] == 1
        for v in range(1, 8):
            vec, partner, pview = draw_params(7, i, v, img.size, pol, pools.pool(i), size=SIZE)
            if partner >= 0:
                assert partner != i and (partner < 4) == (i < 4) and pview == v and vec[MIX_MODE] > 0
    lonely = draw_params(7, 3, 1, (40, 30), ViewPolicy("m", mix=Mix(mixup_alpha=1.0)), np.array([3]), size=SIZE)
    assert lonely[1] == -1  # a pool of one: nothing to mix with


def test_cutmix_box_is_timms_rule(monkeypatch):
    from timm.data import mixup as timm_mixup

    for lam, cy, cx in ((0.3, 5, 30), (0.8, 16, 16), (0.5, 0, 31)):
        draws = iter([cy, cx])
        monkeypatch.setattr(timm_mixup.np.random, "randint", lambda *a, **k: next(draws))
        (yl, yu, xl, xu), lam_timm = timm_mixup.cutmix_bbox_and_lam((3, 32, 32), lam, correct_lam=True)
        assert cutmix_box((32, 32), lam, cy, cx) == ((int(yl), int(yu), int(xl), int(xu)), lam_timm)


def test_render_view_replays_and_mixes_by_the_stored_rule():
    pol, images = preset("fm"), _images()
    seen = set()
    for i, v, vec, partner, pview in _draws(pol, images):
        a, b = _render(pol, images, i, v, vec, partner, pview), _render(pol, images, i, v, vec, partner, pview)
        assert a.dtype == torch.uint8 and a.shape == (3, *SIZE) and torch.equal(a, b)
        mode = int(vec[MIX_MODE])
        if mode:
            seen.add(mode)
            own = render_view(images[i], np.concatenate([vec[:16], [0, 1, 0, 0, 0, 0]]), SIZE, "bicubic")
            pvec = draw_params(7, partner, pview, images[partner].size, pol, POOL, size=SIZE)[0]
            other = render_view(images[partner], np.concatenate([pvec[:16], [0, 1, 0, 0, 0, 0]]), SIZE, "bicubic")
            if mode == 1:
                lam = torch.tensor(float(vec[LAM]))
                assert torch.equal(a, (lam * own.float() + (1 - lam) * other.float()).round().to(torch.uint8))
            else:
                x0, y0, x1, y1 = (int(t) for t in vec[18:22])
                assert torch.equal(a[:, y0:y1, x0:x1], other[:, y0:y1, x0:x1])
                assert 1 - (y1 - y0) * (x1 - x0) / 32 ** 2 == pytest.approx(float(vec[LAM]))
    assert seen == {1, 2}
    with pytest.raises(DistillError, match="partner"):
        render_view(images[0], next(d[2] for d in _draws(pol, images) if d[3] >= 0), SIZE)


def test_identity_params_render_the_plain_crop():
    img = _images(1)[0]
    crop = view_params(3, 0, 2, img.size, ViewConfig())
    vec = draw_params(3, 0, 2, img.size, ViewPolicy("c", ViewConfig()), None, size=SIZE)[0]
    assert np.array_equal(vec, crop)
    ident = np.array([*crop, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0], dtype=np.float32)
    assert torch.equal(render_view(img, ident, SIZE), view_pixels(img, crop, SIZE))
    assert not torch.equal(render_view(img, np.where(np.arange(22) == 10, 1.0, ident), SIZE),  # invert
                           view_pixels(img, crop, SIZE))


class _Rendered(Dataset):
    def __init__(self, policy, draws):
        self.policy, self.draws = policy, draws

    def __len__(self) -> int:
        return len(self.draws)

    def __getitem__(self, k: int) -> torch.Tensor:
        return _render(self.policy, _images(), *self.draws[k])


def test_render_view_in_a_worker_equals_in_process():
    pol, images = preset("fm"), _images()
    draws = [(i, v, vec, p, w) for i, v, vec, p, w in _draws(pol, images, views=3) if v > 0]
    here = torch.stack([_render(pol, images, *d) for d in draws])
    there = torch.cat(list(DataLoader(_Rendered(pol, draws), batch_size=4, num_workers=1)))
    assert torch.equal(here, there)


def test_policy_render_resizes_the_teachers_view():
    pol, images = preset("fm"), _images()
    i, v, vec, partner, pview = next(d for d in _draws(pol, images) if d[3] >= 0)
    pvec = draw_params(7, partner, pview, images[partner].size, pol, POOL, size=SIZE)[0]
    render = PolicyRender(SIZE, "bicubic")
    same = render.pixels(images[i], v, vec, SIZE, "bilinear", images[partner], pvec)
    assert torch.equal(same, render_view(images[i], vec, SIZE, "bicubic", images[partner], pvec))
    small = render.pixels(images[i], v, vec, (16, 16), "bilinear", images[partner], pvec)
    assert small.shape == (3, 16, 16)
    clean = render.pixels(images[i], 0, draws0 := draw_params(7, i, 0, images[i].size, pol, POOL, size=SIZE)[0],
                          (16, 16), "bilinear")
    assert torch.equal(clean, view_pixels(images[i], draws0[:5], (16, 16), "bilinear"))
