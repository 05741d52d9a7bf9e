"""The Trainer: a short loop over objects, built by :func:`distill.train.build.build`.

:meth:`Trainer.fit` reads like timm's train loop: for each epoch, :meth:`Trainer.train_one_epoch`,
then :meth:`Trainer.evaluate`, then select and checkpoint (:meth:`Trainer.end_epoch`); reporting
(TensorBoard, tqdm, the NaN check) in :mod:`distill.train.logger`, checkpoints in :mod:`distill.train.checkpoints`.

Exact resume: every random draw of a step is a function of ``(seed, epoch, step)``. GPU habits: channels_last,
no host sync in the step loop, one persistent DataLoader, pinned memory, ``optim.precision`` autocast (fp16 with
a GradScaler; non-finite gradients: :mod:`distill.train.guard`). DDP: the global batch is split across ranks.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from timm.scheduler import CosineLRScheduler
from torch import Tensor

from distill.config import RobustSettings
from distill.data.view_policy import PolicyRender
from distill.errors import DistillError
from distill.evaluate import DomainEvaluator
from distill.records import RobustReport, RunSummary
from distill.robust.evaluate import evaluate_checkpoint
from distill.strategies import Batch, BatchSource
from distill.student.transforms import normalize
from distill.teacher.cache import PixelStore, find_pixel_store
from distill.train.build import TrainSetup
from distill.train.checkpoints import Checkpoints, student_of
from distill.train.data import EpochBatches, TrainImages, all_view_items, epoch_keys, label_table, pool_keys, to_unit
from distill.train.ema import make_ema
from distill.train.epoch_stats import EpochTrainStats
from distill.train.guard import GradGuard
from distill.train.logger import RunLog
from distill.train.optim import build_optimizer
from distill.train.selection import make_selection
from distill.train.summary import best_holds, epoch_line, metrics_row, selected_run_summary, top1_mean, write_metrics
from distill.utils.flops import count_flops, count_params
from distill.utils.loaders import WorkerLoader
from distill.utils.runtime import (
    autocast,
    barrier,
    broadcast_flag,
    distributed,
    seed_step,
    step_seed,
    take_main_buffers,
)
from distill.utils.state import restore_optimizer, rng_state, set_rng_state
from distill.utils.transfer import to_device

_STEP_DELAY = float(os.environ.get("DISTILL_TRAIN_STEP_DELAY", "0") or 0)


class Trainer:
    """Optimizes ``setup.strategy`` on the training domains; evaluates, selects and checkpoints each epoch."""

    def __init__(self, setup: TrainSetup):
        self.setup, optim = setup, setup.cfg.optim
        self.run_dir = Path(setup.cfg.run.out)
        self.checkpoints = Checkpoints(self.run_dir)
        self.strategy = setup.strategy
        # channels_last on CUDA (tensor-core convs: ~3x the student's step rate on an H100); CPU keeps NCHW,
        # where oneDNN chooses its own layouts and the bitwise resume guarantee was established
        self.memory_format = torch.channels_last if setup.device.type == "cuda" else torch.contiguous_format
        setup.strategy.to(memory_format=self.memory_format)  # type: ignore[call-overload]  # stub lacks memory_format
        self.model = distributed(setup.strategy, setup.dist, setup.device)
        self.optimizer = build_optimizer(setup.strategy, optim, setup.device.type == "cuda")  # timm's no-decay rule
        # optim.ema_decay: the EMA student is evaluated, selected, saved as best; metrics.csv's train_loss and lr
        self.ema, self.epoch_stats = make_ema(optim, setup.strategy), EpochTrainStats(setup.device)
        self.train_domains = setup.target if setup.strategy.needs.target_data else setup.source
        self.train_samples = setup.dataset.select(self.train_domains, "train")
        self.steps_per_epoch = len(self.train_samples) // optim.batch_size
        if self.steps_per_epoch == 0:  # what to set: the largest batch the images fill, divisible by the ranks
            fits = len(self.train_samples) // setup.dist.world * setup.dist.world
            todo = (f"set optim.batch_size <= {fits} (--set optim.batch_size={fits})" if fits else
                    f"fewer than one image for each of the {setup.dist.world} DDP ranks")
            raise DistillError(f"domains {self.train_domains}: {len(self.train_samples)} training images is fewer than "
                               f"optim.batch_size={optim.batch_size}: {todo}")
        if optim.batch_size % setup.dist.world:
            raise DistillError(f"optim.batch_size={optim.batch_size}: not divisible by {setup.dist.world} DDP ranks")
        # data.unlabeled: each step appends pool_per_step pool images to its batch_size labelled ones
        self.pool = setup.unlabeled
        self.pool_per_step = round(setup.cfg.data.unlabeled_ratio * optim.batch_size) if self.pool else 0
        if self.pool_per_step % setup.dist.world:
            raise DistillError(f"data.unlabeled_ratio={setup.cfg.data.unlabeled_ratio}: {self.pool_per_step} pool "
                               f"images per step must be divisible by the {setup.dist.world} DDP ranks")
        # the one label gate: labels (and mixed partners' labels) are read here by sample index; withheld
        # classes read -1 and the others their student column
        self.columns = setup.columns  # withheld classes: labels -> -1, teacher logits -> the student's columns
        self.label_of = self.columns.labels(
            label_table(setup.dataset.index_count, [] if setup.strategy.needs.target_data else self.train_samples))
        self._mixing = bool(setup.caches) and setup.caches[0].manifest.views.policy is not None
        self.scheduler = CosineLRScheduler(self.optimizer, t_initial=optim.epochs * self.steps_per_epoch,
                                           lr_min=optim.min_lr,
                                           warmup_t=int(optim.warmup_epochs * self.steps_per_epoch),
                                           warmup_lr_init=optim.lr * 0.01, warmup_prefix=True, t_in_epochs=False)
        self.domain_index = {d: i for i, d in enumerate(setup.dataset.domains + list(setup.dataset.folders))}
        self.evaluator, self.val_evaluator = self._evaluators()
        ctx = self.strategy.ctx
        ctx.iterate_train = self.clean_batches
        ctx.num_train, ctx.num_samples = len(self.train_samples), setup.dataset.index_count
        # per-sample targets: files the step checkpoints hard-link (rank 0's), on disk on every rank (the others' unnamed)
        ctx.state_dir, ctx.state_linked = str(self.checkpoints.dir), setup.dist.main
        self.history: list[dict[str, Any]] = []  # one metrics row per epoch
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        spec = student_of(self.strategy).spec  # normalization constants: created once, on the device
        self._mean = torch.tensor(spec.mean, device=setup.device).view(1, 3, 1, 1)
        self._std = torch.tensor(spec.std, device=setup.device).view(1, 3, 1, 1)
        # fp16 autocast needs loss scaling (bf16 has fp32's range and does not); CUDA only (check_precision)
        self.scaler = torch.amp.GradScaler(setup.device.type, enabled=optim.precision == "fp16")
        self.guard = GradGuard(self.strategy, setup.device, optim, self.steps_per_epoch)  # non-finite gradients
        self.epoch_batches = EpochBatches(self.train_samples + self.pool, setup.views.count)
        self._train_loader: WorkerLoader | None = None
        self._pixels: tuple[PixelStore | None, str] | None = None
        # run.select_on: what checkpoints/best is selected on (and the pool's agreement evaluator, when on it)
        self.selection, self.agreement = make_selection(setup, self.strategy, self.pixel_store)

    # -------------------------------------------------------------- construction
    def _evaluators(self) -> tuple[DomainEvaluator, DomainEvaluator | None]:
        """(test split of the evaluated domains, source validation split): streamed, split over the ranks."""
        setup = self.setup
        preprocess = student_of(self.strategy).preprocess()
        # a target-data (source-free) strategy never reads a source-domain image, not even to evaluate
        source_free = setup.strategy.needs.target_data
        opts: dict[str, Any] = dict(workers=setup.cfg.run.workers, class_columns=setup.class_columns, dist=setup.dist)
        test = DomainEvaluator(setup.dataset, setup.target if source_free else setup.source + setup.target,
                               preprocess, **opts)
        # model selection: the source domains' validation split (never test; none for a source-free run)
        val = None if source_free else DomainEvaluator(setup.dataset, setup.source, preprocess, split="val", **opts)
        return test, val

    # -------------------------------------------------------------- state
    def _state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "rng": rng_state(), "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "global_step": self.global_step, **self.selection.state(), "history": self.history,
                "grad_guard": self.guard.state_dict(), **self.epoch_stats.state(), **self.ema.state(),
                **({"grad_scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else {})}

    def resume(self) -> bool:
        """Continue from the newest complete checkpoint, if any; returns whether there was one."""
        path = self.checkpoints.last()
        if path is None:
            return False
        state = Checkpoints.load(path)
        self.strategy.load_state_dict(state["strategy"])
        restore_optimizer(self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.epoch_stats.restore(state)
        self.ema.restore(state)
        if self.scaler.is_enabled() and "grad_scaler" in state:
            self.scaler.load_state_dict(state["grad_scaler"])
        self.epoch, self.step_in_epoch, self.global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        self.selection.restore(state)
        self.history = state["history"]
        self.guard.load_state_dict(state.get("grad_guard", {}))
        if self.setup.dist.main:
            print(f"resumed from {path} (epoch {self.epoch + 1}, step {self.step_in_epoch}/{self.steps_per_epoch})")
        return True

    def save(self) -> None:
        """Checkpoint the current position (rank 0 writes; every rank waits)."""
        if self.setup.dist.main:
            self.checkpoints.save(self.global_step, self.strategy, self._state())
        barrier(self.setup.dist)

    # -------------------------------------------------------------- batches
    def loader(self, epoch: int, skip_steps: int) -> WorkerLoader:
        """This rank's batches of ``epoch`` from step ``skip_steps`` on, through one persistent DataLoader: the
        epoch's order and view choice (:func:`epoch_keys`, a function of ``run.seed`` and epoch) travel as the batch
        sampler's keys, so workers live for the whole run and a resumed run sees the batches an uninterrupted one sees.
        """
        setup, batch_size = self.setup, self.setup.cfg.optim.batch_size
        if self._train_loader is None:
            self._train_loader = self._make_train_loader()
        # order and view choice: the run's draw (run.seed); the cache's views seed fixes only how a view looks
        items = epoch_keys(len(self.train_samples), setup.views.count, setup.cfg.run.seed, epoch)
        items = items[: self.steps_per_epoch * batch_size]
        pool = pool_keys(len(self.pool), setup.views.count, setup.cfg.run.seed, epoch,
                         self.steps_per_epoch * self.pool_per_step, offset=len(self.train_samples))
        self.epoch_batches.plan(items, range(skip_steps, self.steps_per_epoch), batch_size, setup.dist.rank,
                                setup.dist.world, pool, self.pool_per_step)
        return self._train_loader

    def _make_train_loader(self) -> WorkerLoader:
        setup = self.setup
        pairs = all_view_items(self.train_samples + self.pool, self.domain_index, setup.views.count,
                               setup.caches[0] if setup.caches else None)
        spec = student_of(self.strategy).spec
        images = TrainImages(setup.dataset, pairs, spec.input_size, spec.interpolation, setup.views.augment,
                             setup.views.seed, pixels=self.pixel_store()[0], uint8=True,
                             render=PolicyRender.for_manifest(setup.caches[0].manifest) if setup.caches else None)
        workers = setup.cfg.run.workers
        # an explicit generator: an iterator's base seed must not come from (and advance) the
        # global RNG, or a resumed run would be one draw behind the uninterrupted one
        return WorkerLoader(images, batch_sampler=self.epoch_batches, num_workers=workers,
                            pin_memory=setup.device.type == "cuda", persistent_workers=workers > 0,
                            prefetch_factor=4 if workers else None,
                            generator=torch.Generator().manual_seed(step_seed(setup.cfg.run.seed, 0, -2, setup.dist.rank)))

    def pixel_store(self) -> tuple[PixelStore | None, str]:
        """(the first cache's pixel store at the student's size, or None; the line saying which), found once."""
        if self._pixels is None:
            spec, caches = student_of(self.strategy).spec, self.setup.caches
            self._pixels = find_pixel_store(caches[0] if caches else None, spec.input_size, spec.interpolation)
        return self._pixels

    def make_batch(self, pixels: Tensor, loader_labels: Tensor, domain: Tensor, index: Tensor, view: Tensor) -> Batch:
        """A loader batch -> the strategy's :class:`Batch` on the device, with the cached rows it needs. Labels come
        from the one gate, ``self.label_of[index]`` (-1 on pool rows), never from the loader's ``loader_labels``
        (the folders' labels, pool images' included)."""
        setup, dev = self.setup, self.setup.device
        # pinned (to_device: the cache's rows too) + non_blocking: the copy overlaps the last step; uint8 to floats there
        pixels = to_device(pixels, dev)
        if pixels.dtype == torch.uint8:
            pixels = to_unit(pixels)
        pixels = pixels.contiguous(memory_format=self.memory_format)
        needs = self.strategy.needs
        batch = Batch(pixels=pixels, images=normalize(pixels, self._mean, self._std),
                      labels=to_device(self.label_of[index], dev) if needs.labels else None,
                      domain=to_device(domain, dev), sample_index=to_device(index, dev),
                      host_index=index, view=to_device(view, dev))
        rows = None
        if setup.caches and (needs.cached_logits or needs.cached_features):
            rows = [c.lookup(index, view) for c in setup.caches]
            batch.teacher_logits_all = [self.columns.logits(to_device(r["logits"], dev)) for r in rows]
            batch.teacher_logits = batch.teacher_logits_all[0]  # the first cache's rows, copied once
            batch.teacher_emb = to_device(rows[0]["image_emb"], dev) if "image_emb" in rows[0] else None
        if needs.labels and self._mixing:  # a mixed view's partner label, through the same gate
            row = rows[0] if rows else setup.caches[0].lookup(index, view)
            partner = row["mix_partner"]
            partner_labels = self.label_of[partner.clamp(min=0)].masked_fill(partner < 0, -1)
            batch.partner_labels, batch.mix_lam = to_device(partner_labels, dev), to_device(row["mix_lam"], dev)
        # what one strategy alone reads (adv_cached's adversarial views), it builds itself
        batch.extras = self.strategy.batch_extras(BatchSource(
            sample_index=index, view=view, epoch=self.epoch, seed=setup.cfg.run.seed, device=dev,
            memory_format=self.memory_format, caches=setup.caches, adversarial=setup.adversarial,
            student_logits=self.columns.logits))
        return batch

    def clean_batches(self, batch_size: int = 256) -> Iterator[Batch]:
        """View-0 batches over all training images in dataset order (for epoch hooks)."""
        setup = self.setup
        items = all_view_items(self.train_samples, self.domain_index, 1)  # view 0, drawn from the seed
        spec = student_of(self.strategy).spec
        images = TrainImages(setup.dataset, items, spec.input_size, spec.interpolation, setup.views.augment,
                             setup.views.seed, uint8=True)
        gen = torch.Generator().manual_seed(setup.cfg.run.seed)  # leaves the global RNG alone
        loader = WorkerLoader(images, batch_size=batch_size, num_workers=setup.cfg.run.workers, generator=gen,
                              pin_memory=setup.device.type == "cuda")  # pinned on torch's thread, as in training
        for pixels, labels, domain, index, view in loader:
            yield self.make_batch(pixels, labels, domain, index, view)

    # -------------------------------------------------------------- the loop
    def fit(self) -> RunSummary | None:
        """Train to ``optim.epochs``; returns the RunSummary (rank 0; None elsewhere), also in RUN/summary.json."""
        setup = self.setup
        log = RunLog(self.run_dir, setup.device, setup.dist.main, setup.cfg.run.progress, self.global_step)
        started = time.time()
        while self.epoch < setup.cfg.optim.epochs:
            epoch = self.epoch
            self.train_one_epoch(epoch, log)
            row = self.evaluate(epoch)
            # the epoch counter moves first so that a checkpoint taken here resumes at the next epoch
            self.epoch, self.step_in_epoch = epoch + 1, 0
            self.end_epoch(epoch, row, log)
        log.close()
        self._train_loader = None  # its persistent workers stop now: left to exit, torch joined each for 5 s
        summary = None
        if setup.dist.main:
            robust = self.robust_eval(setup.cfg.robust) if setup.cfg.robust is not None else None
            summary = self.summary(time.time() - started, robust)
            summary.write(self.run_dir)
        barrier(setup.dist)
        return summary

    def train_one_epoch(self, epoch: int, log: RunLog) -> None:
        """The steps of ``epoch`` from ``self.step_in_epoch`` on (checkpointing every ``run.save_every``)."""
        setup, run = self.setup, self.setup.cfg.run
        seed_step(run.seed, epoch, -1, setup.dist.rank)  # the epoch hook's draws (if any)
        self.strategy.on_epoch_start(epoch)
        self.model.train()
        self.epoch_stats.start(self.step_in_epoch)
        loader = self.loader(epoch, self.step_in_epoch)
        log.start_epoch(epoch, setup.cfg.optim.epochs, self.steps_per_epoch, self.step_in_epoch)
        # no host sync in this loop: loss, parts and accuracy stay on the device until a log point
        # (every run.log_every steps, before a checkpoint, at the epoch's end), which also catches a NaN
        for pixels, labels, domain, index, view in loader:
            # every random draw of the step is a function of (seed, epoch, step): resume replays it
            reseed = lambda: seed_step(run.seed, epoch, self.step_in_epoch, setup.dist.rank)  # noqa: E731
            reseed()
            self.train_step(self.make_batch(pixels, labels, domain, index, view), log, reseed)
            save = run.save_every and self.global_step % run.save_every == 0 and self.step_in_epoch < self.steps_per_epoch
            if self.global_step % run.log_every == 0 or save:
                log.flush()  # raises on a non-finite loss, before any checkpoint could keep it
            log.advance()
            if save:
                self.save()
            time.sleep(_STEP_DELAY)  # test hook (0 unless set): slow steps so a test can kill -9 mid-run
        log.end_epoch()

    def _backward(self, batch: Batch, precision: str) -> dict[str, Tensor]:
        """Forward under ``precision``'s autocast and backward (loss scaling, unscaled grads when clipping)."""
        with autocast(self.setup.device, precision):  # losses cast to fp32 themselves (strategies)
            out = self.model(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out["loss"]).backward()
        if self.setup.cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
        return out

    def train_step(self, batch: Batch, log: RunLog, reseed: Callable[[], None] = lambda: None) -> None:
        """One optimizer step on ``batch`` (autocast, loss scaling, the non-finite guard, clipping, LR schedule);
        ``reseed`` replays the step's random draws for a retry (:class:`GradGuard`)."""
        optim = self.setup.cfg.optim
        def recompute(precision: str) -> dict[str, Tensor]:  # a retry: the step's draws replayed, then redone
            reseed()
            return self._backward(batch, precision)
        out, take = self.guard.after_backward(self.epoch, self.step_in_epoch, recompute,
                                              self._backward(batch, optim.precision))
        log.step(self.step_in_epoch, self.global_step + 1, out, batch.labels, self.optimizer.param_groups[0]["lr"],
                 skipped=not take)
        if take:  # a skipped step: no update, no EMA step, not in the epoch's train_loss
            self.epoch_stats.add(out["loss"], self.optimizer.param_groups[0]["lr"])
            if optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.strategy.parameters(), optim.grad_clip)
            self.scaler.step(self.optimizer)
            self.ema.update(self.strategy, self.global_step + 1)
        self.scaler.update()
        self.global_step += 1
        self.step_in_epoch += 1
        self.scheduler.step_update(num_updates=self.global_step)

    @torch.no_grad()
    def evaluate(self, epoch: int) -> dict[str, Any]:
        """Epoch ``epoch``'s metrics row (rank 0; ``{}`` elsewhere): test accuracy of every evaluated domain (reported,
        never selected on), source validation accuracy and, with ``run.select_on: teacher_agreement``, the pool's
        agreement with the teacher (selected on), as fractions. Every rank scores its share of the splits
        (:class:`DomainEvaluator`, :class:`PoolAgreement`) with rank 0's buffers (BN statistics: what it saves)."""
        self.strategy.eval()
        cfg, predict, device = self.setup.cfg, self.strategy.predict, self.setup.device
        with self.ema.evaluated(self.strategy):  # the EMA student, when optim.ema_decay is set
            take_main_buffers(self.strategy.student)
            val = self.val_evaluator.accuracy(predict, device) if self.val_evaluator is not None else {}
            agreement = self.agreement(predict, device) if self.agreement is not None else None
            value = self.selection.value(top1_mean(val), agreement)
            test_now = broadcast_flag(self.selection.wants_test(epoch, cfg.optim.epochs, cfg.run.eval_every, value),
                                      self.setup.dist)
            test = self.evaluator.accuracy(predict, device) if test_now else {}
        self.strategy.train()
        if not self.setup.dist.main:
            return {}
        return metrics_row(epoch, test, val, self.setup.source, self.setup.target, self.epoch_stats.row(), agreement)

    def end_epoch(self, epoch: int, row: dict[str, Any], log: RunLog) -> None:
        """Record the row, keep the best checkpoint (selected on ``run.select_on``), print, checkpoint."""
        setup = self.setup
        if setup.dist.main:
            self.history.append(row)
            write_metrics(self.run_dir, self.history)
            log.evaluation(row, self.global_step)
            improved = self.selection.update(row)
            if improved:
                what = best_holds(row, self.selection.key, setup.cfg.strategy.name, self.strategy.needs.target_data)
                with self.ema.evaluated(self.strategy):  # what best/ holds, in words, in its student.json
                    self.checkpoints.save_best(self.strategy, {**setup.provenance, "epoch": epoch + 1, "metrics": row,
                                                               "selected_on": what})
            print(epoch_line(row, improved, self.selection.key, self.strategy.needs.target_data))
        self.save()

    # -------------------------------------------------------------- the end
    def robust_eval(self, settings: RobustSettings) -> RobustReport:
        """PGD / corruption accuracy of the best checkpoint on the evaluated domains (config ``robust``),
        also in ``RUN/robust.json``."""
        report = evaluate_checkpoint(self.checkpoints.best, self.setup.dataset, self.evaluator.domains, settings,
                                     self.setup.device, class_columns=self.setup.class_columns)
        report.write(self.run_dir)
        return report

    def summary(self, seconds: float, robust: RobustReport | None = None) -> RunSummary:
        """The run's :class:`RunSummary`: the selected epoch's accuracies and the run's facts."""
        setup = self.setup
        selected = self.selection.best_epoch(self.history)
        row = next(r for r in reversed(self.history) if r["epoch"] == selected)
        student = student_of(self.strategy)
        return selected_run_summary(
            row, self.selection.key, strategy=setup.cfg.strategy.name, strategy_options=setup.cfg.strategy.options(),
            student=student.spec.arch, teacher=setup.provenance.get("teacher"), source_domains=setup.source,
            target_domains=setup.target, trained_on=self.train_domains, teacher_zero_shot=setup.teacher_zero_shot,
            params=count_params(student), flops=count_flops(student, student.spec.input_size),
            teacher_flops=setup.provenance.get("teacher_flops"), checkpoint=str(self.checkpoints.best.absolute()),
            train_seconds_this_session=round(seconds, 1), nonfinite_steps=self.guard.counts(),
            skipped_images=[{"path": p, "reason": why} for p, why in setup.skipped], robust=robust,
            unlabeled=setup.pool_record, teachers=setup.provenance.get("teachers"),
            withheld_classes=setup.withheld_classes or None, ema_decay=self.ema.decay)
