"""The teacher's input during a cache build: decoded, cropped views handed over as 8-bit pixels.

DataLoader workers (one per spare core) decode (``load_rgb``), crop and resize while the main
process runs the teacher; they hand over 8-bit pixels, which are pinned, copied non-blocking
and turned into the teacher's normalized floats on its device (:func:`teacher_input`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Sampler
from torchvision import transforms as T
from torchvision.transforms.functional import normalize as tv_normalize
from torchvision.transforms.functional import pil_to_tensor

from distill.data.images import BadImageError, load_rgb
from distill.data.sample_table import SampleFiles
from distill.data.view_policy import CROP_PARAMS, PartnerPools, ViewPolicy, draw_params, render_view, unmixed
from distill.data.views import view_pixels, view_tensor
from distill.student.transforms import normalize

if TYPE_CHECKING:
    from distill.teacher.clip import Preprocess


@dataclass(frozen=True)
class ViewDraws:
    """Which views a build draws: ``count`` rows per image, from ``seed``, under ``policy``.

    ``pools`` (a policy that mixes): each sample's (domain, split) partner pool.
    """

    count: int
    seed: int
    policy: ViewPolicy
    pools: PartnerPools | None = None


class ImageViews(Dataset):
    """Item ``pos``: all views of selected sample ``pos``, decoded and preprocessed.

    With ``uint8`` (and a transform that ends in ToTensor + Normalize, as open_clip's does) the
    views are returned as 8-bit pixels and :func:`teacher_input` makes the same floats on the
    teacher's device: a quarter of the bytes through shared memory and pinning, and the float
    conversion off the decode workers, which limit a GPU build.

    Under a view policy (:mod:`distill.data.view_policy`) views 1.. are drawn with
    :func:`draw_params` and rendered with :func:`render_view` at the teacher's size; a mixed
    view's partner is decoded here, in the same worker. A partner that cannot be decoded leaves
    the view unmixed (recorded so in its row; that partner is a skipped image, with no row).
    """

    def __init__(self, files: SampleFiles, draws: ViewDraws,
                 clean_transform: Callable[[Image.Image], Tensor], info: Preprocess, uint8: bool = False):
        self.files, self.draws = files, draws  # position -> sample index, image file (and index -> file: partners)
        self.views, self.seed = draws.count, draws.seed
        self.clean_transform, self.info = clean_transform, info
        self.split = split_preprocess(clean_transform, info) if uint8 else None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, pos: int) -> tuple[int, Tensor | None, Tensor | None, Tensor | None, str | None]:
        """-> (pos, x [K, 3, H, W], view_params [K, P], mix [K, 2] (partner, view), None)
        or (pos, None, None, None, reason)."""
        index, path = self.files.index(pos), self.files.path(pos)
        try:
            img = load_rgb(path)
        except BadImageError as e:
            return pos, None, None, None, e.reason
        info, policy = self.info, self.draws.policy
        xs = [pil_to_tensor(self.split[0](img)) if self.split else self.clean_transform(img)]
        ps, mix = [], []
        partners: dict[int, Image.Image | None] = {}
        for v in range(self.views):
            pool = self.draws.pools.pool(index) if self.draws.pools is not None else None
            p, partner, pview = draw_params(self.seed, index, v, img.size, policy, pool, size=info.size,
                                            resize_mode=info.resize_mode)
            if v > 0:
                if len(p) == CROP_PARAMS:  # crop-only: today's path
                    xs.append(view_pixels(img, p, info.size, info.interpolation) if self.split else
                              view_tensor(img, p, info.size, info.interpolation, info.mean, info.std))
                else:
                    partner_img, partner_p = None, None
                    if partner >= 0:
                        partner_img = self._partner(partners, partner)
                        if partner_img is None:  # undecodable partner: this view stays unmixed
                            p, partner, pview = unmixed(p), -1, -1
                        else:
                            assert self.draws.pools is not None  # a partner is drawn from a pool only
                            partner_p = draw_params(self.seed, partner, pview, partner_img.size, policy,
                                                    self.draws.pools.pool(partner), size=info.size,
                                                    resize_mode=info.resize_mode)[0]
                    u8 = render_view(img, p, info.size, info.interpolation, partner_img, partner_p)
                    xs.append(u8 if self.split else
                              tv_normalize(u8.to(torch.float32).div(255), list(info.mean), list(info.std)))
            ps.append(p)
            mix.append((partner, pview))
        return pos, torch.stack(xs), torch.from_numpy(np.stack(ps)), torch.tensor(mix, dtype=torch.int64), None

    def _partner(self, cache: dict[int, Image.Image | None], index: int) -> Image.Image | None:
        if index not in cache:
            try:
                cache[index] = load_rgb(self.files.path_of_index(index))
            except BadImageError:
                cache[index] = None
        return cache[index]


class ShardBatches(Sampler[list[int]]):
    """The positions of each batch of some shards, in order: shard ``j`` holds positions ``spans[j]`` (start, stop),
    cut into batches of ``per_batch`` (its last one shorter; a batch never straddles two shards). Computed as
    iterated: a list of every batch's positions cost ~40 bytes an image."""

    def __init__(self, spans: Sequence[tuple[int, int]] | np.ndarray, per_batch: int):
        self.spans, self.per_batch = np.asarray(spans, dtype=np.int64).reshape(-1, 2), int(per_batch)

    @classmethod
    def of_shards(cls, shards: Sequence[int], shard_size: int, per_batch: int, n: int) -> ShardBatches:
        """Shards ``shards`` of ``n`` positions: shard ``k`` holds ``[k * shard_size, (k + 1) * shard_size)``."""
        first = np.asarray(shards, dtype=np.int64) * shard_size
        return cls(np.stack([first, np.minimum(first + shard_size, n)], axis=1), per_batch)

    def __iter__(self) -> Iterator[list[int]]:
        for a, b in self.spans.tolist():
            for first in range(a, b, self.per_batch):
                yield list(range(first, min(first + self.per_batch, b)))

    def __len__(self) -> int:
        return int((-(-np.maximum(0, self.spans[:, 1] - self.spans[:, 0]) // self.per_batch)).sum())


def split_preprocess(transform: Callable[[Image.Image], Tensor], info: Preprocess,
                     ) -> tuple[T.Compose, tuple[float, ...], tuple[float, ...]] | None:
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
    good = [it for it in items if it[4] is None]
    return {
        "pos": [it[0] for it in items],
        "good": torch.tensor([it[0] for it in good], dtype=torch.long),
        "x": torch.cat([it[1] for it in good]) if good else torch.zeros(0),
        "params": torch.cat([it[2] for it in good]) if good else torch.zeros(0, 5),
        "mix": torch.cat([it[3] for it in good]) if good else torch.zeros(0, 2, dtype=torch.int64),
        "bad": [(it[0], it[4]) for it in items if it[4] is not None],
    }
