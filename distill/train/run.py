"""``train(cfg)``: a validated TrainConfig -> a trained run folder (config.yaml, checkpoints, metrics, summary)."""
from __future__ import annotations

import shlex
from pathlib import Path

from distill.config import TrainConfig, dump_config, load_yaml, validate
from distill.data.folder import DomainFolder
from distill.errors import DistillError
from distill.records import (
    CHECKPOINT_POINTER,
    CHECKPOINTS_DIR,
    RUN_CONFIG,
    RUN_SUMMARY,
    Record,
    RunData,
    RunLaunch,
    RunSummary,
    pct,
)
from distill.run_paths import stored_paths
from distill.teacher.cache import TeacherCache
from distill.train.build import build
from distill.train.checkpoints import Checkpoints
from distill.train.data_identity import check_same_data, check_same_launch
from distill.train.trainer import Trainer
from distill.utils.io import atomic_write_text, check_out_dir, make_out_dir
from distill.utils.launch import launched_nodes
from distill.utils.runtime import Dist, barrier, share_from_main


def train(cfg: TrainConfig, resume: bool = False, out_flag: str = "run.out", command: str = "train"
          ) -> RunSummary | None:
    """Train a student as ``cfg`` says (or continue the run in ``cfg.run.out`` with ``resume``, on as many ranks as
    the run started on: :func:`~distill.train.data_identity.check_same_launch`).

    ``out_flag`` is how the user named the run folder (``run.out``; ``distill adapt``'s ``--out``), and ``command``
    the ``distill`` command that continues it (``adapt``), for messages.

    Returns the run's summary (also in RUN/summary.json) on rank 0, None on the other ranks.
    """
    run_dir = check_out_dir(cfg.run.out, out_flag)
    saved = run_dir / RUN_CONFIG
    if resume:
        if not saved.is_file():
            raise DistillError(f"--resume {run_dir}: no {RUN_CONFIG} there (not a run directory)")
    elif (run_dir / CHECKPOINTS_DIR / CHECKPOINT_POINTER).is_file():
        raise DistillError(f"{run_dir} already holds a run: pass --resume {shlex.quote(str(run_dir))} to continue it "
                           f"(resume= in Python), or choose another {out_flag}")
    else:
        _check_writable(run_dir, out_flag)
    if not resume:
        cfg.data.check_new_run()
    # what the run trains on: compared with RUN/data.json on a resume as soon as the data and caches are open (rank
    # 0's work; every rank raises its refusal), else kept to write into the run folder below
    resuming, record = resume and Checkpoints(run_dir).last() is not None, []

    def on_data(dataset: DomainFolder, caches: list[TeacherCache], dist: Dist) -> None:
        def check() -> None:
            if resuming:
                check_same_launch(run_dir, dist.world, command)
            record.append(check_same_data(run_dir, dataset, caches, resuming))
        share_from_main(check, dist)

    setup = build(cfg, on_data, resume=resume)
    if setup.dist.main:
        make_out_dir(run_dir, out_flag)
        if not resume:
            # the split rule resolved from the cache, and every path absolute: resumable from any folder
            atomic_write_text(saved, dump_config(stored_paths(setup.cfg)))
        # before the other ranks start: where run.out is shared, their per-sample targets go in it (unnamed files)
        # from the first refresh on; they do not make it themselves (a node-local run.out: TMPDIR, RowFile.create)
        (run_dir / CHECKPOINTS_DIR).mkdir(exist_ok=True)
    # a write error: one line on every rank
    share_from_main(lambda: _write_record(record, run_dir, None if resuming else setup.dist.world), setup.dist)
    barrier(setup.dist)
    trainer = Trainer(setup)
    if resume and not trainer.resume() and setup.dist.main:  # interrupted before its first checkpoint
        print(f"{run_dir}: no checkpoint yet (interrupted before the first): training it from epoch 1")
    if setup.dist.main:
        zero_shot = "  ".join(f"{d} {pct(v)}" for d, v in setup.teacher_zero_shot.items())
        print(f"training '{cfg.strategy.name}' student {cfg.student.arch} on {trainer.train_domains} "
              f"({len(trainer.train_samples)} images, {trainer.steps_per_epoch} step{'s' if trainer.steps_per_epoch != 1 else ''}/epoch); "
              f"targets {setup.target}" + (f"; teacher zero-shot: {zero_shot}" if zero_shot else ""))
        print(trainer.pixel_store()[1])
    return trainer.fit()


def _write_record(record: list[RunData | None], run_dir: Path, world: int | None) -> None:
    """data.json (``record``'s, where there is one) and launch.json (``world`` ranks and torchrun's nodes, unless
    resumed from a checkpoint: the run's stays)."""
    records: list[Record] = [r for r in record if r is not None]
    records += [RunLaunch(world_size=world, nnodes=launched_nodes(world))] if world is not None else []
    for r in records:
        try:
            r.write(run_dir)
        except OSError as e:
            raise DistillError(f"{r.path_in(run_dir)}: cannot write it ({e.strerror or e})") from None


def _check_writable(run_dir: Path, out_flag: str = "run.out") -> None:
    """A new run goes into a missing or empty folder, or over a run of this tool that never reached its first
    checkpoint (its ``config.yaml`` loads): never over files of anything else (a user's metrics.csv, a cache)."""
    entries = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(".")) if run_dir.is_dir() else []
    if not entries:
        return
    saved = run_dir / RUN_CONFIG
    if saved.is_file():
        try:
            validate(TrainConfig, load_yaml(saved), str(saved))
        except DistillError:
            pass
        else:
            if (run_dir / RUN_SUMMARY).is_file():  # a finished run whose checkpoints were deleted: its results stay
                raise DistillError(f"{run_dir}: holds a finished run ({RUN_SUMMARY}) without its checkpoints; "
                                   f"choose an empty or new {out_flag}, or move that run away")
            return
    shown = ", ".join(entries[:4]) + (f", ... ({len(entries)} entries)" if len(entries) > 4 else "")
    raise DistillError(f"{run_dir}: directory is not empty and holds no training run ({shown}); "
                       f"choose an empty or new {out_flag}, or move those files away")
