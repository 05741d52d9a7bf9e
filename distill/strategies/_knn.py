"""Exact k nearest neighbours for the source-free refresh (``sfda``'s kNN smoothing).

Every query against every key by dot product (cosine on L2-normalized rows), in tiles, keeping a running top-k.

**Tie rule** (:func:`knn_indices`): the larger dot product first; of equal ones, the smaller key index first. It holds
whatever the tile sizes, so any tiling of the same dot products gives the same indices in the same order. ``topk``
alone does not keep it (which of equal values it returns is its own choice: on the CPU, tied keys 0, 7, 14, 21, 28
of 2,000 come back as 14, 7, 21, 28, 0), so a row where a value equal to the k-th was left out takes the first ones
in index order instead. With no exact ties (the usual case for float features) the indices are ``topk``'s.

**On the run's GPU** (:func:`plan`, :func:`neighbours`): the same computation in fixed tiles of :data:`ROWS` queries x
:data:`TILE` keys, in IEEE float32 (TF32 off, :func:`ieee_fp32`), indices back to the host per block of queries.

- Budget: what the driver reports free (``torch.cuda.mem_get_info``) less a headroom of max(2 GiB, 10 % of the card).
  Training's own memory (weights, optimizer state, what torch's allocator caches from the steps) is not free, so it is
  never touched; the headroom is for what allocates outside torch's cache (NCCL, cuBLAS workspaces, the CUDA context)
  and for fragmentation. The refresh runs between epochs and gives its memory back (``empty_cache``) before training
  resumes.
- Resident when the normalized keys (N x F x 4 bytes) fit the budget beside one tile's work (:data:`WORK_BYTES` a
  similarity): copied to the device once, then every query block is a slice of them.
- Else streamed: a block of queries, as many as fit the budget beside the work and one key tile, stays on the device
  while the keys come by in tiles; each key byte crosses PCIe once per query block, ``passes = ceil(N / block)``
  times, and each query byte once. Less than one tile's work and a block of :data:`ROWS` queries: the CPU (a warning).
- Deterministic on a given GPU: the matmul shapes and their row offsets are the same whatever the budget, resident or
  streamed, so the dot products are the same bits and the tie rule picks the same indices (resume stays exact on the
  same machine). Different from the CPU's by float32 rounding only (another summation order): a near-tie may fall
  otherwise, as between two kinds of CPU.
- Cost (an estimate: ``benchmarks/knn_refresh.py``'s ``KNN_TILE`` and ``KNN_ESTIMATE`` lines measure it; phase
  ``knn`` of ``benchmarks/gpu_check.sh``): the matmuls are 2 N^2 F FLOP, 2.6 PFLOP at N = 10^6 and F = 1,280 (a
  minute at ~50 TFLOP/s, what an H100 SXM's IEEE float32 may sustain of its 67 peak) and 256 PFLOP at 10^7: ~5,100 s,
  **~1.4 h per refresh** on one GPU (each DDP rank 1/world of it). Beside each matmul (4,096 x 16,384 x 1,280:
  172 GFLOP, ~3.4 ms) ``tile_top`` reads its 256 MiB of similarities a few times (topk, the tie check) at ~3 TB/s:
  a few tenths of a ms, assumed small. Bytes to the card: the keys, N F 4 = 51 GB at 10^7, once (resident) or
  ``passes`` times (streamed), each pass seconds over PCIe; back, N k 8 bytes of indices (0.4 GB).
- TF32 off: it rounds the inputs to 10 bits of mantissa, about 1e-3 on a cosine, enough to reorder many near
  neighbours at 10^6 images; distill's precision policy never turns TF32 on (torch's default "highest"), and the
  refresh keeps to it even if the process turned it on elsewhere.

**Under DDP** (:func:`share`, :func:`gather_share`): each rank finds the neighbours of a 1/world share of the rows
(whole blocks of ``rows``, so the tiles are a single process's) and the caller gathers what it made of them (the
labels), so every rank ends with the same labels, each computed once. A rank whose share is empty (fewer blocks than
ranks: on a CUDA run the blocks are :func:`share_unit`'s 4,096 rows) uploads no key and searches nothing, but joins
every collective (the plan's budget, the gather) in the same order as the others.

Not a strategy (the leading underscore keeps the registry from importing it as one).
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import Tensor

from distill.utils.runtime import group_size

ROWS = 4096  # queries per device matmul (multiples of 64: every block starts 256-byte aligned, whatever F)
TILE = 16384  # keys per device matmul
WORK_BYTES = 26  # device bytes per similarity of one matmul: its float32, topk's and the tie check's temporaries
HEADROOM_BYTES, HEADROOM_FRACTION = 2 << 30, 0.10


def knn_indices(queries: Tensor, keys: Tensor, k: int, chunk: int = 1024) -> Tensor:
    """Indices [B, k] of each query's ``k`` largest dot products with ``keys`` [N, F], largest first (ties: the
    smaller index first): ``(queries @ keys.T).topk(k).indices`` computed over ``chunk`` keys at a time."""
    best: tuple[Tensor, Tensor] | None = None
    for t in range(0, len(keys), chunk):
        best = merge_top(best, tile_top(queries @ keys[t:t + chunk].T, t, k), k)
    assert best is not None
    return best[1]


def tile_top(sim: Tensor, offset: int, k: int) -> tuple[Tensor, Tensor]:
    """(values, key indices) [B, min(k, b)] of the ``k`` best of each row of ``sim`` [B, b] (its columns: keys
    ``offset``, ``offset + 1``, ...), in the order of the tie rule."""
    kk = min(k, sim.shape[1])
    val, at = sim.topk(min(kk + 1, sim.shape[1]), dim=-1)  # one more: is the best left out equal to the k-th?
    if val.shape[1] > kk:
        short = val[:, kk] == val[:, kk - 1]  # a value equal to the k-th was left out
        val, at = val[:, :kk], at[:, :kk]
    else:
        short = torch.zeros(len(val), dtype=torch.bool, device=val.device)
    kth = val[:, -1:]
    if bool(short.any()):  # rare (exact ties at the boundary): those rows exactly, by comparisons
        rows = short.nonzero().squeeze(1)
        s, edge = sim[rows], kth[rows]
        greater, equal = s > edge, s == edge
        take = greater | (equal & (equal.cumsum(1) <= kk - greater.sum(1, keepdim=True)))
        fixed = take.nonzero()[:, 1].view(len(rows), kk)  # every value above the k-th, then the first equal ones
        at[rows], val[rows] = fixed, s.gather(1, fixed)
    return _ordered(val, at + offset)


def merge_top(best: tuple[Tensor, Tensor] | None, new: tuple[Tensor, Tensor], k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` best of two candidate sets (values, indices) [B, *] with distinct indices, by the tie rule."""
    if best is None:
        return new
    val, idx = _ordered(torch.cat([best[0], new[0]], 1), torch.cat([best[1], new[1]], 1))
    return val[:, :k], idx[:, :k]


def _ordered(val: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Each row sorted by the tie rule: value descending, then index ascending (two sorts, the second stable)."""
    val = val + 0.0  # -0.0 -> +0.0: equal as floats, so ordered by index (a sort may put -0.0 first)
    o = idx.argsort(dim=1)
    val, idx = val.gather(1, o), idx.gather(1, o)
    o = val.argsort(dim=1, descending=True, stable=True)
    return val.gather(1, o), idx.gather(1, o)


# ---------------------------------------------------------------------------- on a device
@dataclass(frozen=True)
class Plan:
    """How the neighbours of N rows are computed (:func:`plan`)."""

    device: torch.device
    rows: int  # queries per matmul
    tile: int  # keys per matmul
    block: int  # queries on the device at once, a multiple of ``rows`` (resident: N)
    resident: bool  # the keys stay where the queries are for the whole pass
    passes: int  # times each key byte crosses to the device: 0 on the CPU, 1 resident, ceil(N / block) streamed


def plan(n: int, width: int, k: int, device: torch.device, chunk: int = 1024, rows: int = ROWS,
         tile: int = TILE) -> Plan:
    """The plan for N keys of ``width`` floats on ``device``: on the CPU today's tiles of ``chunk``, on a GPU the
    budget rule of the module's docstring."""
    cpu = Plan(torch.device("cpu"), chunk, chunk, n, True, 0)
    if device.type == "cpu":
        return cpu
    # what torch's allocator caches from the training steps is free for this pass, but mem_get_info does not count
    # it: given back first, so the plan is the same after epochs that filled the cache as on a fresh start (resume)
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(device)
    headroom = max(HEADROOM_BYTES, int(HEADROOM_FRACTION * total))
    budget = _least_over_ranks(free - headroom, device)  # every DDP rank the same plan: the same device and bits
    row_bytes, best_bytes = 4 * width, 12 * k  # a key; a query's running top-k (float32 values, int64 indices)
    r, t = min(rows, n), min(tile, n)  # a small set's matmuls are smaller than a full tile
    work = r * t * WORK_BYTES + r * best_bytes * 4
    if n * row_bytes + work <= budget:
        return Plan(device, rows, tile, n, True, 1)
    # streamed: the queries' block, its running top-k, the work, and two key tiles (the next one arrives while the
    # last one is still referenced)
    block = (budget - work - 2 * t * row_bytes) // (row_bytes + best_bytes) // rows * rows
    if block < rows:
        need = work + 2 * t * row_bytes + rows * (row_bytes + best_bytes)
        if not dist.is_initialized() or dist.get_rank() == 0:
            warnings.warn(f"the kNN of the pseudo-label refresh runs on the CPU (O(N^2): hours at 10^6 images): one "
                          f"block needs {need / 2**30:.1f} GiB on {device}, which has {free / 2**30:.1f} GiB free "
                          f"beside a headroom of {headroom / 2**30:.1f} GiB (on every rank: the least); a smaller "
                          "optim.batch_size or student leaves it more", stacklevel=2)
        return cpu
    return Plan(device, rows, tile, block, False, math.ceil(n / block))


def _least_over_ranks(value: int, device: torch.device) -> int:
    """The smallest of every DDP rank's ``value`` (``value`` itself without a process group)."""
    if group_size() <= 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def upload(rows: Tensor, device: torch.device) -> Tensor:
    """``rows`` (host, maybe memory-mapped) on ``device``; on the CPU the same tensor (no copy)."""
    return rows.to(device)


def neighbours(keys: Tensor, k: int, p: Plan, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, Tensor]]:
    """(first row, [b, k] int64 on the host) for the query rows ``start``..``stop`` of ``keys`` [N, F] (on the
    host), each row's neighbours among all N keys by :func:`knn_indices`'s rule, ``p.rows`` queries at a time.

    ``start`` a multiple of ``p.rows``: the tiles are the same as in one pass over all rows, so the result is too.
    On a GPU its memory is given back at the end (``empty_cache``: for NCCL and the next training step). No rows
    (a DDP rank whose share is empty: fewer blocks than ranks): nothing uploaded, nothing searched. Nothing here is a
    collective, so such a rank still joins the caller's (the plan's, the gather's) in the same order as the others."""
    stop = len(keys) if stop is None else stop
    if start >= stop:
        return
    if p.resident:
        on = upload(keys, p.device)
        for s in range(start, stop, p.rows):
            with ieee_fp32(p.device):
                found = knn_indices(on[s:min(s + p.rows, stop)], on, k, p.tile).cpu()
            yield s, found
        del on
    else:
        for b in range(start, stop, p.block):
            queries = upload(keys[b:min(b + p.block, stop)], p.device)
            best: list[tuple[Tensor, Tensor] | None] = [None] * math.ceil(len(queries) / p.rows)
            with ieee_fp32(p.device):
                for t in range(0, len(keys), p.tile):
                    tile = upload(keys[t:t + p.tile], p.device)
                    for j, s in enumerate(range(0, len(queries), p.rows)):
                        best[j] = merge_top(best[j], tile_top(queries[s:s + p.rows] @ tile.T, t, k), k)
                del tile, queries
            found_all = [top[1].cpu() for top in best if top is not None]
            del best
            for j, found in enumerate(found_all):
                yield b + j * p.rows, found
    if p.device.type == "cuda":
        torch.cuda.empty_cache()


def share_of(n: int, rows: int, rank: int, world: int) -> tuple[int, int]:
    """Rank ``rank``'s rows (first, end) of N under DDP: the ceil(N / rows) blocks of ``rows`` split as evenly as
    ``world`` ranks allow, so every share starts on a block boundary (the tiles of a single process)."""
    blocks = math.ceil(n / rows)
    return min(n, rank * blocks // world * rows), min(n, (rank + 1) * blocks // world * rows)


def share_unit(device: torch.device, chunk: int) -> int:
    """The rows a DDP share is made of: the same on every rank whatever its :func:`plan` (resident, streamed, or the
    CPU where its card is too full), and a multiple of each plan's ``rows``, so every share starts on a block."""
    return math.lcm(ROWS, chunk) if device.type == "cuda" else chunk


def share(n: int, rows: int) -> tuple[int, int]:
    """This process's :func:`share_of` (all N rows without a process group)."""
    world = group_size()
    return (0, n) if world <= 1 else share_of(n, rows, dist.get_rank(), world)


def gather_share(part: Tensor, n: int, rows: int) -> Tensor:
    """Every rank's ``part`` (the rows of its :func:`share`, [m, ...] on the host), in row order on every rank:
    [N, ...] on the host (one all_gather, on the GPU under NCCL); ``part`` itself without a process group."""
    world = group_size()
    if world <= 1:
        return part
    bounds = [share_of(n, rows, r, world) for r in range(world)]
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    buf = torch.zeros((max(b - a for a, b in bounds), *part.shape[1:]), dtype=part.dtype, device=dev)
    buf[:len(part)] = part.to(dev)
    parts = [torch.empty_like(buf) for _ in range(world)]
    dist.all_gather(parts, buf)
    return torch.cat([q[:b - a] for q, (a, b) in zip(parts, bounds)]).cpu()


@contextlib.contextmanager
def ieee_fp32(device: torch.device) -> Iterator[None]:
    """CUDA float32 matmuls without TF32 inside, the process's setting put back after, through an API that leaves
    whatever the process reads readable. torch (>= 2.9) refuses to read one API's value after the other API wrote:
    writing ``allow_tf32`` after ``set_float32_matmul_precision("medium")`` made ``get_float32_matmul_precision()``
    raise (a later ``torch.compile`` failed), and writing ``fp32_precision`` makes ``allow_tf32`` unreadable. So:
    ``set_float32_matmul_precision`` where the global value can be read (no TF32 set, or set by it or by
    ``allow_tf32``: both stay readable after it), else (the per-backend ``fp32_precision`` was written) that one;
    ``allow_tf32`` on a torch without ``fp32_precision``. Nothing to do on the CPU."""
    if device.type != "cuda":
        yield
        return
    m = torch.backends.cuda.matmul
    if not hasattr(m, "fp32_precision"):  # torch < 2.9: one API
        legacy = m.allow_tf32
        m.allow_tf32 = False
        try:
            yield
        finally:
            m.allow_tf32 = legacy
        return
    try:
        saved: str | None = torch.get_float32_matmul_precision()
    except RuntimeError:  # the process wrote the per-backend API
        saved = None
    if saved == "highest" and m.fp32_precision in ("none", "ieee"):  # already IEEE: write nothing (review 4 L1:
        yield  # writing made CUDA's value "ieee" for good, deaf to a later torch.backends.fp32_precision)
        return
    if saved is None:  # keep to the per-backend API the process wrote
        backend = m.fp32_precision
        m.fp32_precision = "ieee"
        try:
            yield
        finally:
            m.fp32_precision = backend
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved)
