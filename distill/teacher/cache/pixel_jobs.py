"""The pixel store's decode work: each image of a cache's shards, read from the shard's own columns when asked.

:func:`~distill.teacher.cache.pixels.build_pixel_store` once held a job per image for the whole pass (its path, two
tensor views of its rows and a list of partners: ~7 Python objects an image) and a list of positions per batch; here an item is
found from the shard file's columns by the DataLoader worker that decodes it (the last shard read kept, per
process), and the image files from the dataset's columns (:class:`~distill.data.sample_table.SampleFiles`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors import safe_open
from torch import Tensor
from torch.utils.data import Dataset

from distill.data.images import load_rgb
from distill.data.sample_table import SampleFiles
from distill.data.view_policy import PolicyRender
from distill.data.views import view_pixels
from distill.errors import DistillError
from distill.records import CacheManifest
from distill.teacher.cache.format import shard_name
from distill.teacher.cache.pixel_codecs import encode


class PartnerRows:
    """Every row of a cache, found by key ``sample_index * views + view``: a mixed row's partner may sit in any shard.

    Held: the sorted keys and each one's row in the shards one after another (16 bytes a row); a row's view_params
    are read from its shard file when asked (they were held too: 96 bytes a row of a policy cache, in the process and
    every worker).
    """

    def __init__(self, cache_dir: Path, manifest: CacheManifest):
        self.cache_dir, self.views = Path(cache_dir), int(manifest.views.count)
        self.files = [shard.file for shard in manifest.shards]
        keys = [shard_rows(self.cache_dir / f, ("sample_index", "view")) for f in self.files]
        self.starts = np.cumsum([0, *(len(k["view"]) for k in keys)])  # each shard's first row
        self.keys, self.order = torch.cat([k["sample_index"] * self.views + k["view"].long() for k in keys]).sort()

    def at(self, partner: Tensor, pview: Tensor) -> tuple[Tensor, Tensor]:
        """(positions in :attr:`keys` of the rows (partner, view), clamped: a row without one points anywhere;
        whether each is held or has no partner)."""
        want = partner.clamp(min=0) * self.views + pview.long().clamp(min=0)
        at = torch.searchsorted(self.keys, want).clamp(max=len(self.keys) - 1)
        return at, (self.keys[at] == want) | (partner < 0)

    def params(self, at: int) -> Tensor:
        """view_params of the row at position ``at`` of :attr:`keys` (read from its shard)."""
        row = int(self.order[at])
        j = int(np.searchsorted(self.starts, row, side="right")) - 1
        with safe_open(str(self.cache_dir / self.files[j]), "pt") as f:
            return f.get_slice("view_params")[row - int(self.starts[j]):row - int(self.starts[j]) + 1][0]


def shard_rows(path: Path, names: Sequence[str]) -> dict[str, Tensor]:
    """Columns ``names`` of one cache shard."""
    with safe_open(str(path), "pt") as f:
        return {name: f.get_tensor(name) for name in names}


class ShardImages(Dataset):
    """Item ``i``: the ``i``-th image of ``shards`` (an image is its run of rows, sorted by (sample, view)) -> its
    views' pixels uint8 [k, 3, H, W] (one decode per image), or with a compressed ``codec`` the list of the k views'
    encoded files (encoded in the worker). A mixed row's partner (a policy cache, ``render`` set) is decoded here
    too, with its view_params from ``partners``."""

    def __init__(self, cache_dir: Path, shards: Sequence[int], files: SampleFiles, size: tuple[int, int],
                 interpolation: str, render: PolicyRender | None, partners: PartnerRows | None,
                 codec: str = "raw", quality: int | None = None):
        self.cache_dir, self.shards, self.files = Path(cache_dir), list(shards), files
        self.size, self.interpolation, self.render, self.partners = size, interpolation, render, partners
        self.codec, self.quality = codec, quality
        self.first = np.zeros(len(self.shards) + 1, dtype=np.int64)  # each shard's first item
        for j, k in enumerate(self.shards):  # one pass over the shards' columns: images counted, partners checked
            self.first[j + 1] = self.first[j] + len(self._runs(self._check(k)["sample_index"])) - 1
        self._open: tuple[int, dict[str, Tensor], np.ndarray] | None = None  # (j, columns, runs): the shard read last

    def _check(self, k: int) -> dict[str, Tensor]:
        cols = shard_rows(self.cache_dir / shard_name(k), self._names())
        if self.partners is not None:
            missing = ~self.partners.at(cols["mix_partner"], cols["mix_view"])[1]
            if bool(missing.any()):
                raise DistillError(f"{self.cache_dir}: sample {int(cols['sample_index'][missing][0])} is mixed with "
                                   "a row the cache does not hold; rebuild the cache")
        return cols

    def _names(self) -> tuple[str, ...]:
        return ("sample_index", "view", "view_params") + (("mix_partner", "mix_view") if self.render else ())

    @staticmethod
    def _runs(si: Tensor) -> np.ndarray:
        """Where each image's rows start, and the end: [images + 1]."""
        counts = torch.unique_consecutive(si, return_counts=True)[1]
        return np.concatenate([[0], np.cumsum(counts.numpy())]).astype(np.int64)

    def spans(self) -> np.ndarray:
        """(first item, one past the last) of each shard [shards, 2]: the batches' bounds."""
        return np.stack([self.first[:-1], self.first[1:]], axis=1)

    def __len__(self) -> int:
        return int(self.first[-1])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_open": None}

    def __getitem__(self, i: int) -> Tensor | list[Tensor]:
        j = int(np.searchsorted(self.first, i, side="right")) - 1
        if self._open is None or self._open[0] != j:
            cols = shard_rows(self.cache_dir / shard_name(self.shards[j]), self._names())
            self._open = (j, cols, self._runs(cols["sample_index"]))
        _, cols, runs = self._open
        a, b = int(runs[i - self.first[j]]), int(runs[i - self.first[j] + 1])
        img = load_rgb(self.files.path_of_index(int(cols["sample_index"][a])))
        params = cols["view_params"][a:b]
        if self.render is None:
            out = [view_pixels(img, p, self.size, self.interpolation) for p in params]
        else:
            assert self.partners is not None  # given with render (a policy cache)
            partner = cols["mix_partner"][a:b]
            found = self.partners.at(partner, cols["mix_view"][a:b])[0].tolist()
            out = []
            for v, p, s, q in zip(cols["view"][a:b].tolist(), params, partner.tolist(), found):
                other, other_p = (load_rgb(self.files.path_of_index(s)), self.partners.params(q)) if s >= 0 else \
                    (None, None)
                out.append(self.render.pixels(img, v, p, self.size, self.interpolation, other, other_p))
        if self.codec == "raw":
            return torch.stack(out)
        assert self.quality is not None  # PixelPlan.for_cache: check_codec gives jpeg/webp a quality
        return [encode(u8, self.codec, self.quality) for u8 in out]


__all__ = ["PartnerRows", "ShardImages", "shard_rows"]
