"""The student's one eval transform and normalizer agree with the libraries they stand for, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from distill.student.model import Student, StudentSpec
from distill.student.transforms import Normalizer, crop_transform, eval_transform, normalize, pixel_transform

SPEC = StudentSpec(arch="test_resnet", class_names=["a", "b"], input_size=(8, 8), mean=(0.5, 0.4, 0.3),
                   std=(0.2, 0.25, 0.3), interpolation="bilinear")


def _image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8))  # 20 wide, 12 high


def test_layers_resize_the_shorter_side_then_crop_then_scale_then_normalize():
    img = _image()
    crop = crop_transform(SPEC)(img)
    assert crop.size == (8, 8)
    # by hand: shorter side 12 -> 8 keeps the aspect (20 -> 13), then the central 8x8
    want = img.resize((13, 8), Image.BILINEAR).crop((2, 0, 10, 8))
    assert np.abs(np.asarray(crop, dtype=int) - np.asarray(want, dtype=int)).max() <= 1
    px = pixel_transform(SPEC)(img)
    assert px.shape == (3, 8, 8) and torch.equal(px, torch.from_numpy(np.array(crop)).permute(2, 0, 1) / 255.0)
    x = eval_transform(SPEC)(img)
    mean, std = torch.tensor(SPEC.mean).view(3, 1, 1), torch.tensor(SPEC.std).view(3, 1, 1)
    assert torch.equal(x, (px - mean) / std)
    assert not torch.allclose(x, px), "the eval transform must normalize"
    assert torch.equal(Student(SPEC).preprocess()(img), x), "Student.preprocess is the one eval transform"


def test_normalizer_matches_torchvision_and_kornia_bit_for_bit():
    from kornia.enhance import normalize as kornia_normalize
    from torchvision.transforms.functional import normalize as tv_normalize

    px = torch.rand(4, 3, 5, 6)
    norm = Normalizer(SPEC.mean, SPEC.std)
    got = norm(px)
    assert torch.equal(got, tv_normalize(px, list(SPEC.mean), list(SPEC.std)))
    assert torch.equal(got, kornia_normalize(px, torch.tensor(SPEC.mean), torch.tensor(SPEC.std)))
    assert torch.equal(got, normalize(px, norm.mean, norm.std))
    assert got[0, 1, 0, 0] == pytest.approx((float(px[0, 1, 0, 0]) - 0.4) / 0.25, rel=1e-6)
    assert norm(px.double()).dtype == torch.float64, "the constants follow the input's dtype"


def test_normalizer_is_differentiable_and_stays_out_of_the_state_dict():
    px = torch.rand(2, 3, 4, 4, requires_grad=True)
    Normalizer(SPEC.mean, SPEC.std)(px).sum().backward()
    assert torch.allclose(px.grad[0, :, 0, 0], 1 / torch.tensor(SPEC.std))
    owner = torch.nn.Module()
    owner.norm = Normalizer(SPEC.mean, SPEC.std)
    assert owner.state_dict() == {}, "checkpoints must not change when a strategy holds a normalizer"
