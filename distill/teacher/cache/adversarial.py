"""Adversarial views of a teacher cache: PGD against the teacher, crafted once, replayed exactly.

``distill cache build ... --adv-views K`` (or :func:`build_adversarial_views` on a complete
cache) adds, for every image of the chosen split, K adversarial versions of the teacher's clean
view together with the teacher's outputs on them, so adversarial distillation (``adv_cached``)
trains teacher-free at the cost of ``kd``::

    CACHE/adversarial/
      build.json                     # the plan, written first (resume refuses a different plan)
      shard-00000.safetensors ...    # rows sorted by (sample_index, adv_view)
      manifest.json                  # plan + shards + rows; written last: its presence means complete

Shard tensors: ``sample_index`` [n] int64, ``adv_view`` [n] int16, ``pixels`` [n, 3, H, W]
uint8 (the perturbed image at the teacher's input size, before normalization), ``logits``
[n, C] and ``image_emb`` [n, D] in the cache dtype — the teacher's outputs on exactly those
8-bit pixels. The manifest records epsilon, step size, steps, seed, objective and the teacher
identity; readers check the teacher against the main cache.

Objective (why not the label): each view maximises KL(p_clean || p_adv), the divergence of the
teacher's prediction from *its own* clean prediction (virtual adversarial training, Miyato et al.
2018), with p = the teacher's zero-shot softmax. It needs no label, so the same views can be
made for unlabeled target domains, and it moves the teacher where it is fragile rather than
pushing images the teacher already gets wrong further past the true class (where a
label-driven attack spends its budget). The stored logits are the teacher's answer on the
perturbed image, so the student learns the teacher's (possibly changed) opinion there, not a
label it may no longer deserve.

Perturbations respect the ε-ball in 8-bit pixels: the clean view is 8-bit, PGD runs in
[0, 1] floats, and the result is rounded and clamped to ``clean ± floor(ε·255)/255``.
Each image's random start comes from a generator seeded by (seed, sample_index, view), and
batches are fixed per shard, so a rebuilt or resumed build writes the same rows.

Devices: the random starts are drawn on the CPU (the same numbers whatever the device) and
moved to the teacher's device together with the clean pixels; every tensor the attack combines
(pixels, starts, mean/std, the teacher's outputs) lives there, and only the finished rows come
back to the CPU to be written.
"""
from __future__ import annotations

import datetime as _dt
import functools
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor
from tqdm.auto import tqdm

from distill.data.images import BadImageError, load_rgb
from distill.data.unlabeled import folder_record
from distill.data.views import apply_view, clean_box
from distill.errors import DistillError
from distill.records import (
    CACHE_ADVERSARIAL_DIR,
    CACHE_BUILD_PLAN,
    CACHE_MANIFEST,
    AdversarialManifest,
    AdversarialPlan,
    CacheManifest,
)
from distill.robust.attacks import default_step_size, pgd, teacher_logits_with_grad
from distill.student.transforms import normalize
from distill.teacher.cache.format import DTYPES, load_verified
from distill.teacher.cache.identity import (
    TEACHER_UNCOMPARED,
    check_sample_indices,
    expected_identity,
    identity_diffs,
    stored_sample_indices,
)
from distill.teacher.cache.mapped import verify_once
from distill.teacher.cache.options import AdversarialOptions
from distill.teacher.cache.shards import PlanRefusals, ResumableShards, Shard, ShardFile

if TYPE_CHECKING:
    from distill.data.folder import DomainFolder
    from distill.teacher.clip import Preprocess, Teacher

FORMAT = "distill.adversarial_views"
FORMAT_VERSION = 1
OBJECTIVE = "kl(teacher_clean || teacher_adv), untargeted, L-inf in pixel space"
#: Where the identity fields of an adversarial manifest live (for :func:`identity_diffs`).
LAYOUT = {"teacher": ("teacher",), "dataset_fingerprint": ("dataset_fingerprint",)}
_REBUILD = "adversarial views with a different plan are here ({diffs}); remove {out} to rebuild"
REFUSALS = PlanRefusals(complete="{file}: " + _REBUILD, unfinished="{file}: " + _REBUILD)
ROW_NAMES = ("sample_index", "adv_view", "pixels", "logits", "image_emb")


def adversarial_plan(cache_manifest: CacheManifest, teacher_identity: Mapping[str, Any],
                     options: AdversarialOptions, *, step_size: float, seed: int, domains: Sequence[str],
                     images: int, batch_size: int, shard_size: int) -> AdversarialPlan:
    """Everything that determines the adversarial views' bytes (saved as ``build.json``)."""
    o = options
    return AdversarialPlan.from_dict({
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "teacher": {k: v for k, v in teacher_identity.items() if k not in TEACHER_UNCOMPARED},
        "preprocess": cache_manifest.preprocess.model_dump(mode="json", exclude_unset=True),
        "dataset_fingerprint": cache_manifest.dataset.fingerprint,
        "domains": list(domains), "split": o.split, "images": int(images),
        "views": int(o.views), "epsilon": float(o.epsilon), "epsilon_levels": int(math.floor(o.epsilon * 255 + 1e-6)),
        "step_size": float(step_size), "steps": int(o.steps), "seed": int(seed), "objective": OBJECTIVE,
        "dtype": cache_manifest.dtype, "batch_size": int(batch_size), "shard_size": int(shard_size),
        "num_shards": math.ceil(images / shard_size) if images else 0,
    }, CACHE_BUILD_PLAN)


def clean_pixels(img: Image.Image, info: Preprocess) -> Tensor:
    """The teacher's clean view of a PIL image as 8-bit-valued pixels [3, H, W] in [0, 1]."""
    params = clean_box(img.size, info.size, info.resize_mode)
    return pil_to_tensor(apply_view(img, params, info.size, info.interpolation)).float() / 255.0


def _start(seed: int, sample_index: int, view: int, shape: tuple[int, ...]) -> Tensor:
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, sample_index, view]).generate_state(1)[0]))
    return torch.rand(shape, generator=g) * 2 - 1  # uniform in [-1, 1]


def build_adversarial_views(dataset: DomainFolder, teacher: Teacher, cache_dir: str | Path, options: AdversarialOptions | None = None, *,
                            batch_size: int = 64, shard_size: int = 1024, progress: bool = True,
                            rank: int = 0, world: int = 1) -> Path:
    """Craft ``options.views`` PGD views per image against ``teacher`` and store them in ``CACHE/adversarial``.

    Resumable (complete shards are kept) and idempotent (returns at once when complete with the
    same plan; a different plan is refused, naming the fields). Under ``torchrun`` (``world`` > 1,
    process group initialized) rank ``r`` crafts the shards ``k % world == r`` and rank 0 writes
    the manifest after a barrier; the result is byte-identical to one process's (each image's
    random start depends only on the seed, its index and its view).

    Args:
        dataset: the cache's dataset (:class:`~distill.data.DomainFolder`).
        teacher: the cache's teacher (:class:`~distill.teacher.Teacher`), on its device.
        cache_dir: a complete teacher cache.
        options: views, epsilon, step size, steps, seed (None: 0), split and domains (None: the
            cache's) of the attack (default :class:`AdversarialOptions`).
        batch_size: images per attack batch (all K views of an image go in the same batch).
        shard_size: images per shard.
        progress: tqdm bar (rank 0 only).
        rank, world: this process's rank and the number of processes (default: one process).

    Returns:
        ``cache_dir / CACHE_ADVERSARIAL_DIR``.
    """
    o = options or AdversarialOptions()
    cache_dir = Path(cache_dir)
    if not CacheManifest.exists_in(cache_dir):
        raise DistillError(f"{cache_dir}: not a complete teacher cache (no {CACHE_MANIFEST}); build it first")
    cm = CacheManifest.read(cache_dir)
    views, steps, epsilon = o.views, o.steps, o.epsilon
    if views < 1 or steps < 0 or not 0 < epsilon <= 1:
        raise DistillError(f"adversarial views: need views >= 1, steps >= 0, 0 < epsilon <= 1 "
                           f"(got {views}, {steps}, {epsilon})")
    ident = teacher.identity()
    diffs = identity_diffs(cm.to_dict(), expected_identity(teacher_identity=ident), LAYOUT)
    if diffs:
        raise DistillError(f"{cache_dir}: the teacher differs from the cache's ({'; '.join(diffs)}); build the "
                           "adversarial views with the cache's own teacher")
    cached = list(cm.dataset.domains)
    folders = {f.name: f for f in cm.dataset.unlabeled_folders or []}  # unlabeled folders outside the root
    domains = list(o.domains) if o.domains is not None else cached + list(folders)
    for d in domains:
        if d not in cached and d not in folders:
            raise DistillError(f"domain '{d}' is not in cache {cache_dir} (has: {', '.join(cached + list(folders))})")
    if dataset.fingerprint(cached) != cm.dataset.fingerprint:
        raise DistillError(f"{cache_dir}: the dataset differs from the one the cache was built on "
                           "(dataset.fingerprint); pass the cache's data root and split settings")
    check_sample_indices(cache_dir, stored_sample_indices(cache_dir, cm), dataset)  # views keyed as the cache's rows
    for name in (d for d in domains if d in folders):  # the folder's images at the cache's sample indices
        record = folders[name].model_dump(mode="json", exclude_none=True)
        have = folder_record(dataset, name) if name in dataset.folders else {}
        if any(have.get(k) != record[k] for k in ("first_index", "files_sha256")):
            raise DistillError(f"{cache_dir}: unlabeled folder '{name}' ({record['path']}) is not the one the cache "
                               "was built with; pass the cache's --unlabeled folders")
    samples = dataset.select(domains, o.split)
    step_size = default_step_size(epsilon, steps) if o.step_size is None else float(o.step_size)
    seed = 0 if o.seed is None else o.seed
    plan = adversarial_plan(cm, ident, o, step_size=step_size, seed=seed, domains=domains, images=len(samples),
                            batch_size=batch_size, shard_size=shard_size)
    shards = ResumableShards(cache_dir / CACHE_ADVERSARIAL_DIR, rank, world)
    info = teacher.preprocess_info

    def craft(todo: list[int]) -> Iterator[Shard]:
        """This rank's missing shards ``todo``, each yielded when its images are crafted."""
        device = teacher.text_embeddings.device
        mean = torch.tensor(info.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(info.std, device=device).view(1, 3, 1, 1)
        dtype = DTYPES[cm.dtype]
        levels = plan.epsilon_levels
        K, S = views, shard_size
        total = sum(min((k + 1) * S, len(samples)) - k * S for k in todo)
        desc = "adversarial views" + (f" (rank 0 of {world})" if world > 1 else "")
        with tqdm(total=total, unit="img", desc=desc, disable=not progress or rank != 0, dynamic_ncols=True) as bar:
            for k in todo:
                skipped: list[dict] = []  # this shard's; kept in its metadata, so a resumed build still knows them
                rows: dict[str, list[Tensor]] = {n: [] for n in ROW_NAMES}
                for b in range(k * S, min((k + 1) * S, len(samples)), batch_size):
                    chunk = samples[b:min(b + batch_size, (k + 1) * S, len(samples))]
                    xs, idx = [], []
                    for s in chunk:
                        try:
                            xs.append(clean_pixels(load_rgb(dataset.path(s)), info))
                            idx.append(s.index)
                        except BadImageError as e:
                            skipped.append({"path": s.relpath, "sample_index": s.index, "reason": e.reason})
                    bar.update(len(chunk))
                    if not xs:
                        continue
                    x0 = torch.stack(xs).to(device)  # [n, 3, H, W]
                    x0 = x0.repeat_interleave(K, dim=0)  # [n*K, ...] sample-major, view-minor
                    si = torch.tensor(idx, dtype=torch.long).repeat_interleave(K)
                    vv = torch.arange(K, dtype=torch.int16).repeat(len(idx))
                    start = torch.stack([_start(seed, int(i), int(v), tuple(x0.shape[1:]))  # CPU RNG: device-independent
                                         for i, v in zip(si.tolist(), vv.tolist())]).to(device)

                    norm = functools.partial(normalize, mean=mean, std=std)

                    with torch.no_grad():
                        p_clean = teacher_logits_with_grad(teacher, norm, x0).softmax(-1)

                    def loss_fn(px: Tensor) -> Tensor:
                        log_q = teacher_logits_with_grad(teacher, norm, px).log_softmax(-1)
                        return (p_clean * (torch.log(p_clean.clamp(min=1e-12)) - log_q)).sum(-1)

                    xa = pgd(x0, loss_fn, epsilon, step_size, steps, init=x0 + start * epsilon)
                    # 8-bit, and still within floor(eps*255) levels of the (8-bit) clean view
                    q0 = torch.round(x0 * 255)
                    q = torch.round(xa * 255).clamp(min=q0 - levels, max=q0 + levels).clamp(0, 255)
                    with torch.no_grad():
                        emb, logits = teacher(norm(q / 255))
                    rows["sample_index"].append(si)
                    rows["adv_view"].append(vv)
                    rows["pixels"].append(q.to(torch.uint8).cpu())
                    rows["logits"].append(logits.to(dtype).cpu())
                    rows["image_emb"].append(emb.to(dtype).cpu())
                C, D = len(cm.classes), int(cm.embed_dim)
                H, W = info.size
                empty = {"sample_index": torch.zeros(0, dtype=torch.long), "adv_view": torch.zeros(0, dtype=torch.int16),
                         "pixels": torch.zeros(0, 3, H, W, dtype=torch.uint8), "logits": torch.zeros(0, C, dtype=dtype),
                         "image_emb": torch.zeros(0, D, dtype=dtype)}
                tensors = {n: (torch.cat(v) if v else empty[n]).contiguous() for n, v in rows.items()}
                yield k, tensors, {"skipped": json.dumps(skipped)}

    def manifest(files: list[ShardFile]) -> dict:
        n_rows = sum(f.rows for f in files)
        return AdversarialManifest.from_dict({
            **plan.to_dict(), "rows": n_rows,
            "shards": [{"file": f.file, "rows": f.rows, "sha256": f.sha256} for f in files],
            "skipped": [s for f in files for s in f.skipped],
            "shapes": {"pixels": [n_rows, 3, *info.size], "logits": [n_rows, len(cm.classes)]},
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}).to_dict()

    shards.build(plan, REFUSALS, craft, manifest,
                 "{path}: adversarial shard missing after all ranks finished; rerun the build to resume")
    return shards.out


class AdversarialViews:
    """The adversarial views of a cache, in memory, looked up by (sample, adversarial view).

    Attributes:
        manifest: ``CACHE/adversarial/manifest.json``.
        views: K, adversarial views per image.
        size: (H, W) of the stored pixels (the teacher's input size).
    """

    def __init__(self, path: Path, manifest: AdversarialManifest, rows: dict[str, Tensor]):
        self.path, self.manifest, self.rows = path, manifest, rows
        self.views = manifest.views
        self.size = tuple(manifest.shapes["pixels"][-2:])
        si, v = rows["sample_index"], rows["adv_view"].long()
        n = (int(si.max()) + 1) * self.views if len(si) else 0
        self._row_of = torch.full((n,), -1, dtype=torch.long)
        self._row_of[si * self.views + v] = torch.arange(len(si))

    @classmethod
    def exists(cls, cache_dir: str | Path) -> bool:
        return AdversarialManifest.exists_in(Path(cache_dir) / CACHE_ADVERSARIAL_DIR)

    @classmethod
    def open(cls, cache_dir: str | Path, cache_manifest: CacheManifest | None = None) -> AdversarialViews:
        """Load ``CACHE/adversarial``; with ``cache_manifest`` check it was made by that cache's teacher."""
        path = Path(cache_dir) / CACHE_ADVERSARIAL_DIR
        if not AdversarialManifest.exists_in(path):
            what = "an unfinished build (rerun it to resume)" if (path / CACHE_BUILD_PLAN).is_file() else "none"
            raise DistillError(f"{cache_dir}: the cache has no adversarial views ({what}); add them with "
                               f"`distill cache build ... --adv-views K` on the same --out")
        not_this_format = f"{path / CACHE_MANIFEST}: not {FORMAT} version {FORMAT_VERSION}"
        try:
            m = AdversarialManifest.read(path)
        except DistillError as e:
            raise DistillError(f"{not_this_format} ({e}); rebuild the adversarial views") from None
        if m.format != FORMAT or m.format_version != FORMAT_VERSION:
            raise DistillError(f"{not_this_format}; rebuild the adversarial views")
        if cache_manifest is not None:
            want = expected_identity(teacher_identity=cache_manifest.teacher.model_dump(mode="json", exclude_unset=True),
                                     dataset_fingerprint=cache_manifest.dataset.fingerprint)
            diffs = identity_diffs(m.to_dict(), want, LAYOUT)
            if diffs:
                raise DistillError(f"{path}: adversarial views were made for another teacher or dataset "
                                   f"({'; '.join(diffs)}); rebuild them")
        rebuild = f"delete {path} and rebuild it with `distill cache build ... --adv-views K`"
        verify_once(path, [(sh.file, sh.sha256) for sh in m.shards], rebuild)  # hashed once per file version
        parts = [load_verified(path / sh.file, None, rebuild) for sh in m.shards]
        rows = {k: torch.cat([p[k] for p in parts]) for k in ROW_NAMES}
        return cls(path, m, rows)

    def lookup(self, sample_index: Tensor, adv_view: Tensor) -> dict[str, Tensor]:
        """Rows of B (sample, adversarial view) pairs.

        Returns:
            ``pixels`` [B, 3, H, W] uint8, ``logits`` [B, C] and ``image_emb`` [B, D] float32.
        """
        si = torch.as_tensor(sample_index, dtype=torch.long).cpu()
        v = torch.as_tensor(adv_view, dtype=torch.long).cpu()
        key = si * self.views + v
        ok = (si >= 0) & (v >= 0) & (v < self.views) & (key < len(self._row_of))
        row = torch.full_like(key, -1)
        row[ok] = self._row_of[key[ok]]
        if bool((row < 0).any()):
            s = int(si[(row < 0).nonzero()[0]])
            raise DistillError(f"{self.path}: no adversarial view of sample {s} (built for split "
                               f"{self.manifest.split!r} of domains {self.manifest.domains}); rebuild with the "
                               f"domains you train on")
        r = self.rows
        return {"pixels": r["pixels"][row], "logits": r["logits"][row].float(),
                "image_emb": r["image_emb"][row].float()}

    def choose(self, sample_index: Tensor, epoch: int, seed: int) -> Tensor:
        """Which adversarial view each sample shows this epoch: a pure function of (sample, epoch, seed). [B] int64."""
        si = torch.as_tensor(sample_index, dtype=torch.long).cpu()
        return (si * 7919 + epoch * 104_729 + seed * 15_485_863) % self.views


__all__ = ["AdversarialViews", "build_adversarial_views"]
