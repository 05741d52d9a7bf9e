"""The training loop: source-domain images + cached teacher outputs -> a distilled student.

``run_training(cfg)`` builds objects from a validated :class:`~distill.config.TrainConfig`
and hands them to :class:`Trainer`, a short loop over objects. Guarantees:

- Exact resume. Each epoch's order (and each image's view) is a pure function of
  ``(seed, epoch)``; checkpoints hold weights, optimizer, scheduler and RNG state plus the
  position in the epoch. A run killed at any point (kill -9) and resumed with
  ``--resume RUN_DIR`` ends with the same metrics and bit-identical weights on CPU.
- Checkpoints are versioned folders ``checkpoints/step-N/`` published by atomically
  rewriting ``checkpoints/last.json``; ``checkpoints/best/`` holds the student with the best
  *source*-domain test accuracy (training-domain validation, as in DomainBed: choosing by
  target accuracy would peek at the unseen domains).
- Strategies that need only cached outputs never build a teacher, and training refuses to
  start when the cache's identity (teacher, preprocessing, classes, data) does not match.
- DDP under ``torchrun``: the global batch is split across ranks. On GPU, BatchNorm becomes
  SyncBatchNorm so N ranks match one process; on CPU (gloo) SyncBatchNorm does not exist,
  so BN students see per-rank statistics (BN-free students match within float tolerance).
"""
from __future__ import annotations

import csv
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
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
from distill.teacher.views import ViewConfig, apply_view, view_params
from distill.utils.flops import count_flops, count_params
from distill.utils.io import atomic_write_json, atomic_write_text, read_json
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
    """Items -> pixels [3, H, W] in [0, 1] of the item's view, at the student's resolution."""

    def __init__(self, dataset: DomainFolder, items: Sequence[Item], size: tuple[int, int], interpolation: str,
                 view_cfg: ViewConfig, view_seed: int):
        self.dataset, self.items = dataset, list(items)
        self.size, self.interpolation = size, interpolation
        self.view_cfg, self.view_seed = view_cfg, view_seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        from torchvision.transforms.functional import to_tensor

        it = self.items[i]
        img = load_rgb(self.dataset.path(it.sample))
        params = it.params
        if params is None:
            params = view_params(self.view_seed, it.sample.index, it.view, img.size, self.view_cfg,
                                 clean_size=self.size)
        pixels = to_tensor(apply_view(img, params, self.size, self.interpolation))
        return pixels, it.sample.label, it.domain, it.sample.index, it.view


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


# ---------------------------------------------------------------------------- distributed
@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """Join the torchrun process group when launched by torchrun; else single process."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


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


class Trainer:
    def __init__(self, setup: TrainSetup):
        self.s = setup
        cfg = setup.cfg
        self.run_dir = Path(cfg.run.out)
        self.ckpt = Checkpoints(self.run_dir)
        self.model: nn.Module = setup.strategy
        if setup.dist.world > 1:
            if setup.device.type == "cuda":
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[setup.device.index] if setup.device.type == "cuda" else None)
        self.strategy = setup.strategy
        params = [p for p in self.strategy.parameters() if p.requires_grad]
        o = cfg.optim
        if o.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                                             nesterov=True)
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
        ctx = self.strategy.ctx
        ctx.iterate_train, ctx.num_train, ctx.num_samples = self._clean_batches, len(self.train_samples), len(setup.dataset)
        self.history: list[dict[str, Any]] = []
        self.best = -1.0
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0

    # -------------------------------------------------------------- state
    def _state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "rng": rng_state(), "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "global_step": self.global_step, "best": self.best, "history": self.history}

    def resume(self) -> bool:
        path = self.ckpt.last()
        if path is None:
            return False
        st = load_state(path / "train_state")
        self.strategy.load_state_dict(st["strategy"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        set_rng_state(st["rng"])
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
        s, o = self.s, self.s.cfg.optim
        items = epoch_items(self.train_samples, self.domain_index, s.views, s.view_seed, epoch,
                            s.caches[0] if s.caches else None)
        items = items[: self.steps_per_epoch * o.batch_size]
        per_rank = o.batch_size // s.dist.world
        mine = []
        for step in range(skip_steps, self.steps_per_epoch):
            start = step * o.batch_size + s.dist.rank * per_rank
            mine.extend(items[start:start + per_rank])
        spec = self.strategy.student.spec
        ds = TrainImages(s.dataset, mine, spec.input_size, spec.interpolation, s.view_cfg, s.view_seed)
        return DataLoader(ds, batch_size=per_rank, shuffle=False, num_workers=s.cfg.run.workers,
                          pin_memory=s.device.type == "cuda", drop_last=True,
                          persistent_workers=False)

    def _batch(self, pixels, labels, domain, index, view) -> Batch:
        dev = self.s.device
        pixels = pixels.to(dev, non_blocking=True)
        spec = self.strategy.student.spec
        mean = torch.tensor(spec.mean, device=dev).view(1, 3, 1, 1)
        std = torch.tensor(spec.std, device=dev).view(1, 3, 1, 1)
        needs = self.strategy.needs
        b = Batch(pixels=pixels, images=(pixels - mean) / std, labels=labels.to(dev) if needs.labels else None,
                  domain=domain.to(dev), sample_index=index.to(dev), view=view.to(dev))
        if self.s.caches and (needs.cached_logits or needs.cached_features):
            rows = [c.lookup(index, view) for c in self.s.caches]
            b.teacher_logits = rows[0]["logits"].to(dev)
            b.teacher_emb = rows[0]["image_emb"].to(dev)
            b.teacher_logits_all = [r["logits"].to(dev) for r in rows]
        if needs.cached_adversarial:  # one cached adversarial view per image, at the student's resolution
            adv = self.s.adversarial
            rows = adv.lookup(index, adv.choose(index, self.epoch, self.s.view_seed))
            px = rows["pixels"].to(dev).float() / 255.0
            if tuple(px.shape[-2:]) != tuple(spec.input_size):
                px = F.interpolate(px, size=tuple(spec.input_size), mode="bicubic", align_corners=False,
                                   antialias=True).clamp(0, 1)
            b.adv_pixels, b.adv_teacher_logits = px, rows["logits"].to(dev)
            # the views were crafted on the teacher's clean crop (view 0): its answer there, not on this item's view
            b.adv_clean_teacher_logits = self.s.caches[0].lookup(index, torch.zeros_like(index))["logits"].to(dev)
        return b

    def _clean_batches(self, batch_size: int = 256):
        """View-0 batches over all training images in dataset order (for epoch hooks)."""
        s = self.s
        items = [Item(x, self.domain_index[x.domain], 0, None) for x in self.train_samples]
        spec = self.strategy.student.spec
        ds = TrainImages(s.dataset, items, spec.input_size, spec.interpolation, s.view_cfg, s.view_seed)
        for pixels, labels, domain, index, view in DataLoader(ds, batch_size=batch_size, num_workers=s.cfg.run.workers):
            yield self._batch(pixels, labels, domain, index, view)

    # -------------------------------------------------------------- main loop
    def fit(self) -> dict[str, Any]:
        s, cfg = self.s, self.s.cfg
        o = cfg.optim
        writer = None
        if s.dist.main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.global_step or None)
        autocast = (torch.autocast(s.device.type, dtype=torch.bfloat16) if o.bf16 else nullcontext())
        t0 = time.time()
        while self.epoch < o.epochs:
            epoch = self.epoch
            self.strategy.on_epoch_start(epoch)
            self.model.train()
            loader = self._loader(epoch, self.step_in_epoch)
            bar = None
            if s.dist.main and cfg.run.progress:
                from tqdm import tqdm

                bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, desc=f"epoch {epoch + 1}/{o.epochs}",
                           dynamic_ncols=True, leave=False)
            run_correct, run_seen = 0, 0
            for pixels, labels, domain, index, view in loader:
                batch = self._batch(pixels, labels, domain, index, view)
                with autocast:
                    out = self.model(batch)
                loss = out["loss"]
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    raise DistillError(f"loss is {loss_value} at epoch {epoch + 1} step {self.step_in_epoch}: "
                                       f"lower optim.lr or enable optim.grad_clip")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if o.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.strategy.parameters(), o.grad_clip)
                self.optimizer.step()
                self.global_step += 1
                self.step_in_epoch += 1
                self.scheduler.step_update(num_updates=self.global_step)
                n_steps = self.step_in_epoch
                if "logits" in out and batch.labels is not None:  # live accuracy
                    run_correct += int((out["logits"].detach().argmax(-1) == batch.labels).sum())
                    run_seen += len(batch.labels)
                if writer is not None:
                    writer.add_scalar("train/loss", loss_value, self.global_step)
                    for k, v in out.items():
                        if k not in ("loss", "logits") and v.dim() == 0:
                            writer.add_scalar(f"train/{k}", float(v), self.global_step)
                    writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.global_step)
                if bar is not None:
                    post = {"loss": f"{loss_value:.3f}"}
                    if run_seen:
                        post["acc"] = f"{100 * run_correct / run_seen:.1f}"
                    bar.set_postfix(post)
                    bar.update(1)
                if cfg.run.save_every and self.global_step % cfg.run.save_every == 0 and n_steps < self.steps_per_epoch:
                    self._save()
                if _STEP_DELAY:  # test hook: slow steps so a test can kill -9 mid-run
                    time.sleep(_STEP_DELAY)
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
                # selection on source test accuracy; a source-free run sees no source data and
                # must not peek at target labels, so it keeps its last epoch
                improved = row["source_acc"] > self.best if not math.isnan(row["source_acc"]) else True
                if improved:
                    self.best = row["source_acc"]
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
        self.strategy.train()
        src = [acc[d] for d in self.s.source if d in acc]
        tgt = [acc[d] for d in self.s.target if d in acc]
        row: dict[str, Any] = {"epoch": epoch + 1}
        row.update({f"acc/{d}": round(v, 4) for d, v in acc.items()})
        row["source_acc"] = round(float(np.mean(src)), 4) if src else float("nan")
        row["target_acc"] = round(float(np.mean(tgt)), 4) if tgt else 0.0
        return row

    def _epoch_line(self, row: dict[str, Any], improved: bool) -> str:
        doms = "  ".join(f"{k[4:]} {v:.1f}" for k, v in row.items() if k.startswith("acc/"))
        src = "-" if math.isnan(row["source_acc"]) else f"{row['source_acc']:.1f}"
        return (f"epoch {row['epoch']}: source {src}  target {row['target_acc']:.1f}  |  {doms}"
                + ("  (best)" if improved else ""))

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
        rows = [r for r in self.history if not math.isnan(r["source_acc"])]
        return max(rows, key=lambda r: r["source_acc"])["epoch"] if rows else self.history[-1]["epoch"]

    def _robust_eval(self) -> dict[str, Any]:
        """PGD / corruption accuracy of the best checkpoint on the evaluated domains (config ``robust``)."""
        from distill.robust import RobustEvaluator, robust_table

        best = self.ckpt.dir / "best"
        student = load_student(best).to(self.s.device)
        settings = self.s.cfg.robust.settings()
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
            "test_acc": {k[4:]: v for k, v in best_row.items() if k.startswith("acc/")},
            "source_acc": None if math.isnan(best_row["source_acc"]) else best_row["source_acc"],
            "target_acc": best_row["target_acc"],
            "teacher_zero_shot": s.teacher_zero_shot,
            "params": count_params(student),
            "flops": count_flops(student, student.spec.input_size),
            "teacher_flops": s.provenance.get("teacher_flops"),
            "checkpoint": str(self.ckpt.dir / "best"),
            "train_seconds_this_session": round(seconds, 1),
        }
        if robust is not None:
            summary["robust"] = robust
        atomic_write_json(self.run_dir / "summary.json", summary)
        return summary


# ---------------------------------------------------------------------------- building
def resolve_device(name: str, d: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and d.world > 1:
        name = f"cuda:{d.local_rank}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DistillError(f"run.device '{name}': CUDA is not available on this machine")
    dev = torch.device(name)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dev


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
    from distill.teacher.cache import TeacherCache, expected_identity

    d = init_distributed(cfg.run.device)
    device = resolve_device(cfg.run.device, d)
    seed_everything(cfg.run.seed)
    if cfg.run.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    dataset = DomainFolder(cfg.data.root, cfg.data.class_map, cfg.data.test_fraction, cfg.data.split_seed)
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
                                         device=str(device))
            teacher_ident, preprocess = teacher.identity(), teacher.preprocess_info.to_dict()
        content = None
        if probe.manifest["dataset"].get("content_fingerprint"):  # built with --fingerprint content
            from distill.data.fingerprint import content_fingerprint

            content = content_fingerprint(dataset, probe.domains)
        expect = expected_identity(teacher_ident, preprocess, dataset.classes,
                                   dataset.fingerprint(probe.domains), templates if cfg.teacher else None, content)
        caches.append(TeacherCache.open(path, expect=expect))
        if len(caches) > 1 and caches[-1].manifest["views"] != caches[0].manifest["views"]:
            from distill.teacher.cache_format import diff_fields

            diffs = diff_fields({"views": caches[-1].manifest["views"]}, {"views": caches[0].manifest["views"]})
            raise DistillError(f"cache {path}: its views differ from the first cache's ({'; '.join(diffs)}); "
                               "several teachers must be cached with the same --views, --seed and crop settings "
                               "so that every row describes the same image view")
    if needs.online_teacher and teacher is None:
        from distill.teacher import Teacher
        from distill.teacher.prompts import DEFAULT_TEMPLATES

        teacher = Teacher(cfg.teacher.arch, cfg.teacher.pretrained, dataset.classes,
                          cfg.teacher.templates or DEFAULT_TEMPLATES, device=str(device))
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
        from distill.teacher.cache_adv import AdversarialViews

        adversarial = AdversarialViews.open(caches[0].path, caches[0].manifest)
        provenance["adversarial_views"] = {k: adversarial.manifest[k] for k in ("views", "epsilon", "steps",
                                                                              "step_size", "seed", "objective")}
    return TrainSetup(cfg, dataset, source, target, strategy, caches, views, view_cfg, view_seed, device, d, zs,
                      provenance, adversarial)


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
    return trainer.fit()
