"""Build a teacher cache: run the frozen teacher once over a dataset and write its outputs.

Design (see :mod:`distill.teacher.cache.format` for the layout):

- **Fixed work units.** Shard ``k`` holds samples ``[k*shard_size, (k+1)*shard_size)`` of the
  selected sample list, every view of each, and is cut into fixed batches of
  ``batch_size // views`` images. Nothing depends on the process count or on what ran
  before, so a resumed or distributed build writes the same bytes as a single uninterrupted one
  (teacher inference runs with deterministic kernels; CPU results are identical for identical
  batches at a given thread count).
- **Resumable.** ``build.json`` (the plan, :class:`~distill.records.CacheBuildPlan`) is written first, shards atomically, ``manifest.json``
  last (:class:`~distill.teacher.cache.shards.ResumableShards`, shared with the adversarial
  views and pixel stores). A rerun skips shards that exist, refuses a different plan (naming
  the fields), and returns at once when the manifest exists.
- **Distributed.** Under ``torchrun`` rank ``r`` builds the shards ``k % world == r``; rank 0
  writes the manifest after a barrier, gathering each shard's skipped images from its metadata
  (so skipped images recorded by an earlier, interrupted run are kept).
- **Unlabeled folders.** Folders outside the root added to the dataset
  (:meth:`~distill.data.folder.DomainFolder.add_folder`, ``cache build --unlabeled``) are cached after the
  root's domains, as unlabeled domains; each one's identity is in ``dataset.unlabeled_folders``
  (:func:`~distill.data.unlabeled.folder_record`), which a plan without folders does not have.
- **Overlap.** DataLoader workers decode while the main process runs the teacher
  (:mod:`distill.teacher.cache.inputs`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import math
import os
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

import distill
from distill.data.fingerprint import MODES, content_fingerprint
from distill.data.folder import DomainFolder, Sample
from distill.data.images import BadImageError
from distill.data.sample_table import SPLITS, sample_column, sample_domains
from distill.data.unlabeled import folder_record
from distill.data.view_policy import PartnerPools, ViewPolicy
from distill.data.views import ViewConfig
from distill.errors import DistillError
from distill.records import CACHE_BUILD_PLAN, TEXT_EMBEDDINGS, CacheBuildPlan, CacheDataset, CacheManifest, CacheViews
from distill.teacher.cache.adversarial import build_adversarial_views
from distill.teacher.cache.compact import (
    compact_outputs,
    empty_outputs,
    make_layout,
    manifest_columns,
    output_columns,
    plan_layout,
)
from distill.teacher.cache.format import (
    COMPACT_VERSION,
    DTYPES,
    FORMAT,
    FORMAT_VERSION,
    SPLIT_CODES,
    empty_rows,
    read_shard_columns,
    read_shard_skipped,
    shard_columns,
)
from distill.teacher.cache.inputs import ImageViews, ShardBatches, ViewDraws, collate_views, teacher_input
from distill.teacher.cache.options import AdversarialOptions, CacheOptions, PixelOptions
from distill.teacher.cache.pixels import build_pixel_store
from distill.teacher.cache.shards import PlanRefusals, ResumableShards, Shard, ShardFile
from distill.teacher.clip import Teacher
from distill.teacher.pool import check_teacher_pool
from distill.utils.io import atomic_write, sha256_file
from distill.utils.loaders import WorkerLoader, default_workers
from distill.utils.runtime import process_group

SHARD_DELAY_ENV = "DISTILL_CACHE_SHARD_DELAY"
"""Test hook: seconds to sleep after writing each shard (lets a test kill a build mid-way)."""

_HOW = "remove the directory to rebuild, or choose another --out"
REFUSALS = PlanRefusals(
    complete="{file}: a cache built with a different plan is here (cache vs this run: {diffs}); " + _HOW,
    unfinished="{file}: an unfinished build with a different plan is here (that build vs this run: {diffs}); " + _HOW,
    not_empty="{out}: directory is not empty and holds no teacher cache; choose an empty or new --out",
)


# ---------------------------------------------------------------------- plan
def make_plan(dataset: DomainFolder, teacher: Teacher, options: CacheOptions) -> CacheBuildPlan:
    """Everything that determines a cache's bytes (saved as ``build.json``, compared on resume).

    ``options.fingerprint="content"`` adds ``dataset.content_fingerprint`` (image bytes hashed, see
    :mod:`distill.data.fingerprint`) to the identity; the default ``"paths"`` (paths + sizes) reads no image.
    """
    o = options
    if o.fingerprint not in MODES:
        raise DistillError(f"fingerprint must be one of {', '.join(MODES)}, got '{o.fingerprint}'")
    if o.views < 1:
        raise DistillError(f"views must be >= 1, got {o.views}")
    if o.batch_size < 1 or o.shard_size < 1:
        raise DistillError(f"batch size and shard size must be >= 1, got {o.batch_size} and {o.shard_size}")
    if o.dtype not in DTYPES:
        raise DistillError(f"cache dtype must be one of {', '.join(DTYPES)}, got '{o.dtype}'")
    if list(teacher.class_names) != list(dataset.classes):
        raise DistillError(
            f"teacher class names ({len(teacher.class_names)}) differ from the dataset's classes "
            f"({len(dataset.classes)}, {', '.join(dataset.classes[:5])}...): build the teacher with dataset.classes"
        )
    check_teacher_pool(teacher.pretrained, dataset, "a cache")
    chosen = set(dataset.check_domains(list(o.domains))) if o.domains is not None else set(dataset.domains)
    domains = [d for d in dataset.domains if d in chosen]
    data = {
        "fingerprint": dataset.fingerprint(domains),
        "domains": domains,
        "images": len(dataset.select(domains)),  # the root's: its part of the identity, as without folders
        "test_fraction": dataset.test_fraction,
        "split_seed": dataset.split_seed,
        "val_fraction": dataset.val_fraction,
        "pretrain_fraction": dataset.pretrain_fraction,  # the teacher's pool: never rows of this cache
        "files_sha256": dataset.fingerprint_inputs(domains)["files_sha256"],  # names a file-list mismatch
    }
    if o.fingerprint == "content":
        data["content_fingerprint"] = content_fingerprint(dataset, domains)
    if dataset.folders:  # unlabeled folders outside the root: cached after its domains, in their own block
        data["unlabeled_folders"] = [folder_record(dataset, name, o.fingerprint == "content")
                                     for name in dataset.folders]
    layout = make_layout(o.logits, o.topk, o.embeddings, len(dataset.classes))
    compact = {} if layout is None else {  # a full-row plan stays as it was (version 2, no layout)
        "format_version": COMPACT_VERSION,
        "layout": layout.model_copy(update={"logit_scale": float(teacher.logit_scale)}).model_dump(mode="json")}
    return CacheBuildPlan.from_dict({
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "teacher": teacher.identity(),
        "templates": list(teacher.templates),
        "classes": list(dataset.classes),
        "preprocess": teacher.preprocess_info.to_dict(),
        "dataset": data,
        "views": _views_block(o),
        "dtype": o.dtype,
        "embed_dim": teacher.embed_dim,
        "num_classes": len(dataset.classes),
        "batch_size": int(o.batch_size),
        "shard_size": int(o.shard_size),
        "num_shards": math.ceil((data["images"] + sum(f["images"] for f in data.get("unlabeled_folders") or []))
                                / o.shard_size),
        **compact,
    }, CACHE_BUILD_PLAN)


def _views_block(options: CacheOptions) -> dict:
    """The plan's ``views``: count, seed, crop; plus the policy and its params layout unless crop-only
    (so a crop-only cache's plan and manifest are what they were before policies)."""
    block = {"count": int(options.views), "seed": int(options.seed), "augment": options.augment.to_dict()}
    policy = options.view_policy
    if not policy.crop_only:
        block.update(policy=policy.to_dict(), params_layout=list(policy.layout))
    return block


def cached_domains(data: CacheDataset) -> list[str]:
    """The domains whose rows a plan's ``dataset`` block holds: the root's, then the unlabeled folders'."""
    return list(data.domains) + [f.name for f in data.unlabeled_folders or []]


def view_policy_of(views: CacheViews) -> ViewPolicy:
    """The policy of a plan's or manifest's ``views`` block (crop-only from ``augment`` when it has none)."""
    if views.policy is not None:
        return ViewPolicy.from_dict(views.policy)
    return ViewPolicy("crops", ViewConfig.from_dict(views.augment))


# ---------------------------------------------------------------------- process group
@contextlib.contextmanager
def _distributed(device: torch.device) -> Iterator[tuple[int, int]]:
    """(rank, world): joins the torchrun process group (env RANK/WORLD_SIZE) if there is one.

    ``device`` is the teacher's, already indexed and current (:func:`distill.utils.runtime.resolve_device`).
    """
    # Ranks own different shards and may finish far apart: wait long at the barrier.
    with process_group(device, timeout=_dt.timedelta(hours=12)) as d:
        yield d.rank, d.world


@contextlib.contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels on CUDA for the duration (restores the caller's flags)."""
    if device.type != "cuda":
        yield
        return
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


# ---------------------------------------------------------------------- build
def build_cache(
    dataset: DomainFolder,
    teacher: Teacher,
    out_dir: str | Path,
    options: CacheOptions | None = None,
    *,
    adversarial: AdversarialOptions | None = None,
    pixels: PixelOptions | None = None,
    skip_bad: bool = False,
    num_workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Run ``teacher`` over ``dataset`` once and write a teacher cache to ``out_dir``.

    Rerunning resumes an interrupted build from its last complete shard and returns at once for
    a complete one. Under ``torchrun`` each rank builds every ``world``-th shard.

    Args:
        dataset: the images; rows record ``sample.index`` (position in ``dataset.samples``).
        teacher: frozen open_clip teacher built with ``dataset.classes``, on its device.
        out_dir: cache directory (created; must be empty or hold this same build).
        options: what the cache holds (default :class:`CacheOptions`).
        adversarial: also craft PGD views per image against the teacher, stored with the
            teacher's outputs on them in ``out_dir/adversarial`` (after the cache is complete,
            ``options.shard_size`` images per shard, split over the ranks like the cache's shards;
            see :mod:`distill.teacher.cache.adversarial`); for ``adv_cached``.
        pixels: also store every row's view as uint8 pixels (``out_dir/pixels-HxW-INTERP``, see
            :mod:`distill.teacher.cache.pixels`): a trainer whose student takes that size and
            interpolation then never decodes an image.
        skip_bad: skip undecodable images (recorded in the manifest) instead of stopping.
        num_workers: DataLoader decode workers (default: CPU cores per process - 1: on a GPU the
            teacher outruns a worker ~30-fold, so every spare core decodes; none for a set of one batch,
            :func:`~distill.utils.loaders.default_workers`).
        progress: show a tqdm bar (rows/s) on rank 0.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        BadImageError: an image cannot be decoded and ``skip_bad`` is False (shards written
            so far are kept; rerun with ``skip_bad`` to go on).
        DistillError: ``out_dir`` holds a different build, or a setting is invalid.
    """
    out = Path(out_dir)
    options = options or CacheOptions()
    device = teacher.text_embeddings.device
    with _distributed(device) as (rank, world):
        plan = make_plan(dataset, teacher, options)
        shards = ResumableShards(out, rank, world)
        done = shards.build(plan, REFUSALS,
                            lambda mine: _shards(dataset, teacher, shards, plan, mine, skip_bad, num_workers, progress),
                            lambda files: _manifest(dataset, teacher, shards.out, plan, files),
                            "{path}: shard missing after all ranks finished; rerun the build to resume")
        if pixels is not None and pixels.sizes:  # on a complete cache (just built or found), own pass: no teacher
            shards.barrier()  # rank 0 has written the cache's manifest
            for size in pixels.sizes:
                build_pixel_store(dataset, out, size, pixels.interpolation, codec=pixels.codec, quality=pixels.quality,
                                  batch_size=max(1, options.batch_size // options.views),
                                  num_workers=num_workers, progress=progress, rank=rank, world=world)
        if adversarial is not None and adversarial.views > 0:  # on a complete cache; every rank crafts its shards
            shards.barrier()  # rank 0 has written the cache's manifest
            if adversarial.seed is None:
                adversarial = dataclasses.replace(adversarial, seed=options.seed)
            build_adversarial_views(dataset, teacher, out, adversarial, batch_size=options.batch_size,
                                    shard_size=options.shard_size, progress=progress, rank=rank, world=world)
        if not done or (adversarial is not None and adversarial.views > 0):
            shards.barrier()
    return out


def _shards(dataset: DomainFolder, teacher: Teacher, shards: ResumableShards, plan: CacheBuildPlan, mine: list[int],
            skip_bad: bool, num_workers: int | None, progress: bool) -> Iterator[Shard]:
    """This rank's missing shards ``mine``, each yielded when its last batch is through the teacher."""
    rank, world = shards.rank, shards.world
    domains = cached_domains(plan.dataset)
    samples = dataset.select(domains)
    _check_written_shards(shards, samples, plan)
    K, S = plan.views.count, plan.shard_size
    per_batch = max(1, plan.batch_size // K)
    if not mine:
        return
    batches = ShardBatches.of_shards(mine, S, per_batch, len(samples))  # nothing per sample held (nor below): columns
    info = teacher.preprocess_info
    policy = view_policy_of(plan.views)
    pools = PartnerPools.of_table(samples) if policy.mix.active else None
    data = ImageViews(dataset.files(samples), ViewDraws(K, plan.views.seed, policy, pools), teacher.preprocess, info,
                      uint8=True)
    if num_workers is None:
        num_workers = default_workers(len(batches), world)
    device = teacher.text_embeddings.device
    # batches in flight: 32 in all (as 8 workers x 4 before), at least 2 per worker: bounded shared memory
    loader = WorkerLoader(data, batch_sampler=batches, num_workers=num_workers, collate_fn=collate_views,
                          pin_memory=device.type == "cuda",
                          prefetch_factor=max(2, 32 // num_workers) if num_workers else None)
    # Row attributes of every selected sample, by position.
    # the table's split codes -> the cache's (the pretraining pool, 255 here, is never selected)
    split_codes = np.array([SPLIT_CODES.get(name, 255) for name in SPLITS], dtype=np.uint8)
    attrs = {
        "sample_index": torch.from_numpy(sample_column(samples, "index").copy()),
        "domain": torch.from_numpy(sample_domains(samples, {d: i for i, d in enumerate(domains)}).astype(np.int16)),
        "label": torch.from_numpy(sample_column(samples, "label").astype(np.int16)),
        "split": torch.from_numpy(split_codes[samples.column("split")]),
    }
    dtype = DTYPES[plan.dtype]
    layout = plan_layout(plan)
    norm = [torch.tensor(v, dtype=torch.float32, device=device).view(1, 3, 1, 1) for v in (info.mean, info.std)]
    delay = float(os.environ.get(SHARD_DELAY_ENV) or 0)
    pending: dict[int, list[dict[str, Tensor]]] = {}
    skipped: dict[int, list[dict]] = {}
    seen: dict[int, int] = {}
    total = sum(min((k + 1) * S, len(samples)) - k * S for k in mine) * K
    desc = "teacher cache" + (f" (rank 0 of {world})" if world > 1 else "")
    with tqdm(total=total, unit="row", desc=desc, disable=not progress or rank != 0, dynamic_ncols=True) as bar, \
            _deterministic(device), torch.inference_mode():
        for batch in loader:
            k = batch["pos"][0] // S
            for pos, reason in batch["bad"]:
                if not skip_bad:
                    raise BadImageError(dataset.path(samples[pos]), reason)
                skipped.setdefault(k, []).append(
                    {"path": samples[pos].relpath, "sample_index": samples[pos].index, "reason": reason})
            good = batch["good"]
            if len(good):
                x = batch["x"].to(device, non_blocking=True)
                emb, logits = teacher(teacher_input(x, *norm) if x.dtype == torch.uint8 else x)
                rows = {**compact_outputs(layout, emb, logits, dtype),
                        "view": torch.arange(K, dtype=torch.int16).repeat(len(good)),
                        "view_params": batch["params"].float(),
                        "mix_partner": batch["mix"][:, 0].contiguous(),
                        "mix_view": batch["mix"][:, 1].to(torch.int16)}
                rows.update({key: t[good].repeat_interleave(K) for key, t in attrs.items()})
                pending.setdefault(k, []).append(rows)
            seen[k] = seen.get(k, 0) + len(batch["pos"])
            bar.update(len(batch["pos"]) * K)
            if seen[k] == min((k + 1) * S, len(samples)) - k * S:
                parts = pending.pop(k, []) or [{
                    **empty_rows(plan.embed_dim, plan.num_classes, dtype, len(policy.layout)),
                    **empty_outputs(layout, plan.embed_dim, plan.num_classes, dtype)}]
                yield k, *shard_columns({key: torch.cat([p[key] for p in parts]) for key in parts[0]},
                                        skipped.pop(k, []), output_columns(layout))
                if delay:  # the shard is on disk
                    time.sleep(delay)


def _check_written_shards(shards: ResumableShards, samples: Sequence[Sample], plan: CacheBuildPlan) -> None:
    """A resumed build: each shard on disk must hold the samples now at its positions. The plan pins the cached
    domains' files, not where data.root numbers them: a domain added before them since the build started moves
    their indices, and the new shards would name other images than the old ones (every rank checks every shard
    on disk, so all stop alike)."""
    S = plan.shard_size
    for k in range(plan.num_shards):
        path = shards.path(k)
        if not path.exists():
            continue
        have = set(read_shard_columns(path, ("sample_index",))["sample_index"].tolist())
        have |= {lost["sample_index"] for lost in read_shard_skipped(path)}
        want = {s.index for s in samples[k * S:(k + 1) * S]}
        if have != want:
            held, now = (f"{min(x)}..{max(x)}" if x else "none" for x in (have, want))
            raise DistillError(f"{path}: holds samples {held}, but data.root now numbers the images of its positions "
                               f"{now}: the data root gained or lost domains since this build started; {_HOW}, or "
                               "move the new domain out of the data root")


def _manifest(dataset: DomainFolder, teacher: Teacher, out: Path, plan: CacheBuildPlan, files: list[ShardFile]) -> dict:
    """Rank 0, all shards written: text embeddings written, the manifest (the completion mark) returned."""
    S, n = plan.shard_size, plan.dataset.cached_images
    listed = [{"file": f.file, "samples": [k * S, min((k + 1) * S, n)], "rows": f.rows, "bytes": f.bytes,
               "sha256": f.sha256} for k, f in enumerate(files)]
    skipped = [s for f in files for s in f.skipped]
    rows = sum(f.rows for f in files)
    text = teacher.text_embeddings.detach().float().cpu().contiguous()
    atomic_write(out / TEXT_EMBEDDINGS, lambda p: save_file({"text_embeddings": text}, str(p)))
    text_sha256 = sha256_file(out / TEXT_EMBEDDINGS)
    D, C, P = plan.embed_dim, plan.num_classes, len(view_policy_of(plan.views).layout)
    shapes, row_dtypes = manifest_columns(plan_layout(plan), rows, D, C, P, plan.dtype)
    planned = plan.to_dict()
    manifest = CacheManifest.from_dict({
        **planned,
        "dataset": {**planned["dataset"], "root": str(dataset.root.resolve()),
                    "class_map": dataset.class_map_source},
        "rows": rows,
        "shapes": shapes,
        "row_dtypes": row_dtypes,
        "teacher_flops_per_image": teacher.image_flops(),
        **({"teacher_path": str(Path(teacher.pretrained).resolve())}
           if teacher.pretrained and Path(teacher.pretrained).is_file() else {}),
        "skipped": skipped,
        "shards": listed,
        "text_embeddings_sha256": text_sha256,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "distill_version": distill.__version__,
    }, out / CacheManifest.FILE)
    return manifest.to_dict()
