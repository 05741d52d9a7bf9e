"""Pixel store: every cached view's pixels at the student's resolution, so training never decodes.

Why: on a GPU the trainer is starved by the CPU, not by the student. Per training image a
DataLoader worker decodes a full-size JPEG (~2 ms for 400x300), crops and bicubic-resizes it
(~4 ms) and converts it (~1 ms), while an H100 trains mobilenetv3_large_100 at ~7,000 img/s.
Like FFCV's pre-resized stores, ``distill cache build ... --store-pixels 224`` writes each cached
view (the exact crop + flip the teacher saw) once, as 8-bit pixels at the student's input size;
a training worker then reads ~150 kB from a memory-mapped safetensors shard (~0.15 ms) instead.
Raw uint8 rather than re-encoded JPEG: re-encoding would show the student other pixels than
the replay path (lossy) and would bring a (smaller) decode back. The price is disk:
3 x H x W bytes per row (150 kB at 224 px; 3 GB per 20,000 images and view).

Layout, one folder per (size, interpolation), next to the cache's own shards::

    CACHE/pixels-224x224-bicubic/
      build.json                    # the plan, written first (a rerun refuses a different plan)
      shard-00000.safetensors ...   # the rows of the cache's shard-00000..., same order
      manifest.json                 # plan + shards; written last: its presence means complete

Shard tensors: ``pixels`` [n, 3, H, W] uint8, ``sample_index`` [n] int64, ``view`` [n] int16,
one row per row of the cache's shard with the same number (so images skipped by the build are
absent here too).

Exact replay: each row is :func:`~distill.data.views.view_pixels` of the decoded image with
the row's stored ``view_params``, the very function and params the trainer's decode path uses,
so ``pixels / 255`` equals what the trainer would compute, bit for bit (tested). A cache with a
view policy stores the final bytes of each view, photometric ops and mix included
(:meth:`~distill.data.view_policy.PolicyRender.pixels`, the trainer's decode path too): a
mixed view is then one read. The plan holds the cache's views block, so a store made under
another policy is refused.

The store is built in its own pass after the cache is complete (decode + crop + resize, no
teacher), resumable shard by shard and split over torchrun ranks like the cache's shards; so
it can also be added to an existing cache. The teacher pass is not slowed by it.
"""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors import safe_open
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from distill.data.images import load_rgb
from distill.data.view_policy import PolicyRender
from distill.data.views import view_pixels
from distill.errors import DistillError
from distill.records import CACHE_BUILD_PLAN, CACHE_MANIFEST, CACHE_PIXELS_PREFIX, CacheManifest
from distill.teacher.cache.format import shard_name
from distill.teacher.cache.identity import (
    CACHE_LAYOUT,
    check_sample_indices,
    expected_identity,
    identity_diffs,
    stored_sample_indices,
)
from distill.teacher.cache.mapped import MappedFile, verify_once
from distill.teacher.cache.shards import PlanRefusals, ResumableShards
from distill.utils.io import read_json

FORMAT = "distill.cache_pixels"
FORMAT_VERSION = 1
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos", "box", "hamming")


_HOW = "remove that folder to rebuild it"
REFUSALS = PlanRefusals(
    complete="{file}: a pixel store with a different plan is here (that store vs this run: {diffs}); " + _HOW,
    unfinished="{file}: an unfinished pixel store with a different plan is here (that store vs this run: {diffs}); "
               + _HOW,
)


def pixel_dir_name(size: tuple[int, int], interpolation: str) -> str:
    """``pixels-224x224-bicubic``: the folder of one store inside the cache directory."""
    return f"{CACHE_PIXELS_PREFIX}{int(size[0])}x{int(size[1])}-{interpolation}"


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"224"`` or ``"224,160"`` or ``"224x192"`` -> [(H, W), ...] (a bare number is square)."""
    out = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            hw = [int(v) for v in part.lower().split("x")]
        except ValueError:
            hw = []
        if len(hw) not in (1, 2) or min(hw) < 1:
            raise DistillError(f"--store-pixels: '{part}' is not a size (expected 224 or 224x192, comma-separated)")
        out.append((hw[0], hw[-1]))
    return out


@dataclass(frozen=True)
class PixelPlan:
    """What determines a pixel store's bytes (``build.json``; compared on resume and on open)."""

    size: tuple[int, int]
    interpolation: str
    dataset_fingerprint: str
    views: dict
    shard_size: int
    num_shards: int
    cache_rows: int
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @classmethod
    def for_cache(cls, cache_manifest: CacheManifest, size: tuple[int, int], interpolation: str) -> PixelPlan:
        if interpolation not in INTERPOLATIONS:
            raise DistillError(f"pixel interpolation '{interpolation}' is not one of {', '.join(INTERPOLATIONS)}")
        m = cache_manifest
        return cls(size=(int(size[0]), int(size[1])), interpolation=interpolation,
                   dataset_fingerprint=str(m.dataset.fingerprint),
                   views=m.views.model_dump(mode="json", exclude_none=True),
                   shard_size=int(m.shard_size), num_shards=int(m.num_shards), cache_rows=int(m.rows))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size)
        return d


@dataclass(frozen=True)
class PixelShard:
    file: str
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class PixelManifest:
    """A complete store (``manifest.json``): its plan, its shards and when it was made."""

    plan: PixelPlan
    shards: tuple[PixelShard, ...]
    created: str

    FILE = CACHE_MANIFEST

    def to_dict(self) -> dict:
        return {**self.plan.to_dict(), "shards": [asdict(s) for s in self.shards], "created": self.created}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PixelManifest:
        if d.get("format") != FORMAT or d.get("format_version") != FORMAT_VERSION:
            raise DistillError(f"pixel store format {d.get('format')!r} version {d.get('format_version')!r}; "
                               f"this distill reads {FORMAT!r} version {FORMAT_VERSION}")
        fields = {k: d[k] for k in PixelPlan.__dataclass_fields__}
        fields["size"] = tuple(fields["size"])
        return cls(PixelPlan(**fields), tuple(PixelShard(**s) for s in d["shards"]), str(d.get("created", "")))


# ---------------------------------------------------------------------- build
class _ShardImages(Dataset):
    """Item: one image of a cache shard -> its views' pixels uint8 [k, 3, H, W] (one decode per image).

    A job is (image file, views [k], view_params [k, P], partners): ``partners`` is None (crop-only
    cache) or, per row, None or the mixed-in row's (image file, view_params), decoded here too.
    """

    def __init__(self, jobs: list[tuple], size: tuple[int, int], interpolation: str, render: PolicyRender | None):
        self.jobs, self.size, self.interpolation, self.render = jobs, size, interpolation, render

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> Tensor:
        path, views, params, partners = self.jobs[i]
        img = load_rgb(path)
        if self.render is None:
            return torch.stack([view_pixels(img, p, self.size, self.interpolation) for p in params])
        out = []
        for v, p, partner in zip(views.tolist(), params, partners):
            other, other_p = (load_rgb(partner[0]), partner[1]) if partner is not None else (None, None)
            out.append(self.render.pixels(img, v, p, self.size, self.interpolation, other, other_p))
        return torch.stack(out)


def _partner_rows(cache_dir: Path, manifest: CacheManifest) -> tuple[Tensor, Tensor]:
    """(sorted keys ``sample_index * views + view``, their view_params) of every row of the cache: a
    mixed row's partner may sit in any shard."""
    keys, params = [], []
    for shard in manifest.shards:
        with safe_open(str(cache_dir / shard.file), "pt") as f:
            keys.append(f.get_tensor("sample_index") * int(manifest.views.count) + f.get_tensor("view").long())
            params.append(f.get_tensor("view_params"))
    key, order = torch.cat(keys).sort()
    return key, torch.cat(params)[order]


def _cat(items: list[Tensor]) -> Tensor:
    return torch.cat(items)


def build_pixel_store(dataset, cache_dir: str | Path, size: tuple[int, int], interpolation: str = "bicubic", *,
                      batch_size: int = 64, num_workers: int | None = None, progress: bool = True,
                      rank: int = 0, world: int = 1) -> Path:
    """Write ``CACHE/pixels-HxW-INTERP``: each row of a complete cache as uint8 pixels at ``size``.

    Resumable (complete shards are kept) and idempotent (a complete store with the same plan
    returns at once; a different plan in the folder is refused, naming the fields). Under
    torchrun (``world`` > 1, process group initialized) rank ``r`` writes the shards
    ``k % world == r`` and rank 0 the manifest, after a barrier.

    Args:
        dataset: the cache's :class:`~distill.data.DomainFolder` (same fingerprint).
        cache_dir: a complete teacher cache.
        size: (H, W) of the stored views: the student's input size.
        interpolation: PIL filter of the resize: the student's ``spec.interpolation``.
        batch_size: images per DataLoader batch.
        num_workers: decode workers (default: CPU cores per process - 1).
        progress: tqdm bar on rank 0.
        rank, world: this process and the number of processes.

    Returns:
        The store's folder.
    """
    cache_dir = Path(cache_dir)
    manifest = CacheManifest.read(cache_dir)
    plan = PixelPlan.for_cache(manifest, size, interpolation)
    data_fingerprint = expected_identity(dataset_fingerprint=dataset.fingerprint(manifest.dataset.domains))
    if identity_diffs(manifest.to_dict(), data_fingerprint, CACHE_LAYOUT):
        raise DistillError(f"{cache_dir}: the dataset given is not the one this cache was built from "
                           f"(fingerprints differ); pass the cache's --data")
    check_sample_indices(cache_dir, stored_sample_indices(cache_dir, manifest), dataset)  # rows' images by index
    shards = ResumableShards(cache_dir / pixel_dir_name(plan.size, interpolation), rank, world)
    out = shards.out
    if shards.prepare(plan.to_dict(), REFUSALS):
        return out

    mine = shards.pending(plan.num_shards)
    render = PolicyRender.for_manifest(manifest)
    all_keys, all_params = _partner_rows(cache_dir, manifest) if render is not None and mine else (None, None)
    V = int(manifest.views.count)
    jobs: list[tuple] = []
    batches: list[list[int]] = []
    rows_of: dict[int, tuple[Tensor, Tensor]] = {}
    per_batch = max(1, batch_size)
    for k in mine:
        with safe_open(str(cache_dir / shard_name(k)), "pt") as f:
            si, view, params = f.get_tensor("sample_index"), f.get_tensor("view"), f.get_tensor("view_params")
            mix = (f.get_tensor("mix_partner"), f.get_tensor("mix_view")) if render is not None else None
        rows_of[k] = (si, view)
        first = len(jobs)
        uniq, counts = torch.unique_consecutive(si, return_counts=True)  # rows sorted by (sample, view)
        start = 0
        for s, c in zip(uniq.tolist(), counts.tolist()):
            partners = None
            if mix is not None:
                partner, pview = mix[0][start:start + c], mix[1][start:start + c].long()
                want = partner.clamp(min=0) * V + pview.clamp(min=0)
                at = torch.searchsorted(all_keys, want).clamp(max=len(all_keys) - 1)
                if bool(((all_keys[at] != want) & (partner >= 0)).any()):
                    raise DistillError(f"{cache_dir}: sample {s} is mixed with a row the cache does not hold; "
                                       "rebuild the cache")
                found = all_params[at]
                partners = [None if p < 0 else (dataset.path(dataset.sample_at(p)), q)
                            for p, q in zip(partner.tolist(), found)]
            jobs.append((dataset.path(dataset.sample_at(s)), view[start:start + c], params[start:start + c], partners))
            start += c
        batches += [list(range(b, min(b + per_batch, len(jobs)))) for b in range(first, len(jobs), per_batch)]
    if num_workers is None:
        num_workers = max(1, (os.cpu_count() or 2) // world - 1)
    h, w = plan.size
    data = _ShardImages(jobs, plan.size, interpolation, render)
    loader = DataLoader(data, batch_sampler=batches, num_workers=num_workers if jobs else 0, collate_fn=_cat,
                        prefetch_factor=2 if num_workers and jobs else None)
    it = iter(loader)
    with tqdm(total=len(batches), unit="batch", desc=f"pixel store {h}x{w}", dynamic_ncols=True,
              disable=not progress or rank != 0) as bar:
        for k in mine:  # batches arrive in order and never straddle two shards
            si, view = rows_of[k]
            parts, got = [], 0
            while got < len(si):
                parts.append(next(it))
                got += len(parts[-1])
                bar.update(1)
            pixels = torch.cat(parts) if parts else torch.zeros(0, 3, h, w, dtype=torch.uint8)
            tensors = {"pixels": pixels.contiguous(), "sample_index": si.contiguous(), "view": view.contiguous()}
            shards.write(k, tensors)
    shards.barrier()
    if rank == 0:
        files = shards.finished(plan.num_shards, "{path}: pixel shard missing after all ranks finished; rerun to "
                                                 "resume")
        created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        listed = tuple(PixelShard(f.file, f.rows, f.bytes, f.sha256) for f in files)
        shards.write_manifest(PixelManifest(plan, listed, created).to_dict())
    shards.barrier()
    return out


# ---------------------------------------------------------------------- read
class PixelStore:
    """A complete pixel store, memory-mapped: ``get(sample_index, view)`` -> uint8 [3, H, W].

    Only the [N] index columns are read at open; pixels are sliced from the safetensors shards
    on demand, so DataLoader workers share the page cache instead of each holding a copy. The
    open shard handles are per process (dropped when pickled to a spawned worker).
    """

    def __init__(self, path: Path, manifest: PixelManifest):
        self.path, self.manifest = path, manifest
        self.size, self.interpolation = manifest.plan.size, manifest.plan.interpolation
        V = int(manifest.plan.views["count"])
        h, w = self.size
        self._rebuild = (f"remove {path} and rerun `distill cache build ... --store-pixels {h}x{w} "
                         f"--pixel-interpolation {self.interpolation}` on the same --out")
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
        return h.tensor("pixels")[int(self._row[key])].clone()

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
        diffs = identity_diffs(m.plan.to_dict(), PixelPlan.for_cache(cache_manifest, size, interpolation).to_dict())
        if diffs:
            raise DistillError(f"{path}: pixel store does not match its cache (store vs cache: {'; '.join(diffs)}); "
                               f"remove it and rerun `distill cache build ... --store-pixels`")
        h, w = m.plan.size
        # each shard's sha256 (the manifest's) checked once per file version (distill.teacher.cache.mapped)
        verify_once(path, [(sh.file, sh.sha256) for sh in m.shards],
                    f"remove {path} and rerun `distill cache build ... --store-pixels {h}x{w} "
                    f"--pixel-interpolation {m.plan.interpolation}` on the same --out")
        return cls(path, m)


def find_pixel_store(cache, size: Sequence[int], interpolation: str) -> tuple[PixelStore | None, str]:
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
    return store, f"input: cached pixels {h}x{w} {interpolation} from {store.path} (no decoding)"


__all__ = ["PixelManifest", "PixelPlan", "PixelStore", "build_pixel_store", "find_pixel_store", "parse_sizes",
           "pixel_dir_name"]
