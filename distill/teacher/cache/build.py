"""Build a teacher cache: run the frozen teacher once over a dataset and write its outputs.

Design (see :mod:`distill.teacher.cache_format` for the layout):

- **Fixed work units.** Shard ``k`` holds samples ``[k*shard_size, (k+1)*shard_size)`` of the
  selected sample list, every view of each, and is cut into fixed batches of
  ``batch_size // views`` images. Nothing depends on the process count or on what ran
  before, so a resumed or distributed build writes the same bytes as a single uninterrupted one
  (teacher inference runs with deterministic kernels; CPU results are identical for identical
  batches at a given thread count).
- **Resumable.** ``build.json`` (the plan) is written first, shards atomically, ``manifest.json``
  last. A rerun skips shards that exist, refuses a different plan (naming the fields), and
  returns at once when the manifest exists.
- **Distributed.** Under ``torchrun`` rank ``r`` builds the shards ``k % world == r``; rank 0
  writes the manifest after a barrier, gathering each shard's skipped images from its metadata
  (so skipped images recorded by an earlier, interrupted run are kept).
- **Overlap.** DataLoader workers (one per spare core) decode (``load_rgb``), crop and resize
  while the main process runs the teacher; they hand over 8-bit pixels, which are pinned,
  copied non-blocking and turned into the teacher's normalized floats on its device.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from distill.data.folder import DomainFolder
from distill.data.images import BadImageError, load_rgb
from distill.errors import DistillError
from distill.teacher.cache_format import (
    BUILD_PLAN, DTYPES, FORMAT, FORMAT_VERSION, MANIFEST, ROW_DTYPES, SPLIT_CODES, TEXT_EMBEDDINGS,
    diff_fields, empty_rows, read_shard_skipped, shard_name, write_shard,
)
from distill.teacher.clip import Teacher
from distill.teacher.views import ViewConfig, view_params, view_pixels, view_tensor

SHARD_DELAY_ENV = "DISTILL_CACHE_SHARD_DELAY"
"""Test hook: seconds to sleep after writing each shard (lets a test kill a build mid-way)."""


# ---------------------------------------------------------------------- plan
def make_plan(dataset: DomainFolder, teacher: Teacher, domains: Sequence[str] | None, views: int, seed: int,
              augment: ViewConfig, dtype: str, batch_size: int, shard_size: int, fingerprint: str = "paths") -> dict:
    """Everything that determines a cache's bytes (saved as ``build.json``, compared on resume).

    ``fingerprint="content"`` adds ``dataset.content_fingerprint`` (image bytes hashed, see
    :mod:`distill.data.fingerprint`) to the identity; the default ``"paths"`` (paths + sizes) reads no image.
    """
    from distill.data.fingerprint import MODES, content_fingerprint

    if fingerprint not in MODES:
        raise DistillError(f"fingerprint must be one of {', '.join(MODES)}, got '{fingerprint}'")
    if views < 1:
        raise DistillError(f"views must be >= 1, got {views}")
    if batch_size < 1 or shard_size < 1:
        raise DistillError(f"batch size and shard size must be >= 1, got {batch_size} and {shard_size}")
    if dtype not in DTYPES:
        raise DistillError(f"cache dtype must be one of {', '.join(DTYPES)}, got '{dtype}'")
    if list(teacher.class_names) != list(dataset.classes):
        raise DistillError(
            f"teacher class names ({len(teacher.class_names)}) differ from the dataset's classes "
            f"({len(dataset.classes)}, {', '.join(dataset.classes[:5])}...): build the teacher with dataset.classes"
        )
    chosen = set(dataset.check_domains(domains)) if domains is not None else set(dataset.domains)
    domains = [d for d in dataset.domains if d in chosen]
    n = len(dataset.select(domains))
    content = {"content_fingerprint": content_fingerprint(dataset, domains)} if fingerprint == "content" else {}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "teacher": teacher.identity(),
        "templates": list(teacher.templates),
        "classes": list(dataset.classes),
        "preprocess": teacher.preprocess_info.to_dict(),
        "dataset": {
            "fingerprint": dataset.fingerprint(domains),
            "domains": domains,
            "images": n,
            "test_fraction": dataset.test_fraction,
            "split_seed": dataset.split_seed,
            "val_fraction": dataset.val_fraction,
            "files_sha256": dataset.fingerprint_inputs(domains)["files_sha256"],  # names a file-list mismatch
            **content,
        },
        "views": {"count": int(views), "seed": int(seed), "augment": augment.to_dict()},
        "dtype": dtype,
        "embed_dim": teacher.embed_dim,
        "num_classes": len(dataset.classes),
        "batch_size": int(batch_size),
        "shard_size": int(shard_size),
        "num_shards": math.ceil(n / shard_size),
    }


def _prepare_dir(out: Path, plan: dict) -> str:
    """Check ``out`` against ``plan``: ``"done"`` (complete, same plan) or ``"build"``."""
    how = "remove the directory to rebuild, or choose another --out"
    if (out / MANIFEST).exists():
        from distill.utils.io import read_json

        diffs = diff_fields(read_json(out / MANIFEST), plan)
        if diffs:
            raise DistillError(f"{out / MANIFEST}: a cache built with a different plan is here "
                               f"(cache vs this run: {'; '.join(diffs)}); {how}")
        return "done"
    if (out / BUILD_PLAN).exists():
        from distill.utils.io import read_json

        diffs = diff_fields(read_json(out / BUILD_PLAN), plan)
        if diffs:
            raise DistillError(f"{out / BUILD_PLAN}: an unfinished build with a different plan is here "
                               f"(that build vs this run: {'; '.join(diffs)}); {how}")
    elif out.exists() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise DistillError(f"{out}: directory is not empty and holds no teacher cache; choose an empty or new --out")
    from distill.utils.io import atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    for tmp in out.glob(".*.tmp"):  # leftovers of a killed atomic write
        tmp.unlink(missing_ok=True)
    atomic_write_json(out / BUILD_PLAN, plan)
    return "build"


# ---------------------------------------------------------------------- data
class _ImageViews(Dataset):
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
        from torchvision.transforms.functional import pil_to_tensor

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
    from torchvision import transforms as T

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
    return x.to(torch.float32).div_(255).sub_(mean).div_(std)


def _collate(items: list) -> dict:
    """Stack the decodable images of a batch; list the others with their reason."""
    good = [it for it in items if it[3] is None]
    return {
        "pos": [it[0] for it in items],
        "good": torch.tensor([it[0] for it in good], dtype=torch.long),
        "x": torch.cat([it[1] for it in good]) if good else torch.zeros(0),
        "params": torch.cat([it[2] for it in good]) if good else torch.zeros(0, 5),
        "bad": [(it[0], it[3]) for it in items if it[3] is not None],
    }


# ---------------------------------------------------------------------- process group
@contextlib.contextmanager
def _distributed(device: torch.device) -> Iterator[tuple[int, int]]:
    """(rank, world): joins the torchrun process group (env RANK/WORLD_SIZE) if there is one.

    ``device`` is the teacher's, already indexed and current (:func:`distill.utils.runtime.resolve_device`).
    """
    from distill.utils.runtime import process_group

    # Ranks own different shards and may finish far apart: wait long at the barrier.
    with process_group(device, timeout=_dt.timedelta(hours=12)) as d:
        yield d.rank, d.world


def _broadcast(obj, world: int):
    if world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def prepare_on_rank0(prepare, rank: int, world: int) -> str:
    """Run ``prepare()`` (-> a status string) on rank 0 only and give every rank its answer.

    A :class:`DistillError` there is re-raised on every rank, so all ranks stop with the same
    one-line message instead of the others waiting at the next collective.
    """
    status: tuple[str, str] | None = None
    if rank == 0:
        try:
            status = (prepare(), "")
        except DistillError as e:
            status = ("error", str(e))
    status = _broadcast(status, world)
    if status[0] == "error":
        raise DistillError(status[1])
    return status[0]


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
    *,
    domains: Sequence[str] | None = None,
    views: int = 1,
    seed: int = 0,
    augment: ViewConfig | None = None,
    batch_size: int = 64,
    shard_size: int = 1024,
    dtype: str = "float16",
    skip_bad: bool = False,
    num_workers: int | None = None,
    progress: bool = True,
    adv_views: int = 0,
    adv_epsilon: float = 8 / 255,
    adv_step_size: float | None = None,
    adv_steps: int = 5,
    adv_seed: int | None = None,
    adv_split: str | None = "train",
    adv_domains: Sequence[str] | None = None,
    store_pixels: Sequence[tuple[int, int]] = (),
    pixel_interpolation: str = "bicubic",
    fingerprint: str = "paths",
) -> Path:
    """Run ``teacher`` over ``dataset`` once and write a teacher cache to ``out_dir``.

    Rerunning resumes an interrupted build from its last complete shard and returns at once for
    a complete one. Under ``torchrun`` each rank builds every ``world``-th shard.

    Args:
        dataset: the images; rows record ``sample.index`` (position in ``dataset.samples``).
        teacher: frozen open_clip teacher built with ``dataset.classes``, on its device.
        out_dir: cache directory (created; must be empty or hold this same build).
        domains: domains to cache (default all).
        views: rows per image: view 0 clean (open_clip eval transform), views 1.. augmented.
        seed: seed of the views' random crops (with sample index and view number).
        augment: crop/flip settings of views 1.. (default :class:`ViewConfig`).
        batch_size: images x views per teacher forward (rounded down to whole images).
        shard_size: images per shard.
        dtype: ``float16`` or ``float32`` for ``image_emb`` and ``logits``.
        skip_bad: skip undecodable images (recorded in the manifest) instead of stopping.
        num_workers: DataLoader decode workers (default: CPU cores per process - 1: on a GPU the
            teacher outruns a worker ~30-fold, so every spare core decodes).
        progress: show a tqdm bar (rows/s) on rank 0.
        adv_views: K > 0 also crafts K PGD views per image against the teacher, stored with the
            teacher's outputs on them in ``out_dir/adversarial`` (after the cache is complete,
            ``shard_size`` images per shard, split over the ranks like the cache's shards; see
            :mod:`distill.teacher.cache_adv`); for ``adv_cached``.
        adv_epsilon, adv_step_size, adv_steps: L-inf radius, step (default 2.5 eps / steps) and
            steps of that PGD, in pixel units.
        adv_seed: seed of its random starts (default ``seed``).
        adv_split, adv_domains: which images get adversarial views (default: the train split of
            every cached domain).
        store_pixels: (H, W) sizes at which to also store every row's view as uint8 pixels
            (``out_dir/pixels-HxW-INTERP``, see :mod:`distill.teacher.cache_pixels`): a trainer
            whose student takes that size and ``pixel_interpolation`` then never decodes an image.
        pixel_interpolation: the resize filter of those pixels (the student's).
        fingerprint: ``"paths"`` (paths + sizes, the default) or ``"content"``: also hash every
            image's bytes into the manifest, so a run refuses an image edited to the same size.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        BadImageError: an image cannot be decoded and ``skip_bad`` is False (shards written
            so far are kept; rerun with ``skip_bad`` to go on).
        DistillError: ``out_dir`` holds a different build, or a setting is invalid.
    """
    out = Path(out_dir)
    augment = augment or ViewConfig()
    device = teacher.text_embeddings.device
    with _distributed(device) as (rank, world):
        plan = make_plan(dataset, teacher, domains, views, seed, augment, dtype, batch_size, shard_size, fingerprint)
        status = prepare_on_rank0(lambda: _prepare_dir(out, plan), rank, world)
        if status != "done":
            _build_shards(dataset, teacher, out, plan, rank, world, skip_bad, num_workers, progress)
            if world > 1:
                import torch.distributed as dist

                dist.barrier()
            if rank == 0:
                _write_manifest(dataset, teacher, out, plan)
        if store_pixels:  # on a complete cache (just built or found), in its own pass: no teacher
            from distill.teacher.cache_pixels import build_pixel_store

            if world > 1:
                import torch.distributed as dist

                dist.barrier()  # rank 0 has written the cache's manifest
            for size in store_pixels:
                build_pixel_store(dataset, out, size, pixel_interpolation, batch_size=max(1, batch_size // views),
                                  num_workers=num_workers, progress=progress, rank=rank, world=world)
        if adv_views > 0:  # on a complete cache (just built or found); every rank crafts its shards
            from distill.teacher.cache_adv import build_adversarial_views

            if world > 1:
                import torch.distributed as dist

                dist.barrier()  # rank 0 has written the cache's manifest

            build_adversarial_views(dataset, teacher, out, views=adv_views, epsilon=adv_epsilon,
                                    step_size=adv_step_size, steps=adv_steps,
                                    seed=seed if adv_seed is None else adv_seed, split=adv_split,
                                    domains=adv_domains, batch_size=batch_size, shard_size=shard_size,
                                    progress=progress, rank=rank, world=world)
        if world > 1 and (status != "done" or adv_views > 0):
            import torch.distributed as dist

            dist.barrier()
    return out


def _build_shards(dataset: DomainFolder, teacher: Teacher, out: Path, plan: dict, rank: int, world: int,
                  skip_bad: bool, num_workers: int | None, progress: bool) -> None:
    """Write this rank's missing shards."""
    from tqdm.auto import tqdm

    samples = dataset.select(plan["dataset"]["domains"])
    K, S = plan["views"]["count"], plan["shard_size"]
    per_batch = max(1, plan["batch_size"] // K)
    mine = [k for k in range(plan["num_shards"]) if k % world == rank and not (out / shard_name(k)).exists()]
    if not mine:
        return
    batches = [list(range(b, min(b + per_batch, (k + 1) * S, len(samples))))
               for k in mine for b in range(k * S, min((k + 1) * S, len(samples)), per_batch)]
    info = teacher.preprocess_info
    data = _ImageViews(dataset.root, [(s.index, s.relpath) for s in samples], K, plan["views"]["seed"],
                       ViewConfig.from_dict(plan["views"]["augment"]), teacher.preprocess, info, uint8=True)
    if num_workers is None:
        num_workers = max(1, (os.cpu_count() or 2) // world - 1)
    device = teacher.text_embeddings.device
    # batches in flight: 32 in all (as 8 workers x 4 before), at least 2 per worker: bounded shared memory
    loader = DataLoader(data, batch_sampler=batches, num_workers=num_workers, collate_fn=_collate,
                        pin_memory=device.type == "cuda",
                        prefetch_factor=max(2, 32 // num_workers) if num_workers else None)
    # Row attributes of every selected sample, by position.
    domain_ids = {d: i for i, d in enumerate(plan["dataset"]["domains"])}
    attrs = {
        "sample_index": torch.tensor([s.index for s in samples], dtype=torch.int64),
        "domain": torch.tensor([domain_ids[s.domain] for s in samples], dtype=torch.int16),
        "label": torch.tensor([s.label for s in samples], dtype=torch.int16),
        "split": torch.tensor([SPLIT_CODES[s.split] for s in samples], dtype=torch.uint8),
    }
    dtype = DTYPES[plan["dtype"]]
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
                    raise BadImageError(dataset.root / samples[pos].relpath, reason)
                skipped.setdefault(k, []).append(
                    {"path": samples[pos].relpath, "sample_index": samples[pos].index, "reason": reason})
            good = batch["good"]
            if len(good):
                x = batch["x"].to(device, non_blocking=True)
                emb, logits = teacher(teacher_input(x, *norm) if x.dtype == torch.uint8 else x)
                rows = {"image_emb": emb.to(dtype).cpu(), "logits": logits.to(dtype).cpu(),
                        "view": torch.arange(K, dtype=torch.int16).repeat(len(good)),
                        "view_params": batch["params"].float()}
                rows.update({key: t[good].repeat_interleave(K) for key, t in attrs.items()})
                pending.setdefault(k, []).append(rows)
            seen[k] = seen.get(k, 0) + len(batch["pos"])
            bar.update(len(batch["pos"]) * K)
            if seen[k] == min((k + 1) * S, len(samples)) - k * S:
                parts = pending.pop(k, []) or [empty_rows(plan["embed_dim"], plan["num_classes"], dtype)]
                write_shard(out / shard_name(k), {key: torch.cat([p[key] for p in parts]) for key in parts[0]},
                            skipped.pop(k, []))
                if delay:
                    time.sleep(delay)


def _write_manifest(dataset: DomainFolder, teacher: Teacher, out: Path, plan: dict) -> None:
    """Rank 0, all shards written: text embeddings, then the manifest (the completion mark)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    import distill
    from distill.utils.io import atomic_write, atomic_write_json, sha256_file

    S, n = plan["shard_size"], plan["dataset"]["images"]
    shards, skipped, rows = [], [], 0
    for k in range(plan["num_shards"]):
        path = out / shard_name(k)
        if not path.exists():
            raise DistillError(f"{path}: shard missing after all ranks finished; rerun the build to resume")
        with safe_open(str(path), "pt") as f:
            n_rows = int(f.get_slice("sample_index").get_shape()[0])
        skipped += read_shard_skipped(path)
        shards.append({"file": path.name, "samples": [k * S, min((k + 1) * S, n)], "rows": n_rows,
                       "bytes": path.stat().st_size, "sha256": sha256_file(path)})
        rows += n_rows
    text = teacher.text_embeddings.detach().float().cpu().contiguous()
    atomic_write(out / TEXT_EMBEDDINGS, lambda p: save_file({"text_embeddings": text}, str(p)))
    text_sha256 = sha256_file(out / TEXT_EMBEDDINGS)
    D, C = plan["embed_dim"], plan["num_classes"]
    manifest = {
        **plan,
        "dataset": {**plan["dataset"], "root": str(dataset.root.resolve()),
                    "class_map": dataset.class_map_source},
        "rows": rows,
        "shapes": {"image_emb": [rows, D], "logits": [rows, C], "view_params": [rows, 5],
                   "text_embeddings": [C, D]},
        "row_dtypes": {"image_emb": plan["dtype"], "logits": plan["dtype"],
                       **{k: str(v).removeprefix("torch.") for k, v in ROW_DTYPES.items()}},
        "teacher_flops_per_image": teacher.image_flops(),
        "skipped": skipped,
        "shards": shards,
        "text_embeddings_sha256": text_sha256,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "distill_version": distill.__version__,
    }
    atomic_write_json(out / MANIFEST, manifest)
