"""Pixel store: every cached view's pixels at the student's resolution, so training never decodes.

Why: on a GPU the trainer is starved by the CPU, not by the student. Per training image a
DataLoader worker decodes a full-size JPEG (~2 ms for 400x300), crops and bicubic-resizes it
(~4 ms) and converts it (~1 ms), while an H100 trains mobilenetv3_large_100 at ~7,000 img/s.
Like FFCV's pre-resized stores, ``distill cache build ... --store-pixels 224`` writes each cached
view (the exact crop + flip the teacher saw) once, as 8-bit pixels at the student's input size;
a training worker then reads ~150 kB from a memory-mapped safetensors shard (~0.15 ms) instead.
Raw uint8 by default: exact, and no decode; the price is disk, 3 x H x W bytes per row (150 kB at
224 px). ``--pixel-codec jpeg|webp`` stores each view encoded instead (~5-15x smaller, decoded
by the DataLoader workers, lossy: :mod:`~distill.teacher.cache.pixel_codecs`); the manifest
records the codec, so a run reading the store needs no flag.

Layout, one folder per (size, interpolation), next to the cache's own shards::

    CACHE/pixels-224x224-bicubic/
      build.json                    # the plan, written first (a rerun refuses a different plan)
      shard-00000.safetensors ...   # the rows of the cache's shard-00000..., same order
      manifest.json                 # plan + shards; written last: its presence means complete

Shard tensors: ``pixels`` [n, 3, H, W] uint8, ``sample_index`` [n] int64, ``view`` [n] int16,
one row per row of the cache's shard with the same number (so images skipped by the build are
absent here too).

Exact replay (raw): each row is :func:`~distill.data.views.view_pixels` of the decoded image with
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
from dataclasses import MISSING, asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import Tensor
from tqdm.auto import tqdm

from distill.data.folder import DomainFolder
from distill.data.view_policy import PolicyRender
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
from distill.teacher.cache.inputs import ShardBatches
from distill.teacher.cache.pixel_codecs import check_codec, codec_label, pack
from distill.teacher.cache.pixel_jobs import PartnerRows, ShardImages, shard_rows
from distill.teacher.cache.shards import PlanRefusals, ResumableShards, Shard, ShardFile
from distill.utils.io import read_json
from distill.utils.loaders import WorkerLoader, default_workers

FORMAT = "distill.cache_pixels"
FORMAT_VERSION = 1  # raw; a compressed store is version 2 (an older distill refuses it instead of misreading)
COMPRESSED_VERSION = 2
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
        if (hw[0], hw[-1]) in out:
            raise DistillError(f"--store-pixels {text}: {hw[0]}x{hw[-1]} listed twice (each size is one store)")
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
    codec: str = "raw"  # raw | jpeg | webp (pixel_codecs); absent from a raw store's files
    quality: int | None = None  # of jpeg/webp

    @classmethod
    def for_cache(cls, cache_manifest: CacheManifest, size: tuple[int, int], interpolation: str,
                  codec: str = "raw", quality: int | None = None) -> PixelPlan:
        if interpolation not in INTERPOLATIONS:
            raise DistillError(f"pixel interpolation '{interpolation}' is not one of {', '.join(INTERPOLATIONS)}")
        codec, quality = check_codec(codec, quality)
        m = cache_manifest
        return cls(size=(int(size[0]), int(size[1])), interpolation=interpolation,
                   dataset_fingerprint=str(m.dataset.fingerprint),
                   views=m.views.model_dump(mode="json", exclude_none=True),
                   shard_size=int(m.shard_size), num_shards=int(m.num_shards), cache_rows=int(m.rows),
                   format_version=FORMAT_VERSION if codec == "raw" else COMPRESSED_VERSION,
                   codec=codec, quality=quality)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size)
        if self.codec == "raw":  # a raw store's plan and manifest stay what they were before codecs
            del d["codec"], d["quality"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str | Path | None = None) -> PixelPlan:
        """A plan (``build.json``) or the plan part of a manifest; codec and quality default to raw's.

        Raises:
            DistillError: another format or version, or a field missing; one line naming ``source``.
        """
        where = f"{source}: " if source is not None else ""
        if d.get("format") != FORMAT or d.get("format_version") not in (FORMAT_VERSION, COMPRESSED_VERSION):
            raise DistillError(f"{where}pixel store format {d.get('format')!r} version {d.get('format_version')!r}; "
                               f"this distill reads {FORMAT!r} versions {FORMAT_VERSION}, {COMPRESSED_VERSION}")
        fields = {k: d.get(k, f.default) for k, f in cls.__dataclass_fields__.items()}
        missing = [k for k, v in fields.items() if v is MISSING]
        if missing:
            raise DistillError(f"{where}pixel store plan without {', '.join(missing)}")
        fields["size"] = tuple(fields["size"])
        return cls(**fields)


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
        return cls(PixelPlan.from_dict(d), tuple(PixelShard(**s) for s in d["shards"]), str(d.get("created", "")))


# ---------------------------------------------------------------------- build
def _cat(items: list) -> Tensor | list[Tensor]:
    return torch.cat(items) if isinstance(items[0], Tensor) else [row for item in items for row in item]


def build_pixel_store(dataset: DomainFolder, cache_dir: str | Path, size: tuple[int, int], interpolation: str = "bicubic", *,
                      codec: str = "raw", quality: int | None = None,
                      batch_size: int = 64, num_workers: int | None = None, progress: bool = True,
                      rank: int = 0, world: int = 1) -> Path:
    """Write ``CACHE/pixels-HxW-INTERP``: each row of a complete cache as uint8 pixels at ``size``
    (``codec`` raw), or as one JPEG/WebP file per row (``codec`` jpeg/webp at ``quality``; lossy).

    Resumable (complete shards are kept) and idempotent (a complete store with the same plan
    returns at once; a different plan in the folder is refused, naming the fields). Under
    torchrun (``world`` > 1, process group initialized) rank ``r`` writes the shards
    ``k % world == r`` and rank 0 the manifest, after a barrier.

    Args:
        dataset: the cache's :class:`~distill.data.DomainFolder` (same fingerprint).
        cache_dir: a complete teacher cache.
        size: (H, W) of the stored views: the student's input size.
        interpolation: PIL filter of the resize: the student's ``spec.interpolation``.
        codec, quality: ``raw`` (exact), ``jpeg`` or ``webp`` at quality 1..100 (default 90).
        batch_size: images per DataLoader batch.
        num_workers: decode workers (default: CPU cores per process - 1; none for one batch).
        progress: tqdm bar on rank 0.
        rank, world: this process and the number of processes.

    Returns:
        The store's folder.
    """
    cache_dir = Path(cache_dir)
    manifest = CacheManifest.read(cache_dir)
    plan = PixelPlan.for_cache(manifest, size, interpolation, codec, quality)
    data_fingerprint = expected_identity(dataset_fingerprint=dataset.fingerprint(manifest.dataset.domains))
    if identity_diffs(manifest.to_dict(), data_fingerprint, CACHE_LAYOUT):
        raise DistillError(f"{cache_dir}: the dataset given is not the one this cache was built from "
                           f"(fingerprints differ); pass the cache's --data")
    check_sample_indices(cache_dir, stored_sample_indices(cache_dir, manifest), dataset)  # rows' images by index
    shards = ResumableShards(cache_dir / pixel_dir_name(plan.size, interpolation), rank, world)
    out = shards.out
    if rank == 0:
        _refuse_other_codec(out, plan)

    def make(mine: list[int]) -> Iterator[Shard]:
        """This rank's missing shards ``mine``: decoded by DataLoader workers, yielded shard by shard."""
        render = PolicyRender.for_manifest(manifest)
        partners = PartnerRows(cache_dir, manifest) if render is not None and mine else None
        h, w = plan.size
        # nothing per image held: a worker finds its item in the shard's columns, its files in the dataset's
        data = ShardImages(cache_dir, mine, dataset.files(dataset.samples), plan.size, plan.interpolation, render,
                           partners, plan.codec, plan.quality)
        batches = ShardBatches(data.spans(), max(1, batch_size))
        workers = default_workers(len(batches), world) if num_workers is None else num_workers
        loader = WorkerLoader(data, batch_sampler=batches, num_workers=workers if len(data) else 0, collate_fn=_cat,
                              prefetch_factor=2 if workers and len(data) else None)
        it = iter(loader)
        with tqdm(total=len(batches), unit="batch", desc=f"pixel store {h}x{w}", dynamic_ncols=True,
                  disable=not progress or rank != 0) as bar:
            for k in mine:  # batches arrive in order and never straddle two shards
                rows = shard_rows(cache_dir / shard_name(k), ("sample_index", "view"))
                si, view = rows["sample_index"], rows["view"]
                parts, got = [], 0
                while got < len(si):
                    parts.append(next(it))
                    got += len(parts[-1])
                    bar.update(1)
                if plan.codec == "raw":
                    pixels = torch.cat(parts) if parts else torch.zeros(0, 3, h, w, dtype=torch.uint8)
                    tensors = {"pixels": pixels.contiguous()}
                else:
                    tensors = pack([row for part in parts for row in part])
                tensors.update(sample_index=si.contiguous(), view=view.contiguous())
                yield k, tensors, None

    def listed(files: list[ShardFile]) -> dict:
        created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        return PixelManifest(plan, tuple(PixelShard(f.file, f.rows, f.bytes, f.sha256) for f in files), created).to_dict()

    if shards.build(plan, REFUSALS, make, listed, "{path}: pixel shard missing after all ranks finished; rerun to resume"):
        return out  # complete with this plan
    shards.barrier()
    return out


def _refuse_other_codec(out: Path, plan: PixelPlan) -> None:
    """A store (complete or not) of another codec in ``out``: one line saying which, before the plan diff."""
    for name in (CACHE_MANIFEST, CACHE_BUILD_PLAN):
        if (out / name).is_file():
            try:
                have = PixelPlan.from_dict(read_json(out / name), out / name)
            except DistillError:
                return  # ResumableShards.prepare refuses it, with the rebuild command
            codec, quality = have.codec, have.quality
            if (codec, quality) != (plan.codec, plan.quality):
                raise DistillError(f"{out / name}: a {codec_label(codec, quality)} pixel store is here, this run "
                                   f"asks for {codec_label(plan.codec, plan.quality)}; {_HOW}")
            return


__all__ = ["PixelManifest", "PixelPlan", "build_pixel_store", "parse_sizes", "pixel_dir_name"]
