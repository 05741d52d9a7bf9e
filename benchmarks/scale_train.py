"""Training memory at two data set sizes: does `distill train` grow with N?

Makes synthetic 32 px PNG domain folders of N images, builds a teacher cache of them with the demo
teacher (random weights), runs `distill train` (kd, 1 epoch, DataLoader workers) in a subprocess and
samples the anonymous memory (``RssAnon`` in ``/proc/PID/status``: heap, not the page cache or mapped
files) of the main process and of each of its children (the DataLoader workers, training's and
evaluation's) every ``--interval`` seconds. Printed per size: the peak of the main process (the median
of ``--repeats`` runs, and their range), its peak before training's first log line (the setup: ``build``
and ``Trainer``, what the run holds before its first step) and the largest peak of any worker; then the
growth between the two sizes per cached row (rows = images x views). Targets (issue "Scale"): main <= 200 B
per row, workers ~0, evaluation adds nothing that grows with the split.

The measured commands run with glibc's mmap threshold fixed at 128 kB (``--mmap-threshold``): freed
transient buffers are then returned, and a peak is what was live. With glibc's default the heap keeps some
of them, a different amount each run (peaks of one size spread over 31 MB, more than the whole growth
2,000 -> 20,000 images). ``--trace`` writes every sample with the log's line count (phase markers).

Only subprocesses import distill: run from a checkout (with ``PYTHONPATH=$PWD``, or its venv's
editable install) and that checkout is what is measured.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/scale_train.py --sizes 2000,10000
    PYTHONPATH=$PWD .venv/bin/python benchmarks/scale_train.py --sizes 10000,100000   # the issue's sizes

"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

DOMAINS, CLASSES = ("d0", "d1", "d2"), ("c0", "c1", "c2", "c3")


def make_pngs(root: Path, n: int, size: int = 32, seed: int = 0) -> None:
    """``n`` ``size`` px RGB PNGs spread over 3 domains x 4 classes (class = a tint, plus noise)."""
    rng = np.random.default_rng(seed)
    tints = rng.uniform(40, 215, (len(CLASSES), 3)).astype(np.float32)
    for d in DOMAINS:
        for c in CLASSES:
            (root / d / c).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        d, c = i % len(DOMAINS), (i // len(DOMAINS)) % len(CLASSES)
        img = np.clip(tints[c] + rng.normal(0, 40, (size, size, 3)) + 30 * d, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / DOMAINS[d] / CLASSES[c] / f"{i:07d}.png", compress_level=1)


def rss_anon(pid: int) -> int | None:
    """Anonymous resident bytes of ``pid`` (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def private_dirty(pid: int) -> int | None:
    """Bytes only ``pid`` holds (``Private_Dirty`` of ``/proc/PID/smaps_rollup``): for a forked worker, what
    it allocated or copied, not the parent's pages it still shares (RssAnon counts those too)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Private_Dirty:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's list)."""
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


#: glibc's initial mmap threshold, fixed: a block of 128 kB or more is mapped on its own and unmapped when freed,
#: so a peak counts what was live, not the freed transients (training's and evaluation's batch-size buffers) the
#: heap happened to keep. With glibc's default (a threshold that rises to the largest block freed) the main
#: process's peak varied by 31 MB between three runs of one size (2,000 images; benchmarks/RESULTS.md).
MMAP_THRESHOLD = 128 * 1024


@dataclass
class MemoryPeaks:
    """Peak anonymous memory of one command: its main process and each child seen."""

    main: int = 0                                           # peak RssAnon of the main process
    workers: dict[int, int] = field(default_factory=dict)  # child pid -> its peak RssAnon
    workers_private: dict[int, int] = field(default_factory=dict)  # child pid -> its peak Private_Dirty
    # child pid -> lines in the log when it was first seen. A child seen before the first line is a start-up
    # helper, not a loader worker: a subprocess started with vfork shares the parent's memory until it execs, and
    # its smaps then report the parent's pages (a `distill train` at 100k: one such child read 223 MB)
    first_line: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    # one (seconds, main RssAnon, children alive, lines in the log so far) per sample of the main process
    samples: list[tuple[float, int, int, int]] = field(default_factory=list)

    @property
    def before_log(self) -> int:
        """Peak RssAnon of the main process before the log's first line (`distill train`: its setup, ``build``
        and ``Trainer``, which end with the "training ..." line). 0 without a log line."""
        return max((b for _, b, _, n in self.samples if n == 0), default=0) if any(
            n for *_, n in self.samples) else 0

    def before_children(self, k: int) -> int:
        """Peak RssAnon of the main process before it first had more than ``k`` children (`distill train` with
        ``k`` workers: its setup and training epoch, before the first evaluation starts its own workers)."""
        first = next((i for i, (_, _, kids, _) in enumerate(self.samples) if kids > k), len(self.samples))
        return max((b for _, b, _, _ in self.samples[:first]), default=0)

    def _loader_workers(self) -> list[int]:
        """The children in the order first seen, less the start-up helpers (seen before the log's first line;
        every child when nothing was logged)."""
        logged = any(self.first_line.values())
        return [pid for pid in self.workers_private if not logged or self.first_line.get(pid, 0) > 0]

    @property
    def worker_max(self) -> int:
        return max((self.workers.get(pid, 0) for pid in self._loader_workers()), default=0)

    @property
    def worker_private_max(self) -> int:
        return max((self.workers_private[pid] for pid in self._loader_workers()), default=0)

    def private_max(self, first: int, training: bool) -> int:
        """Peak Private_Dirty of the first ``first`` loader workers seen (``training``: `distill train`'s persistent
        loader workers, forked before evaluation's) or of the later ones (evaluation's workers)."""
        pids = self._loader_workers()
        return max((self.workers_private[p] for p in (pids[:first] if training else pids[first:])), default=0)


def log_lines(log: Path | None) -> int:
    """Lines written to ``log`` so far (0 without one)."""
    try:
        return log.read_bytes().count(b"\n") if log else 0
    except FileNotFoundError:
        return 0


def run_sampled(cmd: list[str], env: dict[str, str] | None = None, interval: float = 0.05,
                log: Path | None = None) -> MemoryPeaks:
    """Run ``cmd``; sample RssAnon of it and of its children until it exits. Raises on a non-zero exit.

    Every sample of the main process is kept in ``MemoryPeaks.samples`` with the number of children alive and
    of lines in ``log`` (phase markers: run the command unbuffered, ``PYTHONUNBUFFERED=1``)."""
    peaks = MemoryPeaks()
    out = open(log, "w") if log else subprocess.DEVNULL
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    done = threading.Event()

    def sample():
        while not done.is_set():
            now, kids, lines = rss_anon(proc.pid) or 0, children(proc.pid), log_lines(log)
            peaks.main = max(peaks.main, now)
            if now:
                peaks.samples.append((time.perf_counter() - t0, now, len(kids), lines))
            for child in kids:
                peaks.first_line.setdefault(child, lines)
                peaks.workers[child] = max(peaks.workers.get(child, 0), rss_anon(child) or 0)
                peaks.workers_private[child] = max(peaks.workers_private.get(child, 0), private_dirty(child) or 0)
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    rc = proc.wait()
    done.set()
    thread.join()
    peaks.seconds = time.perf_counter() - t0
    if log:
        out.close()
    if rc:
        tail = log.read_text()[-2000:] if log else ""
        raise RuntimeError(f"{' '.join(cmd)} exited with {rc}\n{tail}")
    return peaks


def median(values: list[int]) -> int:
    """The median (the lower middle one of an even count)."""
    return sorted(values)[(len(values) - 1) // 2]


def write_trace(peaks: MemoryPeaks, path: Path) -> None:
    """``peaks.samples`` as a tab-separated table: seconds, main RssAnon MB, children, log lines."""
    path.write_text("seconds\tmain_mb\tchildren\tlog_lines\n" + "".join(
        f"{t:.3f}\t{b / 2**20:.2f}\t{k}\t{n}\n" for t, b, k, n in peaks.samples))


@dataclass
class SizeResult:
    images: int
    rows: int             # cached rows: images x views
    train_images: int     # images in the source domains' train split (what one epoch sees)
    build: MemoryPeaks
    train: MemoryPeaks    # the training run whose main-process peak is the median of the repeats
    repeats: list[MemoryPeaks] = field(default_factory=list)  # every training run, in order
    workers: int = 0      # the training loader's workers (more children: evaluation has started)

    @property
    def setup_median(self) -> int:
        """Median over the repeats of the main process's peak before training's first log line."""
        return median([r.before_log for r in self.repeats or [self.train]])

    @property
    def train_private(self) -> int:
        """Peak Private_Dirty of training's loader workers (of the run kept: ``train``)."""
        return self.train.private_max(self.workers, training=True)

    @property
    def eval_private(self) -> int:
        """Peak Private_Dirty of evaluation's loader workers (of the run kept: ``train``)."""
        return self.train.private_max(self.workers, training=False)

    @property
    def epoch_median(self) -> int:
        """Median over the repeats of the main process's peak before evaluation (setup and the training epoch)."""
        return median([r.before_children(self.workers) for r in self.repeats or [self.train]])


def measure_train_memory(sizes: list[int], workdir: Path, *, views: int = 2, workers: int = 2,
                         batch_size: int = 64, student: str = "test_resnet", teacher: str = "distill-demo-rn",
                         python: str = sys.executable, env: dict[str, str] | None = None,
                         interval: float = 0.05, repeats: int = 1, trace: bool = False,
                         mmap_threshold: int | None = MMAP_THRESHOLD, progress=print) -> list[SizeResult]:
    """For each size N: N PNGs, a cache (``views`` rows an image), then `distill train` kd 1 epoch
    ``repeats`` times (the run with the median main-process peak is kept), each a sampled subprocess of
    ``python -m distill`` (``env``: default this process's environment). ``trace`` writes each training
    run's samples to ``WORKDIR/train-N-R.trace.tsv``. ``mmap_threshold`` (bytes) fixes glibc's
    ``MALLOC_MMAP_THRESHOLD_`` in the subprocesses (None: glibc's default, a threshold that rises to the
    largest block freed, so later blocks that size stay in the heap after they are freed)."""
    env = dict(os.environ if env is None else env)
    if mmap_threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    env["PYTHONUNBUFFERED"] = "1"  # log lines land when printed: they mark the phases (setup ends at the first)
    results = []
    for n in sizes:
        root, cache, run = workdir / f"data-{n}", workdir / f"cache-{n}", workdir / f"run-{n}"
        t0 = time.perf_counter()
        if not root.exists():
            make_pngs(root, n)
        progress(f"  {n} images written ({time.perf_counter() - t0:.0f} s)")
        build = run_sampled([python, "-m", "distill", "cache", "build", "--data", str(root), "--out", str(cache),
                             "--arch", teacher, "--pretrained", "none", "--views", str(views), "--batch-size", "256",
                             "--workers", str(workers), "--no-progress", "--device", "cpu"],
                            env, interval, workdir / f"build-{n}.log")
        progress(f"  cache built ({build.seconds:.0f} s)")
        cfg = workdir / f"train-{n}.yaml"
        cfg.write_text(
            f"data: {{root: {root}, source: [d0, d1], target: [d2], test_fraction: 0.3}}\n"
            f"cache: {cache}\n"
            f"student: {{arch: {student}, input_size: 32}}\n"
            f"strategy: {{name: kd}}\n"
            f"optim: {{epochs: 1, batch_size: {batch_size}, lr: 0.01, warmup_epochs: 0}}\n"
            f"run: {{out: {run}, workers: {workers}, progress: false, device: cpu, log_every: 1000}}\n")
        runs = []
        for r in range(repeats):
            shutil.rmtree(run, ignore_errors=True)  # a finished run dir would only be resumed (nothing to train)
            runs.append(run_sampled([python, "-m", "distill", "train", "-c", str(cfg)], env, interval,
                                    workdir / f"train-{n}.log"))
            if trace:
                write_trace(runs[-1], workdir / f"train-{n}-{r}.trace.tsv")
            progress(f"  trained 1 epoch ({runs[-1].seconds:.0f} s): main peak {runs[-1].main / 2**20:.1f} MB, workers' "
                     f"private peak {runs[-1].private_max(workers, True) / 2**20:.1f} MB (training's) / "
                     f"{runs[-1].private_max(workers, False) / 2**20:.1f} MB (evaluation's)")
        train = next(r for r in runs if r.main == median([r.main for r in runs]))
        line = next((ln for ln in (workdir / f"train-{n}.log").read_text().splitlines()
                     if ln.startswith("training ")), "")
        train_images = int(line.split("(")[1].split()[0]) if "(" in line else -1
        results.append(SizeResult(n, n * views, train_images, build, train, runs, workers))
    return results


def private_split(r: SizeResult) -> str:
    """"TRAIN/EVAL": the peak Private_Dirty (MB) of training's loader workers and of evaluation's."""
    return f"{r.train_private / 2**20:.1f}/{r.eval_private / 2**20:.1f}"


def report(results: list[SizeResult]) -> str:
    """The table: peaks per size, then growth per cached row between the first and last size.

    "train main MB" is the median over the repeats of the main process's peak (their range beside it);
    "setup main MB" the median of its peak before training's first log line (``build`` and ``Trainer``: what
    the run holds before its first step), "to eval MB" of its peak before evaluation starts (setup and the
    training epoch: batches of one size at every N). The whole run's peak falls in evaluation, batches of
    256 images per domain: a size whose splits hold fewer images per domain has smaller batches there."""
    mb = lambda b: f"{b / 2**20:8.1f}"  # noqa: E731
    lines = [f"{'images':>8} {'rows':>8} {'train imgs':>10} | {'build main MB':>13} {'build wkr MB':>12} | "
             f"{'setup main MB':>13} {'to eval MB':>10} {'train main MB':>13} {'(min-max of runs)':>17} "
             f"{'train wkr MB':>12} {'wkr private MB':>14} {'(train/eval wkrs)':>17} {'children':>8} {'train s':>7}"]
    for r in results:
        peaks = [x.main for x in r.repeats or [r.train]]
        spread = f"{min(peaks) / 2**20:.1f}-{max(peaks) / 2**20:.1f} ({len(peaks)})"
        lines.append(f"{r.images:8d} {r.rows:8d} {r.train_images:10d} | {mb(r.build.main):>13} "
                     f"{mb(r.build.worker_max):>12} | {mb(r.setup_median):>13} {mb(r.epoch_median):>10} "
                     f"{mb(r.train.main):>13} {spread:>17} {mb(r.train.worker_max):>12} "
                     f"{mb(r.train.worker_private_max):>14} {private_split(r):>17} {len(r.train.workers):8d} "
                     f"{r.train.seconds:7.0f}")
    if len(results) >= 2:
        a, b = results[0], results[-1]
        rows = b.rows - a.rows
        lines.append(f"growth per cached row ({a.images} -> {b.images} images): "
                     f"train main setup {(b.setup_median - a.setup_median) / rows:+.0f} B, "
                     f"to eval {(b.epoch_median - a.epoch_median) / rows:+.0f} B, "
                     f"peak {(b.train.main - a.train.main) / rows:+.0f} B (medians), "
                     f"train worker (max) {(b.train.worker_max - a.train.worker_max) / rows:+.0f} B "
                     f"(private {(b.train.worker_private_max - a.train.worker_private_max) / rows:+.0f} B: training's "
                     f"workers {(b.train_private - a.train_private) / rows:+.0f} B, evaluation's "
                     f"{(b.eval_private - a.eval_private) / rows:+.0f} B), "
                     f"build main {(b.build.main - a.build.main) / rows:+.0f} B")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="2000,10000", help="image counts, comma-separated (the issue: 10000,100000)")
    p.add_argument("--views", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (cache build and training)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--student", default="test_resnet")
    p.add_argument("--interval", type=float, default=0.05, help="seconds between memory samples")
    p.add_argument("--repeats", type=int, default=1,
                   help="training runs per size; the table shows the one with the median main-process peak")
    p.add_argument("--trace", action="store_true",
                   help="write every sample of each training run to WORKDIR/train-N-R.trace.tsv")
    p.add_argument("--mmap-threshold", type=int, default=MMAP_THRESHOLD,
                   help="MALLOC_MMAP_THRESHOLD_ for the measured commands, bytes (default: %(default)s; 0: glibc's "
                        "default, whose peaks vary by tens of MB from run to run)")
    p.add_argument("--workdir", default=None, help="keep the images, caches and logs here (default: a temp dir)")
    args = p.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="scale_train_"))
    workdir.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"distill train kd, 1 epoch, {args.views} views, {args.workers} workers, student {args.student} at 32 px, "
          f"{os.cpu_count()} cores; sizes {sizes}; {args.repeats} run(s) each; MALLOC_MMAP_THRESHOLD_="
          f"{args.mmap_threshold or 'glibc default'}; work in {workdir}")
    try:
        results = measure_train_memory(sizes, workdir, views=args.views, workers=args.workers,
                                       batch_size=args.batch_size, student=args.student, interval=args.interval,
                                       repeats=args.repeats, trace=args.trace,
                                       mmap_threshold=args.mmap_threshold or None)
        print(report(results))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

__all__ = ["MemoryPeaks", "SizeResult", "make_pngs", "measure_train_memory", "private_dirty", "report", "run_sampled",
           "rss_anon"]
