"""What the trainer feeds the student: epoch items, the image dataset, and the batch plan of an epoch.

Exact resume rests here: each epoch's order and each image's view are a pure function of
``(run.seed, epoch)`` (:func:`epoch_items`; the unlabeled pool's, :func:`pool_items`, from a generator of
its own), and the DataLoader draws from its own generator, never the global RNG. The loader and its
workers persist for the whole run; each epoch only refills the array its batch sampler iterates
(:class:`EpochBatches`).

Sized for large sets: the loader's dataset is an :class:`ItemTable` (numpy columns, ~50 bytes per
(image, view) for crop caches), never one Python object per (image, view): DataLoader workers
touching Python objects copy the pages their reference counts live on, numpy buffers they only read
stay shared. An epoch's order is an array of keys (:func:`epoch_keys`), its batches one int64 array.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from distill.data.folder import DomainFolder, Sample
from distill.data.images import load_rgb
from distill.data.sample_table import sample_column, sample_domains
from distill.data.view_policy import CROP_PARAMS, PolicyRender
from distill.data.views import ViewConfig, view_params, view_pixels

if TYPE_CHECKING:
    from distill.teacher.cache import PixelStore, TeacherCache


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


@dataclass(frozen=True, eq=False)
class ItemTable:
    """Items as columns (numpy arrays, row ``i`` = item ``i``): what :class:`TrainImages` holds.

    ``params`` None: every item's view is drawn from the seed (no cache); ``partner`` None: no item
    is a mixed view (``partner`` -1 on the unmixed rows of a table that has some).
    """

    sample: np.ndarray                          # int64 [N] sample index
    label: np.ndarray                           # int64 [N] the folder's label (the trainer reads its own gate)
    domain: np.ndarray                          # int64 [N]
    view: np.ndarray                            # int64 [N]
    params: np.ndarray | None = None            # [N, P] cached view params (the cache's float32)
    partner: np.ndarray | None = None           # int64 [N] mixed-in sample index, -1: none
    partner_view: np.ndarray | None = None      # int64 [N]
    partner_params: np.ndarray | None = None    # [N, P] (rows without a partner: unused)

    def __len__(self) -> int:
        return len(self.sample)

    @classmethod
    def of(cls, items: Sequence[Item]) -> ItemTable:
        """A list of :class:`Item` as columns (their params either all cached or all None)."""
        col = lambda f, dt: np.fromiter((f(it) for it in items), dtype=dt, count=len(items))  # noqa: E731
        with_params = [it.params is not None for it in items]
        if any(with_params) and not all(with_params):
            raise ValueError("ItemTable.of: some items carry cached view params and some do not")
        params = np.array([it.params for it in items], dtype=np.float64) if items and all(with_params) else None
        partner = None
        if any(it.partner >= 0 for it in items):
            partner, pview = col(lambda it: it.partner, np.int64), col(lambda it: it.partner_view, np.int64)
            pparams = np.zeros_like(params)
            for j, it in enumerate(items):
                if it.partner >= 0:
                    pparams[j] = it.partner_params
        return cls(col(lambda it: it.sample.index, np.int64), col(lambda it: it.sample.label, np.int64),
                   col(lambda it: it.domain, np.int64), col(lambda it: it.view, np.int64), params,
                   partner, *((pview, pparams) if partner is not None else (None, None)))

    def params_at(self, i: int) -> tuple[float, ...] | None:
        """Item ``i``'s cached view params as floats (exactly the values the cache holds), or None."""
        return None if self.params is None else tuple(self.params[i].tolist())

    def partner_at(self, i: int) -> tuple[int, tuple[float, ...] | None]:
        """(item ``i``'s mixed-in sample index, that row's view params), or (-1, None) when it has none."""
        if self.partner is None or self.partner[i] < 0:
            return -1, None
        assert self.partner_params is not None  # ItemTable: partner and partner_params are set together
        return int(self.partner[i]), tuple(self.partner_params[i].tolist())


class TrainImages(Dataset):
    """Items -> pixels [3, H, W] in [0, 1] of the item's view, at the student's resolution.

    With ``pixels`` (the cache's :class:`~distill.teacher.cache.pixel_store.PixelStore` at this size
    and interpolation) an item with cached view params is read from the store: no resize, and no
    decode from a raw store. Otherwise the image is decoded and the view made with
    :func:`~distill.data.views.view_pixels`, the function the store was written with, so
    both paths give the same bits with a raw store; a jpeg/webp store is lossy (its decoded rows
    differ slightly from those bits).

    With ``uint8=True`` items stay uint8 [3, H, W] (what the trainer asks for): a worker then only
    reads or decodes, a quarter of the bytes cross shared memory, pinning and the host-to-device
    copy, and :func:`to_unit` turns the batch into floats on the device, bit-identical to
    converting here.

    ``items``: an :class:`ItemTable` (a list of :class:`Item` is turned into one).
    """

    def __init__(self, dataset: DomainFolder, items: ItemTable | Sequence[Item], size: tuple[int, int],
                 interpolation: str, view_cfg: ViewConfig, view_seed: int, pixels: PixelStore | None = None,
                 uint8: bool = False, render: PolicyRender | None = None):
        self.dataset = dataset
        self.items = items if isinstance(items, ItemTable) else ItemTable.of(list(items))
        self.size, self.interpolation = size, interpolation
        self.view_cfg, self.view_seed = view_cfg, view_seed
        self.pixels = pixels
        self.uint8 = uint8
        self.render = render  # a policy cache's views (PolicyRender.for_manifest); None: crops, today's path

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int, int, int]:
        t = self.items
        index, view = int(t.sample[i]), int(t.view[i])
        params: tuple[float, ...] | np.ndarray | None = t.params_at(i)  # None: drawn from the seed below
        if self.pixels is not None and params is not None:
            u8 = self.pixels.get(index, view)
        else:
            img = load_rgb(self.dataset.path(self.dataset.sample_at(index)))
            if params is None:
                params = view_params(self.view_seed, index, view, img.size, self.view_cfg, clean_size=self.size)
            if self.render is not None and len(params) > CROP_PARAMS:  # a policy view: the pixel store's bytes
                partner, partner_params = t.partner_at(i)
                other = load_rgb(self.dataset.path(self.dataset.sample_at(partner))) if partner >= 0 else None
                u8 = self.render.pixels(img, view, params, self.size, self.interpolation, other, partner_params)
            else:
                u8 = view_pixels(img, params, self.size, self.interpolation)
        pixels = u8 if self.uint8 else to_unit(u8)
        return pixels, int(t.label[i]), int(t.domain[i]), index, view


def to_unit(u8: Tensor) -> Tensor:
    """uint8 pixels -> floats in [0, 1], exactly what torchvision's ``to_tensor`` computes (on any device)."""
    return u8.to(torch.get_default_dtype()).div(255)


def epoch_draw(n: int, views: int, seed: int, epoch: int) -> tuple[Tensor, Tensor]:
    """(order [n]: positions in training order, view [n]: the view shown at each of them, in that order):
    a pure function of (n, views, seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=g)
    chosen = torch.randint(0, views, (n,), generator=g) if views > 1 else torch.zeros(n, dtype=torch.long)
    return order, chosen[order]


def epoch_keys(n: int, views: int, seed: int, epoch: int, offset: int = 0) -> np.ndarray:
    """The epoch's items as keys of the all-(image, view) dataset, ``(offset + position) * views + view``
    (int64 [n]): :func:`epoch_items` without a Python object per item."""
    order, view = epoch_draw(n, views, seed, epoch)
    return ((order + offset) * views + view).numpy()


def epoch_items(samples: Sequence[Sample], domain_index: dict[str, int], views: int, seed: int, epoch: int,
                cache: TeacherCache | None = None) -> list[Item]:
    """The epoch's items in training order: a pure function of (samples, views, seed, epoch)."""
    drawn, view = epoch_draw(len(samples), views, seed, epoch)
    order, chosen = drawn.tolist(), view.tolist()
    rows = None
    if cache is not None:
        rows = _view_rows(cache, torch.tensor([samples[i].index for i in order], dtype=torch.long),
                          torch.tensor(chosen, dtype=torch.long))
    return [Item(samples[i], domain_index[samples[i].domain], chosen[j], *(rows[j] if rows is not None else (None,)))
            for j, i in enumerate(order)]


#: Offsets the run seed for the unlabeled pool's generator, so the pool's order is its own draw
#: (adding or resizing a pool never changes the labelled images' order).
POOL_SEED_OFFSET = 7_368_787
_MAX_CYCLES = 1_000_003  # pool cycles per epoch that get distinct orders (far more than any ratio asks)


def pool_items(pool: Sequence[Sample], domain_index: dict[str, int], views: int, seed: int, epoch: int,
               count: int, cache: TeacherCache | None = None) -> list[Item]:
    """The epoch's first ``count`` unlabeled-pool items: a pure function of (pool, views, seed, epoch, count).

    The pool cycles: when an epoch needs more pool items than the pool holds, it is shown whole,
    then again in a new order, and so on. Cycle ``c`` of epoch ``e`` is :func:`epoch_items`' order
    (and view choice) of the pool for its own seed, ``seed + POOL_SEED_OFFSET``, at "epoch"
    ``e * _MAX_CYCLES + c``: the pool's draws never touch the labelled images' generator.
    """
    if not pool or count <= 0:
        return []
    cycles = -(-count // len(pool))
    items: list[Item] = []
    for cycle in range(cycles):
        items += epoch_items(pool, domain_index, views, seed + POOL_SEED_OFFSET, epoch * _MAX_CYCLES + cycle, cache)
    return items[:count]


def pool_keys(n: int, views: int, seed: int, epoch: int, count: int, offset: int = 0) -> np.ndarray:
    """:func:`pool_items` as keys of the all-(image, view) dataset (the pool's ``n`` images at positions
    ``offset...``): int64 [count]."""
    if not n or count <= 0:
        return np.zeros(0, dtype=np.int64)
    cycles = -(-count // n)
    return np.concatenate([epoch_keys(n, views, seed + POOL_SEED_OFFSET, epoch * _MAX_CYCLES + c, offset)
                           for c in range(cycles)])[:count]


def label_table(num_samples: int, labelled: Sequence[Sample]) -> Tensor:
    """The one label gate: [num_samples] int64, each labelled sample's label at its index and -1 everywhere else.

    Batches read their labels (and mixed partners' labels) here, by sample index, so a pool image,
    a target image or anything not in ``labelled`` is -1 by construction, whatever its folder says.
    """
    table = torch.full((num_samples,), -1, dtype=torch.long)
    if labelled:
        table[torch.tensor([x.index for x in labelled])] = torch.tensor([x.label for x in labelled])
    return table


def _view_rows(cache: TeacherCache, idx: Tensor, view: Tensor) -> list[tuple[Any, ...]]:
    """Per (sample, view): (params, partner, partner view, partner params) from the cache, or (params,)
    for an unmixed view (crop-only and old caches have no partners)."""
    if not len(idx):
        return []
    rows = cache.lookup(idx, view, outputs=False)
    params, partner, pview = rows["view_params"].tolist(), rows["mix_partner"], rows["mix_view"]
    mixed = (partner >= 0).nonzero().squeeze(1)
    out: list[tuple[Any, ...]] = [(tuple(p),) for p in params]
    if len(mixed):
        pparams = cache.lookup(partner[mixed], pview[mixed], outputs=False)["view_params"].tolist()
        for j, pp in zip(mixed.tolist(), pparams):
            out[j] = (tuple(params[j]), int(partner[j]), int(pview[j]), tuple(pp))
    return out


_LOOKUP_CHUNK = 4096  # rows per cache lookup while the table is built (view columns only, still bounded)


def _view_columns(cache: TeacherCache, idx: np.ndarray, view: np.ndarray) -> dict[str, np.ndarray | None]:
    """Per (sample, view), from the cache: ``params`` [N, P] and, when any row is a mixed view,
    ``partner``/``partner_view`` [N] (-1: none) and ``partner_params`` [N, P]."""
    chunks: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])  # params, partner, pview
    for at in range(0, len(idx), _LOOKUP_CHUNK):
        rows = cache.lookup(torch.from_numpy(idx[at:at + _LOOKUP_CHUNK]), torch.from_numpy(view[at:at + _LOOKUP_CHUNK]),
                            outputs=False)
        chunks[0].append(rows["view_params"].numpy())
        chunks[1].append(rows["mix_partner"].to(torch.int64).numpy())
        chunks[2].append(rows["mix_view"].to(torch.int64).numpy())
    params, partner, pview = (np.concatenate(c) for c in chunks)
    mixed = np.flatnonzero(partner >= 0)
    if not len(mixed):
        return {"params": params, "partner": None, "partner_view": None, "partner_params": None}
    pparams = np.zeros_like(params)
    for at in range(0, len(mixed), _LOOKUP_CHUNK):
        m = mixed[at:at + _LOOKUP_CHUNK]
        rows = cache.lookup(torch.from_numpy(partner[m]), torch.from_numpy(pview[m]), outputs=False)
        pparams[m] = rows["view_params"].numpy()
    return {"params": params, "partner": partner, "partner_view": pview, "partner_params": pparams}


def all_view_items(samples: Sequence[Sample], domain_index: dict[str, int], views: int,
                   cache: TeacherCache | None = None) -> ItemTable:
    """Every (image, view) pair once, image-major, as an :class:`ItemTable`: the persistent loader's dataset.

    Row ``i * views + v`` is view ``v`` of ``samples[i]``; with a cache its view params come from the
    cache, looked up in chunks.
    """
    n = len(samples)
    idx, label = sample_column(samples, "index"), sample_column(samples, "label")
    domain = sample_domains(samples, domain_index)
    sample, view = np.repeat(idx, views), np.tile(np.arange(views, dtype=np.int64), n)
    columns = _view_columns(cache, sample, view) if cache is not None and n else {}
    return ItemTable(sample, np.repeat(label, views), np.repeat(domain, views), view, **columns)


class EpochBatches:
    """A batch sampler over an array the trainer refills each epoch (the DataLoader and its workers persist).

    Keys are rows of :func:`all_view_items`' table: ``position * views + view``, where ``position`` is the
    sample's place in ``samples``. The plan is one int64 array [steps, rows per rank]; each batch becomes a
    list only as the loader asks for it.
    """

    def __init__(self, samples: Sequence[Sample], views: int):
        self.views = views
        idx = sample_column(samples, "index")
        self._position = np.full(int(idx.max()) + 1 if len(idx) else 0, -1, dtype=np.int64)  # sample index -> place
        self._position[idx] = np.arange(len(idx))
        self.batches = np.zeros((0, 0), dtype=np.int64)

    def keys(self, items: np.ndarray | Sequence[Item]) -> np.ndarray:
        """Keys of ``items`` (an array of keys, :func:`epoch_keys`, is returned as it is)."""
        if isinstance(items, np.ndarray):
            return items
        idx = np.fromiter((it.sample.index for it in items), dtype=np.int64, count=len(items))
        view = np.fromiter((it.view for it in items), dtype=np.int64, count=len(items))
        return self._position[idx] * self.views + view

    def plan(self, items: np.ndarray | Sequence[Item], steps: range, batch_size: int, rank: int, world: int,
             pool: np.ndarray | Sequence[Item] = (), pool_size: int = 0) -> None:
        """This rank's share of ``items`` (keys or :class:`Item` s) for each step in ``steps`` (the global batch
        split over ranks).

        With an unlabeled pool each step's batch is its ``batch_size`` labelled items followed by
        that step's ``pool_size`` pool items (``pool[step * pool_size:]``), both split over ranks.
        """
        per_rank, pool_per_rank = batch_size // world, pool_size // world
        at = np.asarray(steps, dtype=np.int64)[:, None]
        parts = [self.keys(items)[at * batch_size + rank * per_rank + np.arange(per_rank)]]
        if pool_per_rank:
            parts.append(self.keys(pool)[at * pool_size + rank * pool_per_rank + np.arange(pool_per_rank)])
        self.batches = np.concatenate(parts, axis=1)

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches  # this epoch's plan, whatever a later plan() assigns
        return (b.tolist() for b in batches)

    def __len__(self) -> int:
        return len(self.batches)
