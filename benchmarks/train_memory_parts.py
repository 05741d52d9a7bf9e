"""Where `distill train`'s main-process memory grows with N: the objects train builds, one stage at a time.

Runs, in this one process, what ``distill train`` runs before its first step on a folder and cache made
by ``benchmarks/scale_train.py`` (``WORKDIR/data-N``, ``WORKDIR/cache-N``): the listing, the
:class:`DomainFolder`, ``TeacherCache.open``, the rest of ``build`` (cache identity checks, the
fingerprint, student and strategy), the :class:`Trainer` (training samples, label gate, evaluators,
batch sampler), the training set's ``ItemTable`` and one epoch's plan. After each stage it prints the
process's ``RssAnon`` (anonymous memory: heap, not mapped files) and the stage's peak (sampled every
2 ms), in MB. Run it once per size and divide the differences by the difference in cached rows.

    PYTHONPATH=$PWD python benchmarks/train_memory_parts.py --workdir /tmp/rowmem --size 2000
    PYTHONPATH=$PWD python benchmarks/train_memory_parts.py --workdir /tmp/rowmem --size 20000
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_train import rss_anon  # noqa: E402


class Sampler:
    """RssAnon of this process now, and the peak since the last :meth:`mark`."""

    def __init__(self, interval: float = 0.002):
        import os
        self.pid, self.interval, self.peak = os.getpid(), interval, 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_anon(self.pid) or 0)
            time.sleep(self.interval)

    def mark(self) -> tuple[int, int]:
        gc.collect()
        now = rss_anon(self.pid) or 0
        peak, self.peak = max(self.peak, now), now
        return now, peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, help="a benchmarks/scale_train.py work folder")
    p.add_argument("--size", type=int, required=True, help="N: reads WORKDIR/data-N and WORKDIR/cache-N")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--mode", choices=("parts", "train"), default="parts")
    p.add_argument("--fit", action="store_true", help="train mode: also run the epoch (and its evaluation)")
    args = p.parse_args()
    work = Path(args.workdir)
    root, cache, run = work / f"data-{args.size}", work / f"cache-{args.size}", work / f"parts-run-{args.size}"
    sampler = Sampler()
    stages: list[tuple[str, int, int]] = []

    def stage(name: str) -> None:
        now, peak = sampler.mark()
        stages.append((name, now, peak))

    import torch  # noqa: F401

    from distill.config import load_train_config
    from distill.data.folder import DomainFolder, list_images
    from distill.teacher.cache import TeacherCache
    from distill.train.build import build
    from distill.train.trainer import Trainer
    stage("imports")
    cfg_path = work / f"parts-{args.size}.yaml"
    cfg_path.write_text(
        f"data: {{root: {root}, source: [d0, d1], target: [d2], test_fraction: 0.3}}\n"
        f"cache: {cache}\n"
        f"student: {{arch: test_resnet, input_size: 32}}\n"
        f"strategy: {{name: kd}}\n"
        f"optim: {{epochs: 1, batch_size: 64, lr: 0.01, warmup_epochs: 0}}\n"
        f"run: {{out: {run}, workers: {args.workers}, progress: false, device: cpu, log_every: 1000}}\n")
    cfg = load_train_config(cfg_path)
    if args.mode == "parts":  # each part on a fresh heap, in the order build makes them
        listing = list_images(root)
        stage("list_images")
        folder = DomainFolder(root, cfg.data.split_rule(), listing=listing)
        stage("DomainFolder (listing held)")
        del listing
        opened = TeacherCache.open(cache)
        stage("TeacherCache.open")
        folder.fingerprint()
        folder.fingerprint_inputs()
        stage("fingerprints")
        kept = folder.select(["d0", "d1"], "train")
        stage(f"select ({len(kept)} train samples)")
        print(json.dumps({"size": args.size, "rows": len(opened), "stages": stages}))
    else:  # what `distill train` runs: build, Trainer, the first epoch's plan (and with --fit the epoch)
        setup = build(cfg)
        stage("build(cfg)")
        trainer = Trainer(setup)
        stage("Trainer(setup)")
        trainer.loader(0, 0)
        stage("train ItemTable + epoch plan")
        if args.fit:
            import shutil
            shutil.rmtree(run, ignore_errors=True)
            step, seen = trainer.train_step, []

            def traced(*a, **k):  # RssAnon every 10 steps: does the loop itself grow?
                step(*a, **k)
                if len(seen) % 10 == 0:
                    print(f"  step {len(seen)}: RssAnon {(rss_anon(sampler.pid) or 0) / 2**20:.1f} MB", flush=True)
                seen.append(1)

            trainer.train_step = traced  # type: ignore[method-assign]
            trainer.fit()
            stage("fit (1 epoch, evaluation)")
        print(json.dumps({"size": args.size, "rows": len(setup.caches[0]), "stages": stages}))
    for name, now, peak in stages:
        print(f"{name:32s} now {now / 2**20:8.1f} MB  stage peak {peak / 2**20:8.1f} MB")


if __name__ == "__main__":
    main()
