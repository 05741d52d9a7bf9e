"""distill.robust.corruptions: deterministic, bounded, severity-ordered; names validated."""
from __future__ import annotations

import pytest
import torch

from distill.errors import DistillError
from distill.robust.corruptions import CORRUPTIONS, check_corruptions, corrupt


def test_corruptions_are_deterministic_bounded_and_change_the_image():
    x = torch.rand(4, 3, 20, 20)  # not a multiple of 16: jpeg pads and crops
    for name in CORRUPTIONS:
        a, b = corrupt(x, name, 3, seed=1), corrupt(x, name, 3, seed=1)
        assert a.shape == x.shape and torch.equal(a, b), name
        assert a.min() >= 0 and a.max() <= 1, name
        assert (a - x).abs().mean() > 1e-3, f"{name} left the image unchanged"
        mild, hard = [(corrupt(x, name, s, seed=1) - x).abs().mean() for s in (1, 5)]
        assert hard >= mild - 1e-4, f"{name}: severity 5 should corrupt at least as much as severity 1"
    with pytest.raises(DistillError, match="unknown corruption"):
        corrupt(x, "fog")


def test_check_corruptions_expands_all_and_names_the_unknown_one():
    assert check_corruptions(["all"]) == list(CORRUPTIONS)
    assert check_corruptions(["jpeg", "contrast"]) == ["jpeg", "contrast"]
    with pytest.raises(DistillError, match="unknown corruption 'fog'"):
        check_corruptions(["jpeg", "fog"])
