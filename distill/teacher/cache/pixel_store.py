"""Reading a pixel store (:mod:`~distill.teacher.cache.pixels` writes it): mapped rows, decoded when compressed.

:func:`find_pixel_store` is what the trainer calls: the store of the run's cache at the
student's size and filter (its manifest says raw, jpeg or webp; no flag), or None and the
line saying why the run decodes images instead.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from distill.errors import DistillError
from distill.records import CACHE_BUILD_PLAN, CACHE_PIXELS_PREFIX, CacheManifest
from distill.teacher.cache.identity import identity_diffs
from distill.teacher.cache.mapped import MappedFile, verify_once
from distill.teacher.cache.pixel_codecs import codec_flags, codec_label, decode_row
from distill.teacher.cache.pixels import PixelManifest, PixelPlan, pixel_dir_name
from distill.utils.io import read_json

if TYPE_CHECKING:
    from distill.teacher.cache.read import TeacherCache


# ---------------------------------------------------------------------- read
class PixelStore:
    """A complete pixel store, memory-mapped: ``get(sample_index, view)`` -> uint8 [3, H, W].

    Only the [N] index columns are read at open; pixels are sliced from the safetensors shards
    on demand (and decoded, in a compressed store: in the DataLoader worker that asks), so
    workers share the page cache instead of each holding a copy. The open shard handles are
    per process (dropped when pickled to a spawned worker).
    """

    def __init__(self, path: Path, manifest: PixelManifest):
        self.path, self.manifest = path, manifest
        self.size, self.interpolation = manifest.plan.size, manifest.plan.interpolation
        self.codec, self.quality = manifest.plan.codec, manifest.plan.quality
        V = int(manifest.plan.views["count"])
        self._rebuild = _rebuild_hint(path, manifest.plan)
        keys, shard_ids, rows = [], [], []
        for k, shard in enumerate(manifest.shards):
            f = MappedFile(path / shard.file, self._rebuild)  # a truncated shard: one line naming it
            si, view = f.tensor("sample_index").clone(), f.tensor("view").long()
            keys.append(si * V + view)
            shard_ids.append(torch.full_like(si, k))
            rows.append(torch.arange(len(si)))
        key = torch.cat(keys) if keys else torch.zeros(0, dtype=torch.long)
        n = int(key.max()) + 1 if len(key) else 0
        self._views = V
        self._shard = torch.full((n,), -1, dtype=torch.long)
        self._row = torch.full((n,), -1, dtype=torch.long)
        if len(key):
            self._shard[key], self._row[key] = torch.cat(shard_ids), torch.cat(rows)
        self._files = [path / s.file for s in manifest.shards]
        self._handles: dict[int, MappedFile] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": {}}

    def __len__(self) -> int:
        return int((self._row >= 0).sum())

    def get(self, sample_index: int, view: int) -> Tensor:
        """uint8 [3, H, W] of one cached view (a copy of the mapped row)."""
        key = int(sample_index) * self._views + int(view)
        k = int(self._shard[key]) if 0 <= key < len(self._shard) and 0 <= view < self._views else -1
        if k < 0:
            raise DistillError(f"{self.path}: no stored pixels for sample {sample_index} view {view}")
        h = self._handles.get(k)
        if h is None:
            h = self._handles[k] = MappedFile(self._files[k], self._rebuild)
        if self.codec == "raw":
            return h.tensor("pixels")[int(self._row[key])].clone()
        return decode_row(h.tensor("data"), h.tensor("offsets"), int(self._row[key]), self.codec, str(h.path),
                          self._rebuild)

    @classmethod
    def open(cls, cache_dir: str | Path, cache_manifest: CacheManifest, size: tuple[int, int],
             interpolation: str) -> PixelStore:
        """The store of ``cache_dir`` at ``size``/``interpolation``; refuses one made for another cache.

        Raises:
            DistillError: no such store, an unfinished one, or one whose plan differs from the cache's.
        """
        path = Path(cache_dir) / pixel_dir_name(size, interpolation)
        if not (path / PixelManifest.FILE).is_file():
            state = "unfinished (rerun the build to resume)" if (path / CACHE_BUILD_PLAN).exists() else "absent"
            raise DistillError(f"{path}: pixel store {state}")
        m = PixelManifest.from_dict(read_json(path / PixelManifest.FILE))
        expect = PixelPlan.for_cache(cache_manifest, size, interpolation, m.plan.codec, m.plan.quality)
        diffs = identity_diffs(m.plan.to_dict(), expect.to_dict())
        if diffs:
            raise DistillError(f"{path}: pixel store does not match its cache (store vs cache: {'; '.join(diffs)}); "
                               f"remove it and rerun `distill cache build ... --store-pixels`")
        # each shard's sha256 (the manifest's) checked once per file version (distill.teacher.cache.mapped)
        verify_once(path, [(sh.file, sh.sha256) for sh in m.shards], _rebuild_hint(path, m.plan))
        return cls(path, m)


def _rebuild_hint(path: Path, plan: PixelPlan) -> str:
    h, w = plan.size
    return (f"remove {path} and rerun `distill cache build ... --store-pixels {h}x{w} "
            f"--pixel-interpolation {plan.interpolation}{codec_flags(plan.codec, plan.quality)}` on the same --out")


def find_pixel_store(cache: TeacherCache | None, size: Sequence[int], interpolation: str) -> tuple[PixelStore | None, str]:
    """The store a trainer can read instead of decoding, and one line saying which input it uses.

    Args:
        cache: the run's first :class:`~distill.teacher.cache.read.TeacherCache` (it decides the
            views), or None.
        size: the student's input (H, W).
        interpolation: the student's resize filter.
    """
    h, w = (int(v) for v in size)
    if cache is None:
        return None, "input: decoding images (no teacher cache, so no pixel store)"
    name = pixel_dir_name((h, w), interpolation)
    if not (Path(cache.path) / name).exists():
        have = sorted(p.name for p in Path(cache.path).glob(CACHE_PIXELS_PREFIX + "*"))
        return None, (f"input: decoding images (the cache has no {name}{'; it has ' + ', '.join(have) if have else ''}"
                      f"; `distill cache build ... --store-pixels {h}x{w} --pixel-interpolation {interpolation}` "
                      "adds one)")
    if not (Path(cache.path) / name / PixelManifest.FILE).is_file():
        return None, (f"input: decoding images ({Path(cache.path) / name} is unfinished; rerun the "
                      f"`distill cache build ... --store-pixels {h}x{w}` that made it to finish it)")
    store = PixelStore.open(cache.path, cache.manifest, (h, w), interpolation)
    if store.codec == "raw":
        return store, f"input: cached pixels {h}x{w} {interpolation} from {store.path} (no decoding)"
    return store, (f"input: cached pixels {h}x{w} {interpolation}, {codec_label(store.codec, store.quality)}, from "
                   f"{store.path} (decoded in the DataLoader workers; lossy: not the raw store's bytes)")



__all__ = ["PixelStore", "find_pixel_store"]
