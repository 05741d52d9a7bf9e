"""One home for the runtime: which device, which process group, which seed, which precision.

Every stage (train, adapt, eval, cache build, teacher bootstrap/eval, bench) resolves its
device here, so a device bug has one place to be fixed (the first GPU run crashed in one of
four copies: ``torch.cuda.set_device(torch.device("cuda"))`` raises "Expected a torch.device
with a specified index").

Rules of :func:`resolve_device`:

- ``auto`` is ``cuda`` when CUDA is available, else ``cpu``.
- ``cuda`` without an index becomes ``cuda:LOCAL_RANK`` under torchrun (``LOCAL_RANK`` set)
  and ``cuda:<current device>`` in a single process; ``cuda:N`` is kept. The result always
  carries an index, and it is made the current device (``torch.cuda.set_device``), before any
  NCCL process group is created.
- More torchrun ranks on a node than visible GPUs (``LOCAL_RANK >= device_count``) is one
  line saying so, instead of CUDA's "invalid device ordinal" from deep inside NCCL.

Precision (:func:`check_precision`): ``fp32``, ``bf16`` (autocast) and ``fp16`` (autocast +
``torch.amp.GradScaler`` when training). fp16 needs a CUDA device: on a CPU it is emulated,
slow, and has no grad scaler, so it is refused with one line (use bf16 or fp32 there).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from distill.errors import DistillError

T = TypeVar("T")

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------- device
def _torchrun_local_rank() -> int | None:
    """``LOCAL_RANK`` when launched by torchrun (or any launcher that sets it), else None."""
    value = os.environ.get("LOCAL_RANK")
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise DistillError(f"environment LOCAL_RANK={value!r} is not an integer") from None


def resolve_device(name: str | torch.device | None = "auto", *, what: str = "device",
                   set_current: bool = True) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` (| any torch device) -> an indexed torch.device.

    Args:
        name: the device the user asked for (None means ``auto``).
        what: how the setting is called where the user wrote it (``run.device``, ``--device``),
            named in errors.
        set_current: make a CUDA result the current device (``torch.cuda.set_device``) so that
            NCCL, ``.cuda()`` and cuBLAS handles of this process use it.

    Raises:
        DistillError: not a device name, CUDA asked for but unavailable, or an index beyond
            the visible GPUs (under torchrun: more ranks than GPUs).
    """
    text = "auto" if name is None else str(name).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise DistillError(f"{what} '{name}': not a device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type != "cuda":
        return dev
    if not torch.cuda.is_available():
        raise DistillError(f"{what} '{name}': CUDA is not available here (torch {torch.__version__}, "
                           f"CUDA build {torch.version.cuda or 'none'}); use cpu")
    count = torch.cuda.device_count()
    local = _torchrun_local_rank()
    index = dev.index
    if index is None:
        index = local if local is not None else torch.cuda.current_device()
        if local is not None and index >= count:
            raise DistillError(f"{what} '{name}': this is torchrun rank LOCAL_RANK={local}, but only {count} GPU(s) "
                               f"are visible: start at most {count} process(es) per node "
                               f"(torchrun --nproc_per_node={count}) or set CUDA_VISIBLE_DEVICES")
    if index >= count:
        raise DistillError(f"{what} '{name}': cuda:{index} does not exist, only {count} GPU(s) are visible "
                           f"(cuda:0..cuda:{count - 1})")
    dev = torch.device("cuda", index)
    if set_current:
        torch.cuda.set_device(dev)
    return dev


# ---------------------------------------------------------------------------- process group
@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 when there is none)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


#: Environment variable: the process group's timeout in seconds (how long a collective, a barrier
#: included, waits for the slowest rank before the job fails).
TIMEOUT_ENV = "DISTILL_DIST_TIMEOUT"
#: Its default: 6 hours. torch's own (10-30 minutes, by backend and version) is shorter than a stage
#: one rank may run alone while the others wait (rank 0 writing a checkpoint or a summary, the robust
#: evaluation of the best checkpoint, a large data set's listing).
DEFAULT_TIMEOUT = _dt.timedelta(hours=6)


def dist_timeout() -> _dt.timedelta:
    """The process-group timeout: ``DISTILL_DIST_TIMEOUT`` seconds when set, else :data:`DEFAULT_TIMEOUT`."""
    value = os.environ.get(TIMEOUT_ENV, "").strip()
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise DistillError(f"environment {TIMEOUT_ENV}={value!r}: the process-group timeout must be a positive "
                           "number of seconds")
    return _dt.timedelta(seconds=seconds)


def init_distributed(device: torch.device, timeout: _dt.timedelta | None = None) -> Dist:
    """Join the torchrun process group (NCCL on CUDA, gloo otherwise); a lone process gets ``Dist()``.

    Call :func:`resolve_device` first: NCCL binds each rank to the current CUDA device. ``timeout``
    None: :func:`dist_timeout` (``DISTILL_DIST_TIMEOUT`` seconds, default 6 hours).
    """
    if not launched_by_torchrun() or not dist.is_available():
        return Dist()
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return Dist()
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=timeout if timeout is not None else dist_timeout())
    return Dist(dist.get_rank(), dist.get_world_size(), _torchrun_local_rank() or 0)


@contextlib.contextmanager
def process_group(device: torch.device, timeout: _dt.timedelta | None = None) -> Iterator[Dist]:
    """:func:`init_distributed` for the duration; destroys the group only if it created it."""
    existed = dist.is_available() and dist.is_initialized()
    d = init_distributed(device, timeout)
    try:
        yield d
    finally:
        if d.world > 1 and not existed and dist.is_initialized():
            dist.destroy_process_group()


def barrier(d: Dist) -> None:
    """Wait for every rank (no-op in a single process). NCCL gets this rank's device explicitly."""
    if d.world <= 1:
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """``t`` summed over the ranks (``t`` itself in a single process). Under NCCL the sum runs on this
    rank's GPU; gloo sums CPU tensors. Returns a tensor on ``t``'s device."""
    if d.world <= 1:
        return t
    nccl = dist.get_backend() == "nccl"
    buf = t.to(torch.device("cuda", torch.cuda.current_device()) if nccl else "cpu").clone()
    dist.all_reduce(buf)
    return buf.to(t.device)


def group_size() -> int:
    """The initialized process group's size; 1 without one."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def same_on_every_rank(digest: int, what: str, inputs: str = "their inputs") -> None:
    """Refuse, on every rank, work that the DDP ranks must compute bit for bit alike and did not: ``digest`` (this
    rank's hash of it, 0 <= digest < 2**62) is compared across the process group (one all-reduce of two int64: the
    largest digest and the largest negated one). No-op without a group. ``inputs``: what each rank computes it from
    (named in the message, with the software and the device kind, as what can differ).

    A collective: a rank that fails before it (an error of its own) leaves the others waiting here until that rank's
    exit ends the wait (gloo's peers see the connection close; torchrun stops the other workers) or, at the latest,
    the process group's timeout (:func:`dist_timeout`), as at any of DDP's own collectives."""
    if group_size() <= 1:
        return
    nccl = dist.get_backend() == "nccl"
    t = torch.tensor([digest, -digest], dtype=torch.long,
                     device=torch.device("cuda", torch.cuda.current_device()) if nccl else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    high, low = int(t[0]), -int(t[1])
    if high != low:
        kind = "GPU model" if nccl else "kind of CPU"
        raise DistillError(f"{what}: the DDP ranks computed different values (digests {low:x}..{high:x}, rank "
                           f"{dist.get_rank()}'s {digest:x}); each rank computes it alone and they must agree bit for "
                           f"bit, which needs {inputs} to be the same on every rank, and every rank to run the same "
                           f"software on the same {kind}")


def take_main_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers of ``module`` (BatchNorm's running statistics) copied into every rank's, in place; no-op
    without a process group. DDP does this at the start of each forward; work done between forwards on each rank
    (an epoch hook's pass in eval mode) calls it first, since without SyncBatchNorm (gloo) the ranks' statistics
    differ by their last local batches. The parameters are left alone: DDP keeps them equal."""
    if group_size() <= 1:
        return
    for buf in module.buffers():
        if buf.is_contiguous():
            dist.broadcast(buf, src=0)
        else:  # a channels_last buffer: through a contiguous copy
            flat = buf.contiguous()
            dist.broadcast(flat, src=0)
            buf.copy_(flat)


def broadcast_flag(flag: bool, d: Dist) -> bool:
    """Rank 0's ``flag`` on every rank (so that all of them take the same branch into a collective)."""
    if d.world <= 1:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.long)
    return bool(all_reduce_sum(t * int(d.main), d)[0])


def share_from_main(make: Callable[[], T], d: Dist) -> T:
    """``make()`` run on rank 0 only, its result sent to every rank (``broadcast_object_list``): work that is
    the same on every rank (listing a data set's files) done once. A :class:`DistillError` on rank 0 is
    raised on every rank (no rank is left waiting for an object that never comes)."""
    if d.world <= 1:
        return make()
    box: list[Any] = [None]
    if d.main:
        try:
            box[0] = ("ok", make())
        except DistillError as e:
            box[0] = ("error", str(e))
    dist.broadcast_object_list(box, src=0,
                               device=torch.device("cuda", torch.cuda.current_device())
                               if dist.get_backend() == "nccl" else None)
    kind, value = box[0]
    if kind == "error":
        raise DistillError(value)
    return value


# ---------------------------------------------------------------------------- seeding, determinism
def distributed(module: torch.nn.Module, d: Dist, device: torch.device) -> torch.nn.Module:
    """``module`` for this process: itself alone, DDP (+ SyncBatchNorm on GPU) under torchrun."""
    if d.world <= 1:
        return module
    if device.type == "cuda":
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (every CUDA device too)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def step_seed(seed: int, epoch: int, step: int, rank: int = 0) -> int:
    """A 63-bit seed that is a pure function of (run seed, epoch, step in epoch, rank)."""
    words = [seed, epoch, step + 2, rank]  # step -1 (epoch hook) and -2 (loader) stay non-negative
    return int(np.random.SeedSequence(words).generate_state(2, np.uint64)[0] >> np.uint64(1))


def seed_step(seed: int, epoch: int, step: int, rank: int = 0) -> None:
    """Reseed the global RNGs (python, numpy, torch CPU + every CUDA device) for one training step.

    Every random draw of a step (dropout, adv_cached's mask, adv_kd's PGD start) is then a
    function of (seed, epoch, step), so a resumed run draws exactly what an uninterrupted one did.
    """
    s = step_seed(seed, epoch, step, rank)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)  # seeds the CUDA generators too


def set_deterministic(enabled: bool = True) -> None:
    """Deterministic kernels: bitwise-repeatable on CPU; on CUDA wherever torch has a deterministic kernel.
    ``enabled=False`` (``run.deterministic: false``) changes nothing: cuDNN's autotuner stays off. On an
    H200 it gained nothing on the student's step (8,671 vs 8,670 img/s, mobilenetv3_large_100 bf16
    channels_last) and its one-off timing of every train and eval shape is the likeliest cause of the
    62 s first epoch of the one run that had it on (benchmarks/RESULTS.md, "First GPU run").

    Sets ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (unless already set: it must be in place before the
    first cuBLAS call) and cuDNN's deterministic mode. An op with no deterministic CUDA kernel
    warns ("... does not have a deterministic implementation") rather than fails, and then a
    CUDA resume is identical only within float tolerance (see README, "Resume on a GPU").
    """
    if not enabled:
        return
    deterministic_cublas()
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def deterministic_cublas() -> None:
    """cuBLAS workspace config that makes its results repeatable; only effective before the first cuBLAS call."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@contextlib.contextmanager
def preserved_global_state() -> Iterator[None]:
    """Leave the process as found: what a training run sets globally (:func:`set_deterministic`'s flags, the
    global RNGs :func:`seed_step` reseeds) is put back after it, on success and on error, so a caller of the Python
    API sees the same flags and draws the same random numbers as if it had not trained.

    Restored: torch's deterministic-algorithms flag and its warn_only, cuDNN's deterministic and benchmark flags,
    the Python, numpy and torch CPU generators, and the CUDA ones when CUDA was in use before the run (a CUDA the
    run initialized keeps the run's generator state: no public torch call puts one back as new). Environment
    variables stay: ``CUBLAS_WORKSPACE_CONFIG`` (:func:`deterministic_cublas`: it acts only before the first cuBLAS call) and
    what torch sets itself (``TORCHINDUCTOR_CACHE_DIR``).
    """
    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[2], flags[3]
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op CPU threads set to ``n`` while the block runs (None: left as they are), and put back after
    it, on error too: a command called in-process (``distill.cli.main``) or through the Python API leaves the
    caller's count as it found it."""
    before = torch.get_num_threads()
    try:
        if n is not None:
            torch.set_num_threads(n)
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------- precision
def check_precision(precision: str, device: torch.device, what: str = "precision") -> torch.dtype:
    """``fp32`` | ``bf16`` | ``fp16`` -> its dtype; fp16 off CUDA is refused (one line)."""
    if precision not in DTYPES:
        raise DistillError(f"{what} '{precision}': use one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise DistillError(f"{what} fp16 needs a CUDA GPU (on {device.type} it is emulated and has no grad scaler); "
                           "use bf16 or fp32 there")
    return DTYPES[precision]


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` for bf16/fp16, a no-op context for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def full_precision(like: torch.Tensor) -> torch.autocast:
    """Autocast off (fp32 matmuls) on ``like``'s device: for losses and normalizations under autocast."""
    return torch.autocast(like.device.type, enabled=False)


__all__ = ["DEFAULT_TIMEOUT", "DTYPES", "Dist", "PRECISIONS", "TIMEOUT_ENV", "all_reduce_sum", "autocast", "barrier",
           "broadcast_flag", "check_precision", "deterministic_cublas", "dist_timeout", "distributed", "full_precision",
           "init_distributed", "preserved_global_state", "share_from_main",
           "launched_by_torchrun", "process_group", "resolve_device", "seed_everything", "seed_step",
           "set_deterministic", "step_seed", "torch_threads"]
