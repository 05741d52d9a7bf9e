"""The training loop: source-domain images + cached teacher outputs -> a distilled student.

``run_training(cfg)`` builds objects from a validated :class:`~distill.config.TrainConfig`
and hands them to :class:`Trainer`, a short loop over objects. Guarantees:

- Exact resume. Each epoch's order (and each image's view) is a pure function of
  ``(seed, epoch)``, and every random draw of a step (dropout, adv_cached's mask, adv_kd's PGD
  start) of ``(seed, epoch, step)``: the global RNGs are reseeded before each step and
  DataLoaders draw from their own generators, never the global one. Checkpoints hold weights,
  optimizer, scheduler and RNG state plus the position in the epoch. A run killed at any point
  (kill -9) and resumed with ``--resume RUN_DIR`` ends with the same metrics and bit-identical
  weights on CPU; on CUDA (``run.deterministic``) bit-identical when every op has a
  deterministic kernel, else within float tolerance (torch warns which op; README "Resume on a GPU").
- GPU habits: channels_last student on CUDA, no host sync in the step loop (log every
  ``run.log_every`` steps), one persistent DataLoader, pinned memory + non_blocking copies,
  ``optim.precision`` bf16/fp16 autocast (fp16 with a GradScaler).
- Checkpoints are versioned folders ``checkpoints/step-N/`` published by atomically
  rewriting ``checkpoints/last.json``; ``checkpoints/best/`` holds the student with the best
  accuracy on the source domains' *validation* split (training-domain validation, as in
  DomainBed: a share of train carved out by the split hash). Test accuracy of every domain is
  reported each epoch and never selected on; a run without source validation images (a
  source-free adaptation, or ``data.val_fraction: 0``) keeps its last epoch.
- Bad images: a cache's skipped list (``cache build --skip-bad``) is left out of training and
  evaluation; ``data.skip_bad`` (``--skip-bad``) scans the domains no cache covers. Every
  skipped file is listed once (one warning line, and ``summary.json``'s ``skipped_images``).
- Strategies that need only cached outputs never build a teacher, and training refuses to
  start when the cache's identity (teacher, preprocessing, classes, data) does not match.
- DDP under ``torchrun``: the global batch is split across ranks. On GPU, BatchNorm becomes
  SyncBatchNorm so N ranks match one process; on CPU (gloo) SyncBatchNorm does not exist,
  so BN students see per-rank statistics (BN-free students match within float tolerance).
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from distill.config import TrainConfig, dump_config
from distill.data.folder import DomainFolder, Sample
from distill.data.images import load_rgb
from distill.errors import DistillError
from distill.evaluate import DomainEvaluator
from distill.strategies import Batch, Strategy, StrategyContext, create_strategy, get_strategy
from distill.student.model import Student, default_spec, load_student, save_student
from distill.teacher.views import ViewConfig, view_params, view_pixels
from distill.utils.flops import count_flops, count_params
from distill.utils.io import atomic_write_json, atomic_write_text, read_json
from distill.utils.runtime import (Dist, barrier, check_precision, init_distributed, resolve_device,  # noqa: F401
                                   seed_everything, seed_step, set_deterministic, step_seed)
from distill.utils.runtime import autocast as runtime_autocast
from distill.utils.state import load_state, rng_state, save_state, set_rng_state


_STEP_DELAY = float(os.environ.get("DISTILL_TRAIN_STEP_DELAY", "0") or 0)


# ---------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Item:
    """One training example of an epoch: an image and which of its views to show."""

    sample: Sample
    domain: int
    view: int
    params: tuple[float, ...] | None  # cached view params; None: compute from the seed


class TrainImages(Dataset):
    """Items -> pixels [3, H, W] in [0, 1] of the item's view, at the student's resolution.

    With ``pixels`` (the cache's :class:`~distill.teacher.cache_pixels.PixelStore` at this size
    and interpolation) an item with cached view params is read from the store: no decode, no
    resize. Otherwise the image is decoded and the view made with
    :func:`~distill.teacher.views.view_pixels`, the function the store was written with, so
    both paths give the same bits.

    With ``uint8=True`` items stay uint8 [3, H, W] (what the trainer asks for): a worker then only
    reads or decodes, a quarter of the bytes cross shared memory, pinning and the host-to-device
    copy, and :func:`to_unit` turns the batch into floats on the device, bit-identical to
    converting here.
    """

    def __init__(self, dataset: DomainFolder, items: Sequence[Item], size: tuple[int, int], interpolation: str,
                 view_cfg: ViewConfig, view_seed: int, pixels=None, uint8: bool = False):
        self.dataset, self.items = dataset, list(items)
        self.size, self.interpolation = size, interpolation
        self.view_cfg, self.view_seed = view_cfg, view_seed
        self.pixels = pixels
        self.uint8 = uint8

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        it = self.items[i]
        if self.pixels is not None and it.params is not None:
            u8 = self.pixels.get(it.sample.index, it.view)
        else:
            img = load_rgb(self.dataset.path(it.sample))
            params = it.params
            if params is None:
                params = view_params(self.view_seed, it.sample.index, it.view, img.size, self.view_cfg,
                                     clean_size=self.size)
            u8 = view_pixels(img, params, self.size, self.interpolation)
        pixels = u8 if self.uint8 else to_unit(u8)
        return pixels, it.sample.label, it.domain, it.sample.index, it.view


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
    params = None
    if cache is not None:
        idx = torch.tensor([samples[i].index for i in order], dtype=torch.long)
        vw = torch.tensor([chosen[i] for i in order], dtype=torch.long)
        params = cache.lookup(idx, vw)["view_params"].tolist() if len(idx) else []
    for j, i in enumerate(order):
        s = samples[i]
        items.append(Item(s, domain_index[s.domain], chosen[i], tuple(params[j]) if params is not None else None))
    return items


# ---------------------------------------------------------------------------- checkpoints
class Checkpoints:
    """``RUN/checkpoints/step-N/`` folders + an atomically rewritten ``last.json`` pointer."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir / "checkpoints"

    def last(self) -> Path | None:
        ptr = self.dir / "last.json"
        if not ptr.is_file():
            return None
        path = self.dir / read_json(ptr)["dir"]
        return path if (path / "train_state.json").is_file() else None

    def save(self, step: int, strategy: Strategy, state: dict[str, Any]) -> Path:
        path = self.dir / f"step-{step:08d}"
        if path.exists():
            shutil.rmtree(path)
        save_student(strategy.student, path)
        save_state(path / "train_state", {"strategy": strategy.state_dict(), **state})
        atomic_write_json(self.dir / "last.json", {"dir": path.name, "step": step})
        for old in self.dir.glob("step-*"):
            if old != path:
                shutil.rmtree(old, ignore_errors=True)
        return path

    def save_best(self, strategy: Strategy, provenance: dict[str, Any]) -> None:
        tmp = self.dir / "best.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_student(strategy.student, tmp, extra_provenance=provenance)
        best = self.dir / "best"
        if best.exists():
            shutil.rmtree(best)
        os.replace(tmp, best)


# ---------------------------------------------------------------------------- the loop
@dataclass
class TrainSetup:
    """Objects the trainer needs; built from a config by :func:`build`."""

    cfg: TrainConfig
    dataset: DomainFolder
    source: list[str]
    target: list[str]
    strategy: Strategy
    caches: list
    views: int
    view_cfg: ViewConfig
    view_seed: int
    device: torch.device
    dist: Dist
    teacher_zero_shot: dict[str, float]
    provenance: dict[str, Any]
    adversarial: Any = None  # distill.teacher.cache_adv.AdversarialViews when needs.cached_adversarial
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (relpath, reason) left out


class _ListSampler:
    """A batch sampler over a list the trainer refills each epoch (the DataLoader and its workers persist)."""

    def __init__(self, batches: list[list[int]]):
        self.batches = batches

    def __iter__(self):
        return iter(list(self.batches))

    def __len__(self) -> int:
        return len(self.batches)


class _StepLog:
    """Per-step loss, loss parts and accuracy, kept on the device and read back at log points.

    ``float(loss)`` every step stalls a GPU until the step finishes; here each log point costs one
    host sync for all steps since the last. A non-finite loss raises the same one-line error as a
    per-step check would, naming the first bad step, at the next log point (the trainer flushes
    before every checkpoint, so a NaN never reaches one).
    """

    def __init__(self, writer, device: torch.device):
        self.writer, self.device = writer, device
        self.epoch = 0
        self.steps: list[tuple[int, int, float]] = []  # (step in epoch, global step, lr)
        self.values: list[Tensor] = []  # 0-dim: loss of each step, then its parts
        self.names: list[list[str]] = []
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.seen = 0

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.correct.zero_()
        self.seen = 0

    def add(self, step_in_epoch: int, global_step: int, out: dict[str, Tensor], labels: Tensor | None,
            lr: float) -> None:
        parts = [k for k, v in out.items() if k not in ("loss", "logits") and v.dim() == 0]
        self.steps.append((step_in_epoch, global_step, lr))
        self.names.append(parts)
        self.values += [out["loss"].detach().float()] + [out[k].detach().float() for k in parts]
        if "logits" in out and labels is not None:  # live accuracy, accumulated on the device
            self.correct += (out["logits"].detach().argmax(-1) == labels).sum()
            self.seen += len(labels)

    def flush(self, bar=None) -> None:
        if not self.steps:
            return
        vals = torch.stack(self.values).cpu().tolist()  # the one host sync
        i = 0
        for (step, gstep, lr), names in zip(self.steps, self.names):
            loss = vals[i]
            if not math.isfinite(loss):
                raise DistillError(f"loss is {loss} at epoch {self.epoch + 1} step {step}: "
                                   f"lower optim.lr or enable optim.grad_clip")
            if self.writer is not None:
                self.writer.add_scalar("train/loss", loss, gstep)
                for k, v in zip(names, vals[i + 1:i + 1 + len(names)]):
                    self.writer.add_scalar(f"train/{k}", v, gstep)
                self.writer.add_scalar("train/lr", lr, gstep)
            i += 1 + len(names)
        if bar is not None:
            post = {"loss": f"{vals[i - 1 - len(self.names[-1])]:.3f}"}
            if self.seen:
                post["acc"] = f"{100 * int(self.correct) / self.seen:.1f}"
            bar.set_postfix(post)
        self.steps, self.values, self.names = [], [], []


class Trainer:
    def __init__(self, setup: TrainSetup):
        self.s = setup
        cfg = setup.cfg
        self.run_dir = Path(cfg.run.out)
        self.ckpt = Checkpoints(self.run_dir)
        self.model: nn.Module = setup.strategy
        # channels_last on CUDA (tensor-core convs: ~3x the student's step rate on an H100); CPU keeps NCHW,
        # where oneDNN chooses its own layouts and the bitwise resume guarantee was established
        self.memory_format = torch.channels_last if setup.device.type == "cuda" else torch.contiguous_format
        setup.strategy.to(memory_format=self.memory_format)
        if setup.dist.world > 1:
            if setup.device.type == "cuda":
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[setup.device.index] if setup.device.type == "cuda" else None)
        self.strategy = setup.strategy
        params = [p for p in self.strategy.parameters() if p.requires_grad]
        o = cfg.optim
        if o.optimizer == "adamw":  # fused on CUDA: one kernel, and no host sync under a GradScaler
            self.optimizer = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay,
                                               fused=True if setup.device.type == "cuda" else None)
        else:
            self.optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                                             nesterov=o.momentum > 0)  # momentum 0: plain SGD
        self.train_domains = setup.target if setup.strategy.needs.target_data else setup.source
        self.train_samples = setup.dataset.select(self.train_domains, "train")
        self.steps_per_epoch = len(self.train_samples) // o.batch_size
        if self.steps_per_epoch == 0:
            raise DistillError(f"domains {self.train_domains}: {len(self.train_samples)} training images is fewer than "
                               f"optim.batch_size={o.batch_size}")
        if o.batch_size % setup.dist.world:
            raise DistillError(f"optim.batch_size={o.batch_size} must be divisible by the {setup.dist.world} DDP ranks")
        from timm.scheduler import CosineLRScheduler

        total = o.epochs * self.steps_per_epoch
        self.scheduler = CosineLRScheduler(self.optimizer, t_initial=total, lr_min=o.min_lr,
                                           warmup_t=int(o.warmup_epochs * self.steps_per_epoch),
                                           warmup_lr_init=o.lr * 0.01, warmup_prefix=True, t_in_epochs=False)
        self.domain_index = {d: i for i, d in enumerate(setup.dataset.domains)}
        # a target-data (source-free) strategy never reads a source-domain image, not even to evaluate
        eval_domains = setup.target if setup.strategy.needs.target_data else setup.source + setup.target
        self.evaluator = DomainEvaluator(setup.dataset, eval_domains, self.strategy.student.preprocess(),
                                         workers=0) if setup.dist.main else None
        # model selection: the source domains' validation split (never test; none for a source-free run)
        self.val_evaluator = None
        if setup.dist.main and not setup.strategy.needs.target_data:
            self.val_evaluator = DomainEvaluator(setup.dataset, setup.source, self.strategy.student.preprocess(),
                                                 split="val", workers=0)
        ctx = self.strategy.ctx
        ctx.iterate_train, ctx.num_train, ctx.num_samples = self._clean_batches, len(self.train_samples), len(setup.dataset)
        self.history: list[dict[str, Any]] = []
        self.best = -1.0
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        spec = self.strategy.student.spec  # normalization constants: created once, on the device
        self._mean = torch.tensor(spec.mean, device=setup.device).view(1, 3, 1, 1)
        self._std = torch.tensor(spec.std, device=setup.device).view(1, 3, 1, 1)
        # fp16 autocast needs loss scaling (bf16 has fp32's range and does not); CUDA only (check_precision)
        self.scaler = torch.amp.GradScaler(setup.device.type, enabled=o.precision == "fp16")
        self._train_loader: DataLoader | None = None
        self._epoch_batches: list[list[int]] = []

    # -------------------------------------------------------------- state
    def _state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "rng": rng_state(), "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "global_step": self.global_step, "best": self.best, "history": self.history,
                **({"grad_scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else {})}

    def resume(self) -> bool:
        path = self.ckpt.last()
        if path is None:
            return False
        st = load_state(path / "train_state")
        self.strategy.load_state_dict(st["strategy"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        set_rng_state(st["rng"])
        if self.scaler.is_enabled() and "grad_scaler" in st:
            self.scaler.load_state_dict(st["grad_scaler"])
        self.epoch, self.step_in_epoch, self.global_step = st["epoch"], st["step_in_epoch"], st["global_step"]
        self.best, self.history = st["best"], st["history"]
        if self.s.dist.main:
            print(f"resumed from {path} (epoch {self.epoch + 1}, step {self.step_in_epoch}/{self.steps_per_epoch})")
        return True

    def _save(self) -> None:
        if self.s.dist.main:
            self.ckpt.save(self.global_step, self.strategy, self._state())
        barrier(self.s.dist)

    # -------------------------------------------------------------- batches
    def _loader(self, epoch: int, skip_steps: int) -> DataLoader:
        """This rank's batches of ``epoch`` from step ``skip_steps`` on, through one persistent DataLoader.

        The dataset holds every (image, view) pair once; the epoch's order and view choice
        (:func:`epoch_items`, a pure function of seed and epoch) travel as the batch sampler's keys.
        So the loader and its worker processes live for the whole run (``persistent_workers``),
        and a resumed run still sees exactly the batches an uninterrupted one sees.
        """
        s, o = self.s, self.s.cfg.optim
        if self._train_loader is None:
            self._train_loader = self._make_train_loader()
        items = epoch_items(self.train_samples, self.domain_index, s.views, s.view_seed, epoch,
                            s.caches[0] if s.caches else None)
        items = items[: self.steps_per_epoch * o.batch_size]
        per_rank = o.batch_size // s.dist.world
        V = s.views
        batches = []
        for step in range(skip_steps, self.steps_per_epoch):
            start = step * o.batch_size + s.dist.rank * per_rank
            batches.append([self._pair_of[it.sample.index] * V + it.view for it in items[start:start + per_rank]])
        self._epoch_batches[:] = batches  # the sampler iterates this list (see _make_train_loader)
        return self._train_loader

    def _make_train_loader(self) -> DataLoader:
        s = self.s
        V = s.views
        self._pair_of = {x.index: i for i, x in enumerate(self.train_samples)}
        cache = s.caches[0] if s.caches else None
        params = None
        if cache is not None and self.train_samples:  # view params of every (image, view): one lookup
            idx = torch.tensor([x.index for x in self.train_samples], dtype=torch.long).repeat_interleave(V)
            vw = torch.arange(V, dtype=torch.long).repeat(len(self.train_samples))
            params = cache.lookup(idx, vw)["view_params"].tolist()
        pairs = [Item(x, self.domain_index[x.domain], v, tuple(params[i * V + v]) if params is not None else None)
                 for i, x in enumerate(self.train_samples) for v in range(V)]
        spec = self.strategy.student.spec
        ds = TrainImages(s.dataset, pairs, spec.input_size, spec.interpolation, s.view_cfg, s.view_seed,
                         pixels=self.pixel_store()[0], uint8=True)
        workers = s.cfg.run.workers
        # an explicit generator: an iterator's base seed must not come from (and advance) the
        # global RNG, or a resumed run would be one draw behind the uninterrupted one
        return DataLoader(ds, batch_sampler=_ListSampler(self._epoch_batches), num_workers=workers,
                          pin_memory=s.device.type == "cuda", persistent_workers=workers > 0,
                          prefetch_factor=4 if workers else None,
                          generator=torch.Generator().manual_seed(step_seed(s.cfg.run.seed, 0, -2, s.dist.rank)))

    def pixel_store(self):
        """(the first cache's pixel store at the student's size, or None; the line saying which), found once."""
        if not hasattr(self, "_pixels"):
            from distill.teacher.cache import find_pixel_store

            spec = self.strategy.student.spec
            self._pixels = find_pixel_store(self.s.caches[0] if self.s.caches else None, spec.input_size,
                                            spec.interpolation)
        return self._pixels

    def _batch(self, pixels, labels, domain, index, view) -> Batch:
        dev = self.s.device
        # pinned host memory (pin_memory on CUDA) + non_blocking: the copy overlaps the previous step;
        # batches arrive as uint8 (a quarter of the bytes) and become floats on the device
        pixels = pixels.to(dev, non_blocking=True)
        if pixels.dtype == torch.uint8:
            pixels = to_unit(pixels)
        pixels = pixels.contiguous(memory_format=self.memory_format)
        spec = self.strategy.student.spec
        needs = self.strategy.needs
        b = Batch(pixels=pixels, images=(pixels - self._mean) / self._std,
                  labels=labels.to(dev, non_blocking=True) if needs.labels else None,
                  domain=domain.to(dev, non_blocking=True), sample_index=index.to(dev, non_blocking=True),
                  view=view.to(dev, non_blocking=True))
        if self.s.caches and (needs.cached_logits or needs.cached_features):
            rows = [c.lookup(index, view) for c in self.s.caches]
            b.teacher_logits = rows[0]["logits"].to(dev, non_blocking=True)
            b.teacher_emb = rows[0]["image_emb"].to(dev, non_blocking=True)
            b.teacher_logits_all = [r["logits"].to(dev, non_blocking=True) for r in rows]
        if needs.cached_adversarial:  # one cached adversarial view per image, at the student's resolution
            adv = self.s.adversarial
            rows = adv.lookup(index, adv.choose(index, self.epoch, self.s.view_seed))
            px = rows["pixels"].to(dev, non_blocking=True).float() / 255.0
            if tuple(px.shape[-2:]) != tuple(spec.input_size):
                px = F.interpolate(px, size=tuple(spec.input_size), mode="bicubic", align_corners=False,
                                   antialias=True).clamp(0, 1)
            b.adv_pixels, b.adv_teacher_logits = px.contiguous(memory_format=self.memory_format), \
                rows["logits"].to(dev, non_blocking=True)
            # the views were crafted on the teacher's clean crop (view 0): its answer there, not on this item's view
            b.adv_clean_teacher_logits = self.s.caches[0].lookup(index, torch.zeros_like(index))["logits"].to(
                dev, non_blocking=True)
        return b

    def _clean_batches(self, batch_size: int = 256):
        """View-0 batches over all training images in dataset order (for epoch hooks)."""
        s = self.s
        items = [Item(x, self.domain_index[x.domain], 0, None) for x in self.train_samples]
        spec = self.strategy.student.spec
        ds = TrainImages(s.dataset, items, spec.input_size, spec.interpolation, s.view_cfg, s.view_seed, uint8=True)
        gen = torch.Generator().manual_seed(s.cfg.run.seed)  # leaves the global RNG alone
        for pixels, labels, domain, index, view in DataLoader(ds, batch_size=batch_size, num_workers=s.cfg.run.workers,
                                                              generator=gen):
            yield self._batch(pixels, labels, domain, index, view)

    # -------------------------------------------------------------- main loop
    def fit(self) -> dict[str, Any]:
        s, cfg = self.s, self.s.cfg
        o = cfg.optim
        writer = None
        if s.dist.main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.global_step or None)
        autocast = runtime_autocast(s.device, o.precision)  # losses cast to fp32 themselves (strategies)
        log = _StepLog(writer, self.s.device)
        t0 = time.time()
        while self.epoch < o.epochs:
            epoch = self.epoch
            seed_step(cfg.run.seed, epoch, -1, s.dist.rank)  # the epoch hook's draws (if any)
            self.strategy.on_epoch_start(epoch)
            self.model.train()
            loader = self._loader(epoch, self.step_in_epoch)
            bar = None
            if s.dist.main and cfg.run.progress:
                from tqdm import tqdm

                bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, desc=f"epoch {epoch + 1}/{o.epochs}",
                           dynamic_ncols=True, leave=False)
            log.start_epoch(epoch)
            # no host sync in this loop: loss, parts and accuracy stay on the device until a log point
            # (every run.log_every steps, before a checkpoint, at the epoch's end), which also catches a NaN
            for pixels, labels, domain, index, view in loader:
                # every random draw of the step (dropout, masks, PGD starts) is a function of
                # (seed, epoch, step): a resumed run replays it whatever ran before
                seed_step(cfg.run.seed, epoch, self.step_in_epoch, s.dist.rank)
                batch = self._batch(pixels, labels, domain, index, view)
                with autocast:
                    out = self.model(batch)
                loss = out["loss"]
                log.add(self.step_in_epoch, self.global_step + 1, out, batch.labels,
                        self.optimizer.param_groups[0]["lr"])
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                if o.grad_clip:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(self.strategy.parameters(), o.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.global_step += 1
                self.step_in_epoch += 1
                self.scheduler.step_update(num_updates=self.global_step)
                n_steps = self.step_in_epoch
                save = cfg.run.save_every and self.global_step % cfg.run.save_every == 0 and n_steps < self.steps_per_epoch
                if self.global_step % cfg.run.log_every == 0 or save:
                    log.flush(bar)  # raises on a non-finite loss, before any checkpoint could keep it
                if bar is not None:
                    bar.update(1)
                if save:
                    self._save()
                if _STEP_DELAY:  # test hook: slow steps so a test can kill -9 mid-run
                    time.sleep(_STEP_DELAY)
            log.flush(bar)
            if bar is not None:
                bar.close()
            # end of epoch: evaluate, log, checkpoint (the epoch counter moves first so that a
            # checkpoint taken here resumes at the next epoch)
            row = self._evaluate(epoch)
            self.epoch, self.step_in_epoch = epoch + 1, 0
            if s.dist.main:
                self.history.append(row)
                self._write_metrics()
                if writer is not None:
                    for k, v in row.items():
                        if k != "epoch":
                            writer.add_scalar(f"eval/{k}", v, self.global_step)
                    writer.flush()
                # selection on source validation accuracy; without it (a source-free run sees no
                # source data and must not peek at target labels) the last epoch is kept
                val = row["source_val_acc"]
                improved = val > self.best if not math.isnan(val) else True
                if improved:
                    self.best = val if not math.isnan(val) else self.best
                    self.ckpt.save_best(self.strategy, {**s.provenance, "epoch": epoch + 1, "metrics": row})
                print(self._epoch_line(row, improved))
            self._save()
        if writer is not None:
            writer.close()
        robust = self._robust_eval() if s.dist.main and cfg.robust is not None else None
        summary = self._summary(time.time() - t0, robust) if s.dist.main else {}
        barrier(s.dist)
        return summary

    @torch.no_grad()
    def _evaluate(self, epoch: int) -> dict[str, Any]:
        if not self.s.dist.main:
            return {}
        self.strategy.eval()
        acc = self.evaluator(self.strategy.predict, self.s.device)
        val = self.val_evaluator(self.strategy.predict, self.s.device) if self.val_evaluator is not None else {}
        self.strategy.train()
        src = [acc[d] for d in self.s.source if d in acc]
        tgt = [acc[d] for d in self.s.target if d in acc]
        row: dict[str, Any] = {"epoch": epoch + 1}
        row.update({f"acc/{d}": round(v, 4) for d, v in acc.items()})
        row["source_acc"] = round(float(np.mean(src)), 4) if src else float("nan")
        row["target_acc"] = round(float(np.mean(tgt)), 4) if tgt else float("nan")  # no target domains: n/a
        row.update({f"val/{d}": round(v, 4) for d, v in val.items()})
        row["source_val_acc"] = round(float(np.mean(list(val.values()))), 4) if val else float("nan")
        return row

    def _epoch_line(self, row: dict[str, Any], improved: bool) -> str:
        doms = "  ".join(f"{k[4:]} {v:.1f}" for k, v in row.items() if k.startswith("acc/"))
        src, tgt, val = (("n/a" if math.isnan(row[k]) else f"{row[k]:.1f}")
                         for k in ("source_acc", "target_acc", "source_val_acc"))
        kept = ("  (kept: last epoch; no labels to select on)" if math.isnan(row["source_val_acc"])
                else "  (best)" if improved else "")
        return f"epoch {row['epoch']}: source val {val}  |  test: source {src}  target {tgt}  |  {doms}{kept}"

    def _write_metrics(self) -> None:
        keys: list[str] = []
        for r in self.history:
            keys += [k for k in r if k not in keys]
        import io

        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        for r in self.history:
            w.writerow(r)
        atomic_write_text(self.run_dir / "metrics.csv", buf.getvalue())

    def _best_epoch(self) -> int:
        """The selected epoch: best source validation accuracy (first of ties), else the last."""
        rows = [r for r in self.history if not math.isnan(r["source_val_acc"])]
        return max(rows, key=lambda r: r["source_val_acc"])["epoch"] if rows else self.history[-1]["epoch"]

    def _robust_eval(self) -> dict[str, Any]:
        """PGD / corruption accuracy of the best checkpoint on the evaluated domains (config ``robust``)."""
        from distill.robust.evaluate import RobustEvaluator, robust_table

        best = self.ckpt.dir / "best"
        student = load_student(best).to(self.s.device)
        settings = self.s.cfg.robust
        ev = RobustEvaluator(self.s.dataset, self.evaluator.domains, student.spec, settings)
        results = ev(student, self.s.device)
        print(f"robustness of {best}:\n{robust_table(results)}")
        report = {"checkpoint": str(best), "settings": settings.to_dict(), "domains": results}
        atomic_write_json(self.run_dir / "robust.json", report)
        return report

    def _summary(self, seconds: float, robust: dict[str, Any] | None = None) -> dict[str, Any]:
        s = self.s
        best_row = next(r for r in reversed(self.history) if r["epoch"] == self._best_epoch())
        student = self.strategy.student
        summary = {
            "strategy": s.cfg.strategy.name,
            "strategy_options": s.cfg.strategy.options(),
            "student": student.spec.arch,
            "teacher": s.provenance.get("teacher"),
            "source_domains": s.source,
            "target_domains": s.target,
            "trained_on": self.train_domains,
            "best_epoch": best_row["epoch"],
            "selected_on": ("source validation accuracy" if not math.isnan(best_row["source_val_acc"])
                            else "last epoch (no source validation images)"),
            "val_acc": {k[4:]: v for k, v in best_row.items() if k.startswith("val/")},
            "source_val_acc": None if math.isnan(best_row["source_val_acc"]) else best_row["source_val_acc"],
            "test_acc": {k[4:]: v for k, v in best_row.items() if k.startswith("acc/")},
            "source_acc": None if math.isnan(best_row["source_acc"]) else best_row["source_acc"],
            "target_acc": None if math.isnan(best_row["target_acc"]) else best_row["target_acc"],
            "teacher_zero_shot": s.teacher_zero_shot,
            "params": count_params(student),
            "flops": count_flops(student, student.spec.input_size),
            "teacher_flops": s.provenance.get("teacher_flops"),
            "checkpoint": str(self.ckpt.dir / "best"),
            "train_seconds_this_session": round(seconds, 1),
            "skipped_images": [{"path": p, "reason": why} for p, why in s.skipped],
        }
        if robust is not None:
            summary["robust"] = robust
        atomic_write_json(self.run_dir / "summary.json", summary)
        return summary


# ---------------------------------------------------------------------------- building
def _teacher_input_fn(teacher, device: torch.device):
    info = teacher.preprocess_info
    mean = torch.tensor(info.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(info.std, device=device).view(1, 3, 1, 1)

    def teacher_input(pixels: Tensor) -> Tensor:
        x = F.interpolate(pixels, size=info.size, mode="bicubic", align_corners=False, antialias=True)
        return (x.clamp(0, 1) - mean) / std

    return teacher_input


def build(cfg: TrainConfig, resume: bool = False) -> TrainSetup:
    """Config -> objects. Nothing below this function reads the config's raw form."""
    from distill.teacher.cache import TeacherCache, dataset_expectation, expected_identity

    device = resolve_device(cfg.run.device, what="run.device")  # indexed: cuda:LOCAL_RANK under torchrun
    check_precision(cfg.optim.precision, device, what="optim.precision")
    d = init_distributed(device)
    seed_everything(cfg.run.seed)
    set_deterministic(cfg.run.deterministic)
    dataset = DomainFolder(cfg.data.root, cfg.data.class_map, cfg.data.test_fraction, cfg.data.split_seed,
                           cfg.data.val_fraction)
    source = dataset.check_domains(cfg.data.source)
    target = dataset.check_domains(cfg.data.target) if cfg.data.target is not None else [
        x for x in dataset.domains if x not in source]
    cls = get_strategy(cfg.strategy.name)
    needs = cls.needs

    # caches: required by cached_* needs; identity checked against this run's data (+ teacher)
    caches = []
    wants_cache = needs.cached_logits or needs.cached_features or needs.text_embeddings
    if wants_cache and not cfg.caches():
        raise DistillError(f"strategy '{cls.name}' needs a teacher cache: set 'cache' to a `distill cache build` output")
    teacher = None
    if needs.online_teacher:
        if cfg.teacher is None:
            raise DistillError(f"strategy '{cls.name}' runs the teacher online: set the 'teacher' section (arch, pretrained)")
    for path in cfg.caches():
        probe = TeacherCache.open(path, verify=False)  # manifest only matters here; the open below verifies
        templates = cfg.teacher.templates if cfg.teacher and cfg.teacher.templates else probe.manifest["templates"]
        teacher_ident = preprocess = None
        if cfg.teacher is not None:
            from distill.teacher import Teacher

            teacher = teacher or Teacher(cfg.teacher.arch, cfg.teacher.pretrained, dataset.classes, templates,
                                         device=str(device), precision=cfg.teacher.precision)
            teacher_ident, preprocess = teacher.identity(), teacher.preprocess_info.to_dict()
        data_inputs = dataset_expectation(path, probe.manifest, dataset)  # another data set's cache: named so
        content = None
        if probe.manifest["dataset"].get("content_fingerprint"):  # built with --fingerprint content
            from distill.data.fingerprint import content_fingerprint

            content = content_fingerprint(dataset, probe.domains)
        expect = expected_identity(teacher_ident, preprocess, dataset.classes, dataset.fingerprint(probe.domains),
                                   templates if cfg.teacher else None, dataset=data_inputs,
                                   content_fingerprint=content)
        caches.append(TeacherCache.open(path, expect=expect))
        if len(caches) > 1 and caches[-1].manifest["views"] != caches[0].manifest["views"]:
            from distill.teacher.cache import diff_fields

            diffs = diff_fields({"views": caches[-1].manifest["views"]}, {"views": caches[0].manifest["views"]})
            raise DistillError(f"cache {path}: its views differ from the first cache's ({'; '.join(diffs)}); "
                               "several teachers must be cached with the same --views, --seed and crop settings "
                               "so that every row describes the same image view")
    skipped = _skip_bad_images(dataset, caches, source + target, cfg.data.skip_bad)
    if skipped and d.main:
        print(f"warning: {len(skipped)} undecodable image(s) left out of training and evaluation: "
              + ", ".join(f"{p} ({why})" for p, why in skipped))
    if needs.online_teacher and teacher is None:
        from distill.teacher import Teacher
        from distill.teacher.prompts import resolve_templates

        teacher = Teacher(cfg.teacher.arch, cfg.teacher.pretrained, dataset.classes,
                          cfg.teacher.templates or resolve_templates(None, cfg.teacher.pretrained)[0],
                          device=str(device), precision=cfg.teacher.precision)
    if teacher is not None:
        teacher.to(device)

    # views: dictated by the (first) cache so training replays what the teacher saw
    if caches:
        m = caches[0].manifest
        views, view_seed = int(m["views"]["count"]), int(m["views"]["seed"])
        view_cfg = ViewConfig.from_dict(m["views"]["augment"])
    else:
        views, view_seed, view_cfg = cfg.run.views, cfg.run.seed, ViewConfig(hflip=0.0)

    text = caches[0].text_embeddings if caches else (teacher.text_embeddings.cpu() if teacher is not None else None)
    embed_dim = int(text.shape[1]) if text is not None and (needs.cached_features or needs.text_embeddings) else None
    logit_scale = (float(caches[0].manifest["teacher"].get("logit_scale", 0)) or None) if caches else (
        teacher.logit_scale if teacher is not None else None)

    if needs.source_checkpoint and cfg.source_checkpoint is None:
        raise DistillError(f"strategy '{cls.name}' adapts a source-trained student: set 'source_checkpoint'")
    if cfg.source_checkpoint is not None:
        student = load_student(cfg.source_checkpoint)
        if student.spec.class_names != dataset.classes:
            raise DistillError(f"source_checkpoint {cfg.source_checkpoint}: its classes differ from data.root's")
    else:
        spec = default_spec(cfg.student.arch, dataset.classes, cfg.student.input_size, embed_dim)
        student = Student(spec, pretrained=cfg.student.pretrained)
        if cfg.student.zero_shot_init:
            if text is None or logit_scale is None:
                raise DistillError("student.zero_shot_init needs a cache (or teacher) for the text embeddings")
            if student.projector is None:
                raise DistillError("student.zero_shot_init needs a strategy with a projector (a feature strategy)")
            student.zero_shot_init(text, logit_scale)
    student.to(device)
    ctx = StrategyContext(
        num_classes=len(dataset.classes), class_names=dataset.classes, embed_dim=embed_dim,
        text_embeddings=text.to(device) if text is not None else None, logit_scale=logit_scale,
        teacher=teacher if needs.online_teacher else None,
        teacher_input=_teacher_input_fn(teacher, device) if teacher is not None else None,
        normalize=None)
    strategy = create_strategy(cfg.strategy.name, student, cfg.strategy.options(), ctx).to(device)

    zs = {}
    if caches:
        acc = caches[0].zero_shot_accuracy()
        zs = {dom: round(100.0 * v["test"], 4) for dom, v in acc.items() if dom in source + target and "test" in v}
    provenance = {"strategy": cfg.strategy.name, "run": str(cfg.run.out),
                  "teacher": caches[0].manifest.get("teacher") if caches else (teacher.identity() if teacher else None),
                  "teacher_flops": caches[0].manifest.get("teacher_flops_per_image") if caches else None,
                  "source_domains": source, "cache": [str(p) for p in cfg.caches()]}
    adversarial = None
    if needs.cached_adversarial:
        from distill.teacher.cache import AdversarialViews

        adversarial = AdversarialViews.open(caches[0].path, caches[0].manifest)
        provenance["adversarial_views"] = {k: adversarial.manifest[k] for k in ("views", "epsilon", "steps",
                                                                              "step_size", "seed", "objective")}
    return TrainSetup(cfg, dataset, source, target, strategy, caches, views, view_cfg, view_seed, device, d, zs,
                      provenance, adversarial, skipped)


def _skip_bad_images(dataset: DomainFolder, caches: list, domains: list[str], scan: bool) -> list[tuple[str, str]]:
    """Exclude the caches' skipped images (always: the cache has no row for them) and, with ``scan``
    (``data.skip_bad``), every undecodable image of the domains no cache covers. Returns them."""
    out = []
    for c in caches:
        out += dataset.exclude((k["path"], k["reason"]) for k in c.manifest.get("skipped", []))
    if scan:
        covered = set(caches[0].domains) if caches else set()
        out += dataset.skip_undecodable([x for x in domains if x not in covered])
    return out


def run_training(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train a student as ``cfg`` says; returns the summary (also in RUN/summary.json)."""
    run_dir = Path(cfg.run.out)
    saved = run_dir / "config.yaml"
    if resume:
        if not saved.is_file():
            raise DistillError(f"--resume {run_dir}: no config.yaml there (not a run directory)")
    elif (run_dir / "checkpoints" / "last.json").is_file():
        raise DistillError(f"{run_dir} already holds a run: pass --resume {run_dir} to continue it, or choose another run.out")
    setup = build(cfg, resume)
    if setup.dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            atomic_write_text(saved, dump_config(cfg))
    barrier(setup.dist)
    trainer = Trainer(setup)
    if resume:
        trainer.resume()
    if setup.dist.main:
        zs = "  ".join(f"{d} {v:.1f}" for d, v in setup.teacher_zero_shot.items())
        print(f"training '{cfg.strategy.name}' student {cfg.student.arch} on {trainer.train_domains} "
              f"({len(trainer.train_samples)} images, {trainer.steps_per_epoch} steps/epoch); "
              f"targets {setup.target}" + (f"; teacher zero-shot: {zs}" if zs else ""))
        print(trainer.pixel_store()[1])
    return trainer.fit()
