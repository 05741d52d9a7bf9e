"""The bootstrap's data: train/validation images held in memory, captions, augmentation.

Both come from the dataset's pretraining pool (``pretrain`` split) only: no student's train, val
or test image is ever opened (:mod:`distill.teacher.pool`). Train images are decoded once and held
as ``uint8`` at the model's input size (3 KB each at 32x32); every random draw comes from a
generator the caller seeds with ``(seed, epoch)``, so a resumed run replays the same batches.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision import transforms as T
from tqdm.auto import tqdm

from distill.data.folder import DomainFolder, Sample
from distill.data.images import BadImageError, load_rgb
from distill.errors import DistillError
from distill.teacher.bootstrap.presets import (
    AUGMENT,
    CAPTION_TEMPLATES,
    DEMO_TEMPLATES,
    MAX_VAL_IMAGES,
    MIN_VAL_IMAGES,
    VAL_FRACTION,
)
from distill.teacher.pool import NO_POOL


# ---------------------------------------------------------------------------- captions
@dataclass(frozen=True)
class CaptionTable:
    """Every training caption, tokenized once.

    Ids: domain templates first (``(t * n_domains + d) * n_classes + c``), then domain-free
    ones (``offset + t * n_classes + c``).
    """

    tokens: Tensor  # [K, context_length] int64
    domain: Tensor  # [K] int64, -1 for captions without a domain word
    label: Tensor  # [K] int64
    n_domain_templates: int
    n_free_templates: int

    def ids(self, template: Tensor, domain: Tensor, label: Tensor, n_domains: int, n_classes: int) -> Tensor:
        """[B] template index in [0, n_domain + n_free) -> [B] caption ids."""
        free = template >= self.n_domain_templates
        dom_id = (template * n_domains + domain) * n_classes + label
        free_id = self.n_domain_templates * n_domains * n_classes + (template - self.n_domain_templates) * n_classes + label
        return torch.where(free, free_id, dom_id)


def build_captions(domains: Sequence[str], classes: Sequence[str], tokenizer: Callable[[list[str]], Tensor],
                   caption_templates: Sequence[str] = CAPTION_TEMPLATES,
                   free_templates: Sequence[str] = DEMO_TEMPLATES) -> tuple[list[str], CaptionTable]:
    """All captions (domain '_' -> ' ') and their tokenized table."""
    texts, doms, labels = [], [], []
    for t in caption_templates:
        for d, domain in enumerate(domains):
            for c, cls in enumerate(classes):
                texts.append(t.format(domain=domain.replace("_", " "), cls=cls))
                doms.append(d)
                labels.append(c)
    for t in free_templates:
        for c, cls in enumerate(classes):
            texts.append(t.format(cls))
            doms.append(-1)
            labels.append(c)
    table = CaptionTable(tokenizer(texts), torch.tensor(doms), torch.tensor(labels),
                         len(caption_templates), len(free_templates))
    return texts, table


# ---------------------------------------------------------------------------- images
def augment(images: Tensor, generator: torch.Generator, cfg: dict = AUGMENT) -> Tensor:
    """Light random affine + brightness/contrast. [B, 3, H, W] uint8 -> [B, 3, H, W] float in [0, 1].

    Draws only from ``generator`` (kornia draws from the global RNG), so a resumed run replays
    the same augmentations.
    """
    x = images.float() / 255.0
    b = x.shape[0]
    rnd = torch.rand(b, 6, generator=generator)
    angle = (rnd[:, 0] * 2 - 1) * math.radians(cfg["max_rotate_deg"])
    lo, hi = cfg["scale"]
    scale = lo + rnd[:, 1] * (hi - lo)
    shift = (rnd[:, 2:4] * 2 - 1) * cfg["max_translate"] * 2  # affine_grid coords span [-1, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = 1 + (rnd[:, 4] * 2 - 1) * cfg["contrast"]
    brightness = (rnd[:, 5] * 2 - 1) * cfg["brightness"]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast[:, None, None, None] + mean + brightness[:, None, None, None]
    return x.clamp_(0, 1)


def geometry_transform(preprocess: T.Compose) -> tuple[T.Compose, Tensor, Tensor]:
    """open_clip's eval transform without its final Normalize: PIL -> [3, H, W] float in [0, 1]."""
    steps = [t for t in preprocess.transforms if not isinstance(t, T.Normalize)]
    norm = [t for t in preprocess.transforms if isinstance(t, T.Normalize)]
    if len(norm) != 1:
        raise RuntimeError(f"expected one Normalize in open_clip's transform, got {preprocess}")
    return T.Compose(steps), torch.tensor(norm[0].mean).view(1, 3, 1, 1), torch.tensor(norm[0].std).view(1, 3, 1, 1)


def load_uint8(dataset: DomainFolder, samples: Sequence[Sample], geometry: Callable[[Any], Tensor], progress: bool,
               skip_bad: bool = False
               ) -> tuple[Tensor, list[Sample], list[tuple[str, str]]]:
    """Decode the train images once: ([N, 3, H, W] uint8, exactly what the eval transform sees; the samples
    decoded; ``(relpath, reason)`` of those that could not be, left out with ``skip_bad``, else raised)."""
    out, kept, bad = [], [], []
    for s in tqdm(samples, desc="loading train images", disable=not progress, leave=False):
        try:
            x = geometry(load_rgb(dataset.path(s)))
        except BadImageError as e:
            if not skip_bad:
                raise
            bad.append((s.relpath, e.reason))
            continue
        out.append((x * 255).round().to(torch.uint8))
        kept.append(s)
    return (torch.stack(out) if out else torch.zeros(0, 3, 1, 1, dtype=torch.uint8)), kept, bad


def split_validation(samples: Sequence[Sample], seed: int) -> tuple[Sequence[Sample], list[Sample]]:
    """(train, validation): :data:`VAL_FRACTION` of ``samples`` (at most about :data:`MAX_VAL_IMAGES`) by a
    hash of the path, or none when there are too few."""
    if len(samples) * VAL_FRACTION < MIN_VAL_IMAGES:
        return samples, []
    fraction = min(VAL_FRACTION, MAX_VAL_IMAGES / len(samples))
    val = {s.index for s in samples
           if int.from_bytes(hashlib.sha1(f"val{seed}:{s.relpath}".encode()).digest()[:8], "big") / 2**64 < fraction}
    return [s for s in samples if s.index not in val], [s for s in samples if s.index in val]



def train_samples(dataset: DomainFolder, max_per_domain: int, seed: int) -> Sequence[Sample]:
    """The pretraining pool's samples; with a cap, a hash-ordered (class-balanced in expectation) subset per domain.

    Raises:
        DistillError: the dataset has no pool (``pretrain_fraction`` 0) or an empty one.
    """
    if dataset.pretrain_fraction <= 0:
        raise DistillError(f"{dataset.root}: pretrain_fraction is 0; {NO_POOL}")
    samples = dataset.select(split="pretrain")
    if not samples:
        raise DistillError(f"{dataset.root}: the pretraining pool (pretrain_fraction {dataset.pretrain_fraction:g}) "
                           "holds no image; raise --pretrain-fraction")
    if max_per_domain <= 0:
        return samples
    keep: list[Sample] = []
    for d in dataset.domains:
        dom = [s for s in samples if s.domain == d]
        dom.sort(key=lambda s: hashlib.sha1(f"{seed}:{s.relpath}".encode()).digest())
        keep.extend(dom[:max_per_domain])
    return sorted(keep, key=lambda s: s.index)
