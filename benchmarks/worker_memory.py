"""What `distill train`'s DataLoader workers hold alone, at one data set size (issue 20: "the workers' not at all").

In one process, as `distill train` does (kd, the config of ``benchmarks/scale_train.py``, on the images and
cache that script leaves in ``--workdir``: ``data-N``, ``cache-N``): ``build(cfg)``, ``Trainer(setup)``, then
batches from the training loader (its persistent workers; no optimizer step), then from a loader over the test
split built as ``DomainEvaluator`` builds its own (forked while training's workers live, as in a run). After
``--batches`` / ``--eval-batches`` batches pulled, each worker's ``Private_Dirty`` (``/proc/PID/smaps_rollup``:
pages that worker alone maps) is printed, with how much of it lies inside the N-sized numpy buffers the
workers read (the training items, the epoch plan, the sample columns, the split's index; from
``/proc/PID/pagemap``: present and exclusively mapped). Compare two sizes at the same batch counts: what
grows with N shows as a difference at equal batches; what grows with the images a worker has processed shows
down the rows of one size.

``--gc-freeze``: call ``gc.freeze()`` just before each loader forks (the CPython-documented remedy for
copy-on-write in forked children), to compare.

    PYTHONPATH=$PWD nice -n 19 python benchmarks/worker_memory.py --workdir /tmp/workers100k --size 10000
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_train import MMAP_THRESHOLD, private_dirty, rss_anon  # noqa: E402


def private_in(pid: int, spans: list[tuple[int, int]]) -> int | None:
    """Bytes of ``spans`` (address ranges) that ``pid`` maps exclusively (``/proc/PID/pagemap``: present and
    exclusively mapped, i.e. written or copied by it alone; needs root for the exclusive bit on some kernels)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    try:
        with open(f"/proc/{pid}/pagemap", "rb") as f:
            for a, b in spans:
                first, last = a // page, (b - 1) // page
                f.seek(first * 8)
                data = f.read((last - first + 1) * 8)
                for k in range(0, len(data), 8):
                    e = int.from_bytes(data[k:k + 8], "little")
                    if e >> 63 & 1 and e >> 56 & 1:
                        total += page
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return total


def private_shared_memory(pid: int) -> int | None:
    """``Private_Dirty`` of ``pid``'s shared-memory mappings (torch's ``/dev/shm`` files and memfds: the batches a
    worker has made and the loader has not yet mapped); None once it is gone."""
    total, shm = 0, False
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                head = line.split(maxsplit=5)
                if "-" in head[0] and not head[0].endswith(":"):
                    name = head[5] if len(head) > 5 else ""
                    shm = name.startswith(("/dev/shm/", "/memfd:")) or "torch_" in name
                elif shm and head[0] == "Private_Dirty:":
                    total += int(head[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return total


def array_spans(*holders) -> list[tuple[int, int]]:
    """Address ranges of the numpy buffers (64 kB or more) held as attributes of ``holders``."""
    import numpy as np
    spans = []
    for h in holders:
        for v in (vars(h) if hasattr(h, "__dict__") else {}).values():
            if isinstance(v, np.ndarray) and v.nbytes >= 65536:
                a = v.__array_interface__["data"][0]
                spans.append((a, a + v.nbytes))
    return spans


def worker_pids(loader_iter) -> list[int]:
    """The pids of a DataLoader iterator's worker processes."""
    return [w.pid for w in loader_iter._workers]  # noqa: SLF001


def at_milestones(loader, milestones: list[int], marks, label: str, out: list[str]) -> None:
    """Pull batches from ``loader``; at each milestone (batches pulled) append a line: every worker's
    Private_Dirty (MB) and its pages inside ``marks`` (kB)."""
    it = iter(loader)
    pids, pulled = worker_pids(it), 0
    for m in sorted({min(m, len(loader)) for m in milestones}):  # a loader's workers exit after its last batch
        while pulled < m:
            next(it)
            pulled += 1
        cells = []
        for pid in pids:
            priv, arr, shm = private_dirty(pid), private_in(pid, marks), private_shared_memory(pid)
            cells.append(f"{(priv or 0) / 2**20:6.1f} MB ({(arr or 0) // 1024} kB in arrays, "
                         f"{(shm or 0) / 2**20:.1f} MB shared-memory batches)")
        out.append(f"{label:5} {pulled:7d} batches | " + " | ".join(cells))
    del it


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, help="scale_train.py's workdir (data-N, cache-N)")
    p.add_argument("--size", type=int, default=10000, help="images (data-SIZE, cache-SIZE)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batches", default="8,32,65,200,657",
                   help="training batches (64 images) pulled at which each worker is read, comma-separated")
    p.add_argument("--eval-batches", default="1,4,16,64,1000",
                   help="evaluation batches (256 images of the test split) at which each worker is read")
    p.add_argument("--eval-split", default="test", choices=["test", "train", "val"],
                   help="the split evaluation's loader reads (train: a longer pass, every domain's train split)")
    p.add_argument("--gc-freeze", action="store_true", help="gc.freeze() before each loader forks")
    args = p.parse_args()
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != str(MMAP_THRESHOLD):  # as scale_train.py runs `distill train`
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD)))

    from torch.utils.data import DataLoader

    from distill.config import TrainConfig
    from distill.evaluate import DomainEvaluator, _DomainBatches
    from distill.train.build import build
    from distill.train.trainer import Trainer

    workdir = Path(args.workdir)
    root, cache = workdir / f"data-{args.size}", workdir / f"cache-{args.size}"
    if not root.exists() or not cache.exists():
        raise SystemExit(f"{root} or {cache} not found: run benchmarks/scale_train.py --sizes {args.size} "
                         f"--workdir {workdir} first")
    cfg = TrainConfig.model_validate({
        "data": {"root": str(root), "source": ["d0", "d1"], "target": ["d2"], "test_fraction": 0.3},
        "cache": str(cache), "student": {"arch": "test_resnet", "input_size": 32}, "strategy": {"name": "kd"},
        "optim": {"epochs": 1, "batch_size": 64, "lr": 0.01, "warmup_epochs": 0},
        "run": {"out": str(workdir / f"wm-run-{args.size}"), "workers": args.workers, "progress": False,
                "device": "cpu", "log_every": 1000}})
    t0 = time.perf_counter()
    trainer = Trainer(build(cfg))  # what `distill train` holds when its loader forks
    setup_s = time.perf_counter() - t0
    loader, test = trainer.loader(0, 0), trainer.evaluator
    if args.eval_split != "test":
        test = DomainEvaluator(trainer.setup.dataset, test.domains, trainer.strategy.student.preprocess(),
                               split=args.eval_split, workers=args.workers)
    # the N-sized numpy buffers a worker reads: the training items, the epoch plan, the sample columns, the split
    marks = array_spans(loader.dataset.items, trainer.epoch_batches, trainer.setup.dataset.samples.columns,
                        test._images)  # noqa: SLF001
    lines: list[str] = []
    if args.gc_freeze:
        gc.freeze()
    at_milestones(loader, [int(b) for b in args.batches.split(",")], marks, "train", lines)
    # evaluation's loader as DomainEvaluator._tally builds it (forked now, training's workers still alive)
    shares = [test.share(d) for d in test.present]
    if args.gc_freeze:
        gc.freeze()
    at_milestones(DataLoader(test._images, batch_sampler=_DomainBatches(shares, test.batch_size),  # noqa: SLF001
                             num_workers=args.workers), [int(b) for b in args.eval_batches.split(",")], marks,
                  "eval", lines)
    print(f"size {args.size} images: {len(trainer.train_samples)} training ({trainer.steps_per_epoch} steps), "
          f"{args.eval_split} split {len(test)}; {args.workers} workers; gc.freeze {args.gc_freeze}; setup {setup_s:.0f} s, "
          f"total {time.perf_counter() - t0:.0f} s; main RssAnon {rss_anon(os.getpid()) / 2**20:.1f} MB; "
          f"{len(marks)} N-sized arrays, {sum(b - a for a, b in marks) / 2**20:.1f} MB")
    print("loader  pulled        | Private_Dirty of each worker (its pages inside those arrays)")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
