"""distill.evaluate: per-domain accuracy, as a fraction, on a hand-made data set against a hand count."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

from distill.data.folder import DomainFolder
from distill.evaluate import DomainEvaluator


def _solid(path: Path, rgb: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), rgb, dtype=np.uint8)).save(path)


RED, BLUE = (255, 0, 0), (0, 0, 255)


@pytest.fixture
def root(tmp_path) -> Path:
    """Domain ``a``: 3 red 'red' images, 1 blue 'red' image (the model gets it wrong), 2 blue 'blue' images
    -> 5 of 6 right. Domain ``b``: 1 red 'red', 3 red 'blue' (all wrong) -> 1 of 4. Domain ``c``: empty split."""
    for k in range(3):
        _solid(tmp_path / "a" / "red" / f"{k}.png", RED)
    _solid(tmp_path / "a" / "red" / "3.png", BLUE)
    for k in range(2):
        _solid(tmp_path / "a" / "blue" / f"{k}.png", BLUE)
    _solid(tmp_path / "b" / "red" / "0.png", RED)
    for k in range(3):
        _solid(tmp_path / "b" / "blue" / f"{k}.png", RED)
    _solid(tmp_path / "c" / "red" / "0.png", RED)
    return tmp_path


def _redness(x: Tensor) -> Tensor:
    """images [B, 3, H, W] -> logits [B, 2] over the classes in folder order (blue, red): red wins when red > blue."""
    red, blue = x[:, 0].mean((1, 2)), x[:, 2].mean((1, 2))
    return torch.stack([blue, red], dim=1)


def test_accuracy_per_domain_is_the_hand_counted_fraction(root):
    ds = DomainFolder(root, test_fraction=0.0, val_fraction=0.0)  # every image in train
    assert ds.classes == ["blue", "red"]
    ev = DomainEvaluator(ds, ["a", "b"], lambda img: torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255,
                         split="train", batch_size=4)  # batches of 4: a sum over batches, not a mean of means
    acc = ev(_redness)
    assert acc == {"a": pytest.approx(5 / 6), "b": pytest.approx(1 / 4)}
    assert all(0.0 <= v <= 1.0 for v in acc.values()), "a fraction, not a percent"


def test_domains_without_images_in_the_split_are_omitted(root):
    ds = DomainFolder(root, test_fraction=0.0, val_fraction=0.0)
    ev = DomainEvaluator(ds, ["a", "c"], lambda img: torch.zeros(3, 4, 4), split="test")  # no test images at all
    assert ev(_redness) == {}
