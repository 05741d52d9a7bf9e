"""The teacher's input during a cache build: decoded, cropped views handed over as 8-bit pixels.

DataLoader workers (one per spare core) decode (``load_rgb``), crop and resize while the main
process runs the teacher; they hand over 8-bit pixels, which are pinned, copied non-blocking
and turned into the teacher's normalized floats on its device (:func:`teacher_input`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.transforms.functional import pil_to_tensor

from distill.data.images import BadImageError, load_rgb
from distill.teacher.views import ViewConfig, view_params, view_pixels, view_tensor
from distill.student.transforms import normalize


class ImageViews(Dataset):
    """Item ``pos``: all views of selected sample ``pos``, decoded and preprocessed.

    With ``uint8`` (and a transform that ends in ToTensor + Normalize, as open_clip's does) the
    views are returned as 8-bit pixels and :func:`teacher_input` makes the same floats on the
    teacher's device: a quarter of the bytes through shared memory and pinning, and the float
    conversion off the decode workers, which limit a GPU build.
    """

    def __init__(self, root: Path, samples: list[tuple[int, str]], views: int, seed: int, augment: ViewConfig,
                 clean_transform, info, uint8: bool = False):
        self.root, self.samples, self.views, self.seed = root, samples, views, seed
        self.augment, self.clean_transform, self.info = augment, clean_transform, info
        self.split = split_preprocess(clean_transform, info) if uint8 else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, pos: int) -> tuple[int, Tensor | None, Tensor | None, str | None]:
        """-> (pos, x [K, 3, H, W], view_params [K, 5], None) or (pos, None, None, reason)."""
        index, rel = self.samples[pos]
        try:
            img = load_rgb(self.root / rel)
        except BadImageError as e:
            return pos, None, None, e.reason
        info = self.info
        xs = [pil_to_tensor(self.split[0](img)) if self.split else self.clean_transform(img)]
        ps = []
        for v in range(self.views):
            p = view_params(self.seed, index, v, img.size, self.augment, clean_size=info.size,
                            resize_mode=info.resize_mode)
            ps.append(p)
            if v > 0:
                xs.append(view_pixels(img, p, info.size, info.interpolation) if self.split else
                          view_tensor(img, p, info.size, info.interpolation, info.mean, info.std))
        return pos, torch.stack(xs), torch.from_numpy(np.stack(ps)), None


def split_preprocess(transform, info) -> tuple | None:
    """open_clip's eval transform as (its PIL part, mean, std), or None if it is not ``[..., ToTensor, Normalize]``
    with the teacher's mean and std (then the build hands floats over, as before)."""
    ts = list(getattr(transform, "transforms", []))
    if len(ts) < 2 or not isinstance(ts[-2], T.ToTensor) or not isinstance(ts[-1], T.Normalize):
        return None
    mean, std = tuple(float(v) for v in ts[-1].mean), tuple(float(v) for v in ts[-1].std)
    if mean != tuple(float(v) for v in info.mean) or std != tuple(float(v) for v in info.std):
        return None
    return T.Compose(ts[:-2]), mean, std


def teacher_input(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 [B, 3, H, W] -> the floats ToTensor + Normalize give, bit for bit: ``(x / 255 - mean) / std``.

    ``mean``/``std``: float32 [1, 3, 1, 1] on ``x``'s device.
    """
    return normalize(x.to(torch.float32).div_(255), mean, std)


def collate_views(items: list) -> dict:
    """Stack the decodable images of a batch; list the others with their reason."""
    good = [it for it in items if it[3] is None]
    return {
        "pos": [it[0] for it in items],
        "good": torch.tensor([it[0] for it in good], dtype=torch.long),
        "x": torch.cat([it[1] for it in good]) if good else torch.zeros(0),
        "params": torch.cat([it[2] for it in good]) if good else torch.zeros(0, 5),
        "bad": [(it[0], it[3]) for it in items if it[3] is not None],
    }
