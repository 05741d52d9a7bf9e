"""What the trainer feeds the student: epoch items, the image dataset, and the batch plan of an epoch.

Exact resume rests here: each epoch's order and each image's view are a pure function of
``(run.seed, epoch)`` (:func:`epoch_items`; the unlabeled pool's, :func:`pool_items`, from a generator of
its own), and the DataLoader draws from its own generator, never the global RNG. The loader and its
workers persist for the whole run; each epoch only refills the list its batch sampler iterates
(:class:`EpochBatches`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from distill.data.folder import DomainFolder, Sample
from distill.data.images import load_rgb
from distill.data.view_policy import CROP_PARAMS, PolicyRender
from distill.data.views import ViewConfig, view_params, view_pixels


@dataclass(frozen=True)
class ViewPlan:
    """Which views training shows: the (first) cache's, so training replays what the teacher saw."""

    count: int              # views per image
    augment: ViewConfig     # how a view is drawn (crop scale, flips)
    seed: int               # the seed view params are drawn from (the cache's; the run's without a cache).
                            # Not the epoch order's: that is run.seed's (Trainer.loader)


@dataclass(frozen=True)
class Item:
    """One training example of an epoch: an image and which of its views to show.

    A mixed view of a policy cache names its partner: the mixed-in sample's index, its view and
    that row's view params (its unmixed view is rendered from them).
    """

    sample: Sample
    domain: int
    view: int
    params: tuple[float, ...] | None  # cached view params; None: compute from the seed
    partner: int = -1                 # mixed-in sample index; -1: none
    partner_view: int = -1
    partner_params: tuple[float, ...] | None = None


class TrainImages(Dataset):
    """Items -> pixels [3, H, W] in [0, 1] of the item's view, at the student's resolution.

    With ``pixels`` (the cache's :class:`~distill.teacher.cache_pixels.PixelStore` at this size
    and interpolation) an item with cached view params is read from the store: no decode, no
    resize. Otherwise the image is decoded and the view made with
    :func:`~distill.data.views.view_pixels`, the function the store was written with, so
    both paths give the same bits.

    With ``uint8=True`` items stay uint8 [3, H, W] (what the trainer asks for): a worker then only
    reads or decodes, a quarter of the bytes cross shared memory, pinning and the host-to-device
    copy, and :func:`to_unit` turns the batch into floats on the device, bit-identical to
    converting here.
    """

    def __init__(self, dataset: DomainFolder, items: Sequence[Item], size: tuple[int, int], interpolation: str,
                 view_cfg: ViewConfig, view_seed: int, pixels=None, uint8: bool = False,
                 render: PolicyRender | None = None):
        self.dataset, self.items = dataset, list(items)
        self.size, self.interpolation = size, interpolation
        self.view_cfg, self.view_seed = view_cfg, view_seed
        self.pixels = pixels
        self.uint8 = uint8
        self.render = render  # a policy cache's views (PolicyRender.for_manifest); None: crops, today's path

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        item = self.items[i]
        if self.pixels is not None and item.params is not None:
            u8 = self.pixels.get(item.sample.index, item.view)
        else:
            img = load_rgb(self.dataset.path(item.sample))
            params = item.params
            if params is None:
                params = view_params(self.view_seed, item.sample.index, item.view, img.size, self.view_cfg,
                                     clean_size=self.size)
            if self.render is not None and len(params) > CROP_PARAMS:  # a policy view: the pixel store's bytes
                other = load_rgb(self.dataset.path(self.dataset.sample_at(item.partner))) if item.partner >= 0 else None
                u8 = self.render.pixels(img, item.view, params, self.size, self.interpolation, other,
                                        item.partner_params)
            else:
                u8 = view_pixels(img, params, self.size, self.interpolation)
        pixels = u8 if self.uint8 else to_unit(u8)
        return pixels, item.sample.label, item.domain, item.sample.index, item.view


def to_unit(u8: Tensor) -> Tensor:
    """uint8 pixels -> floats in [0, 1], exactly what torchvision's ``to_tensor`` computes (on any device)."""
    return u8.to(torch.get_default_dtype()).div(255)


def epoch_items(samples: Sequence[Sample], domain_index: dict[str, int], views: int, seed: int, epoch: int,
                cache=None) -> list[Item]:
    """The epoch's items in training order: a pure function of (samples, views, seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(samples), generator=g).tolist()
    chosen = torch.randint(0, views, (len(samples),), generator=g).tolist() if views > 1 else [0] * len(samples)
    items = []
    rows = None
    if cache is not None:
        idx = torch.tensor([samples[i].index for i in order], dtype=torch.long)
        vw = torch.tensor([chosen[i] for i in order], dtype=torch.long)
        rows = _view_rows(cache, idx, vw)
    for j, i in enumerate(order):
        sample = samples[i]
        items.append(Item(sample, domain_index[sample.domain], chosen[i], *(rows[j] if rows is not None else (None,))))
    return items


#: Offsets the run seed for the unlabeled pool's generator, so the pool's order is its own draw
#: (adding or resizing a pool never changes the labelled images' order).
POOL_SEED_OFFSET = 7_368_787
_MAX_CYCLES = 1_000_003  # pool cycles per epoch that get distinct orders (far more than any ratio asks)


def pool_items(pool: Sequence[Sample], domain_index: dict[str, int], views: int, seed: int, epoch: int,
               count: int, cache=None) -> list[Item]:
    """The epoch's first ``count`` unlabeled-pool items: a pure function of (pool, views, seed, epoch, count).

    The pool cycles: when an epoch needs more pool items than the pool holds, it is shown whole,
    then again in a new order, and so on. Cycle ``c`` of epoch ``e`` is :func:`epoch_items`' order
    (and view choice) of the pool for its own seed, ``seed + POOL_SEED_OFFSET``, at "epoch"
    ``e * _MAX_CYCLES + c``: the pool's draws never touch the labelled images' generator.
    """
    if not pool or count <= 0:
        return []
    cycles = -(-count // len(pool))
    items = []
    for cycle in range(cycles):
        items += epoch_items(pool, domain_index, views, seed + POOL_SEED_OFFSET, epoch * _MAX_CYCLES + cycle, cache)
    return items[:count]


def label_table(num_samples: int, labelled: Sequence[Sample]) -> Tensor:
    """The one label gate: [num_samples] int64, each labelled sample's label at its index and -1 everywhere else.

    Batches read their labels (and mixed partners' labels) here, by sample index, so a pool image,
    a target image or anything not in ``labelled`` is -1 by construction, whatever its folder says.
    """
    table = torch.full((num_samples,), -1, dtype=torch.long)
    if labelled:
        table[torch.tensor([x.index for x in labelled])] = torch.tensor([x.label for x in labelled])
    return table


def _view_rows(cache, idx: Tensor, view: Tensor) -> list[tuple]:
    """Per (sample, view): (params, partner, partner view, partner params) from the cache, or (params,)
    for an unmixed view (crop-only and old caches have no partners)."""
    if not len(idx):
        return []
    rows = cache.lookup(idx, view)
    params, partner, pview = rows["view_params"].tolist(), rows["mix_partner"], rows["mix_view"]
    mixed = (partner >= 0).nonzero().squeeze(1)
    out = [(tuple(p),) for p in params]
    if len(mixed):
        pparams = cache.lookup(partner[mixed], pview[mixed])["view_params"].tolist()
        for j, pp in zip(mixed.tolist(), pparams):
            out[j] = (tuple(params[j]), int(partner[j]), int(pview[j]), tuple(pp))
    return out


def all_view_items(samples: Sequence[Sample], domain_index: dict[str, int], views: int, cache=None) -> list[Item]:
    """Every (image, view) pair once, image-major: the persistent loader's dataset.

    Pair ``i * views + v`` is view ``v`` of ``samples[i]``; with a cache its view params come
    from one lookup.
    """
    rows = None
    if cache is not None and samples:
        idx = torch.tensor([x.index for x in samples], dtype=torch.long).repeat_interleave(views)
        vw = torch.arange(views, dtype=torch.long).repeat(len(samples))
        rows = _view_rows(cache, idx, vw)
    return [Item(x, domain_index[x.domain], v, *(rows[i * views + v] if rows is not None else (None,)))
            for i, x in enumerate(samples) for v in range(views)]


class EpochBatches:
    """A batch sampler over a list the trainer refills each epoch (the DataLoader and its workers persist).

    Keys are positions in :func:`all_view_items`' list: ``pair_of[sample_index] * views + view``.
    """

    def __init__(self, samples: Sequence[Sample], views: int):
        self.views = views
        self.pair_of = {x.index: i for i, x in enumerate(samples)}
        self.batches: list[list[int]] = []

    def plan(self, items: Sequence[Item], steps: range, batch_size: int, rank: int, world: int,
             pool: Sequence[Item] = (), pool_size: int = 0) -> None:
        """This rank's share of ``items`` for each step in ``steps`` (the global batch split over ranks).

        With an unlabeled pool each step's batch is its ``batch_size`` labelled items followed by
        that step's ``pool_size`` pool items (``pool[step * pool_size:]``), both split over ranks.
        """
        per_rank, pool_per_rank = batch_size // world, pool_size // world
        batches = []
        for step in steps:
            start = step * batch_size + rank * per_rank
            at = step * pool_size + rank * pool_per_rank
            batches.append([self.pair_of[it.sample.index] * self.views + it.view
                            for it in [*items[start:start + per_rank], *pool[at:at + pool_per_rank]]])
        self.batches[:] = batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(list(self.batches))

    def __len__(self) -> int:
        return len(self.batches)
