"""The build's decode path: augmented views replay exactly, and the uint8 hand-off gives the teacher the same floats."""
from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from distill.data.view_policy import ViewPolicy
from distill.teacher.cache import CacheOptions, TeacherCache, ViewConfig, build_cache
from distill.teacher.cache.inputs import ImageViews, ViewDraws, teacher_input


def test_augmented_views_replay_the_teachers_input(dataset, teacher, tmp_path):
    cfg = ViewConfig(scale=(0.3, 0.9), hflip=0.5)
    options = CacheOptions(views=4, seed=5, augment=cfg, dtype="float32", shard_size=8, batch_size=8)
    out = build_cache(dataset, teacher, tmp_path / "mv", options, num_workers=0, progress=False)
    cache = TeacherCache.open(out)
    info = teacher.preprocess_info
    samples = dataset.files(dataset.samples)
    views = ImageViews(samples, ViewDraws(4, 5, ViewPolicy(crop=cfg)), teacher.preprocess, info)
    flips = set()
    for s in dataset.samples[::3]:
        img = Image.open(dataset.path(s)).convert("RGB")
        W, H = img.size
        _, x, params, mix, _ = views[s.index]  # what the teacher received
        rows = cache.lookup(torch.full((4,), s.index), torch.arange(4))
        assert torch.equal(rows["view_params"], params) and (mix == -1).all()
        assert torch.allclose(rows["view_params"][0, :4], torch.tensor(
            [(1 - min(W, H) / W) / 2, (1 - min(W, H) / H) / 2, min(W, H) / W, min(W, H) / H]), atol=1e-6)
        for v in range(1, 4):
            x0, y0, w, h, flip = rows["view_params"][v].tolist()
            flips.add(flip)
            # replay with torchvision from the stored params alone
            crop = TF.resized_crop(img, round(y0 * H), round(x0 * W), round(h * H), round(w * W), list(info.size),
                                   InterpolationMode.BICUBIC, antialias=True)
            replay = TF.normalize(TF.to_tensor(TF.hflip(crop) if flip else crop), info.mean, info.std)
            assert torch.equal(replay, x[v])
            emb, _ = teacher(replay[None])
            torch.testing.assert_close(rows["image_emb"][v], emb[0], atol=1e-4, rtol=0)
    assert flips == {0.0, 1.0}


def test_uint8_hand_off_gives_the_teacher_the_same_floats(dataset, teacher):
    """Workers hand over 8-bit pixels; normalized on the device they equal open_clip's floats bit for bit."""
    info = teacher.preprocess_info
    samples = dataset.files(dataset.samples)
    cfg = ViewConfig(scale=(0.3, 0.9), hflip=0.5)
    floats = ImageViews(samples, ViewDraws(3, 5, ViewPolicy(crop=cfg)), teacher.preprocess, info)
    pixels = ImageViews(samples, ViewDraws(3, 5, ViewPolicy(crop=cfg)), teacher.preprocess, info,
                         uint8=True)
    assert pixels.split is not None  # open_clip's transform ends in ToTensor + Normalize
    mean, std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in (info.mean, info.std))
    for pos in range(0, len(samples), 3):
        _, a, pa, _, _ = floats[pos]
        _, b, pb, _, _ = pixels[pos]
        assert b.dtype == torch.uint8 and b.shape == a.shape and torch.equal(pa, pb)
        assert torch.equal(teacher_input(b, mean, std), a)
