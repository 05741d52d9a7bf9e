"""The training stage: source-domain images + cached teacher outputs -> a distilled student.

``train(cfg)`` builds objects from a validated :class:`~distill.config.TrainConfig`
(:func:`build`) and hands them to :class:`Trainer`, a short loop over objects. Modules:

- :mod:`~distill.train.build`: config -> objects (caches opened once, the teacher made once).
- :mod:`~distill.train.data`: epoch items, the image dataset, the persistent loader's batch plan.
- :mod:`~distill.train.pool`: the ``data.unlabeled`` pool (domains, and folders outside data.root) as samples.
- :mod:`~distill.train.trainer`: the loop (train one epoch -> evaluate -> select/checkpoint).
- :mod:`~distill.train.checkpoints`: step folders, the resume pointer, the selected student.
- :mod:`~distill.train.optim`: the optimizer, with timm's no-weight-decay rule for norms and biases.
- :mod:`~distill.train.ema`: ``optim.ema_decay``, an EMA of the student (timm's ModelEmaV3) evaluated and saved.
- :mod:`~distill.train.epoch_stats`: ``metrics.csv``'s per-epoch train loss and learning rate (resumable).
- :mod:`~distill.train.logger`: TensorBoard, tqdm, the NaN check.
- :mod:`~distill.train.summary`: metrics rows, the printed epoch line, ``metrics.csv``, RunSummary.
- :mod:`~distill.train.adapt`: source-free adaptation recipes (a checkpoint + target domains -> a config).

Guarantees:

- Exact resume. Each epoch's order (and each image's view) is a pure function of
  ``(run.seed, epoch)``, and every random draw of a step (dropout, adv_cached's mask, adv_kd's PGD
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
- Accuracies are fractions in ``metrics.csv`` and ``summary.json`` (:class:`~distill.records.RunSummary`);
  printed lines show percents.
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

from distill.train.build import TrainSetup, build, teacher_input_fn
from distill.train.checkpoints import Checkpoints
from distill.train.data import Item, TrainImages, epoch_items
from distill.train.run import train
from distill.train.trainer import Trainer

__all__ = ["Checkpoints", "Item", "TrainImages", "TrainSetup", "Trainer", "build", "epoch_items",
           "teacher_input_fn", "train"]
