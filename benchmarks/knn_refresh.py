"""Seconds of sfda's kNN refresh step (distill/strategies/_knn.py) on the run's device vs the CPU, by N.

Each epoch sfda smooths its pseudo-labels over each target image's k nearest neighbours in the student's feature
space: exact, O(N^2 F). This times the neighbour search (``_knn.neighbours`` over all N rows, as ``knn_labels`` runs
it) on synthetic features of the student's width (default F = 1,280, mobilenetv3_large_100's; 1,000 gaussian
clusters, unit rows), and prints:

- ``KNN <device> N=...``: seconds for each count, the plan (resident or streamed, key passes) and the rate;
- ``KNN cpu N=...``: the CPU path (tiles of 1,024, as on a CPU run) at ``--cpu-count``, and its N^2 extrapolation
  to each count (an hour-long CPU run is not waited for);
- ``KNN_STREAMED``: the streamed branch at ``--stream-count`` (a budget forced small: the keys cross several times)
  against the resident one: seconds, and whether the indices are identical (they must be: same tiles);
- ``KNN_REPEAT``: a second resident run's indices identical to the first's (deterministic on this device);
- ``KNN_AGREE``: at ``--cpu-count``, the device's neighbours and smoothed labels against the CPU's (float32 rounding
  of another summation order can reorder near ties; labels should agree almost everywhere);
- ``KNN_LABELS``: the whole ``knn_labels`` (normalize and spool the features, the kNN, the smoothing) at the
  smallest count;
- ``KNN_TILE``: one full tile (``--rows`` x ``--tile`` similarities) split in its parts: the matmul (its TFLOP/s)
  and ``tile_top`` (topk, the tie check: bound by memory bandwidth, not FLOPs), so the estimate's assumption that
  the matmul dominates can be checked;
- ``KNN_ESTIMATE``: a refresh at ``--estimate`` images (default 10^7) from the largest count's measured rate:
  2 N^2 F FLOP, the hours on one device (1/world of it per rank under DDP), this card's plan for it (resident or
  streamed, key passes) and the bytes that cross to the device (N F 4 per pass, the queries once more when
  streamed) and back (N k 8 of indices).

    PYTHONPATH=. python benchmarks/knn_refresh.py --device cuda --counts 100000,1000000 --cpu-count 20000 \\
        --stream-count 300000                                  # the GPU figures (benchmarks/gpu_check.sh, phase knn)
    PYTHONPATH=. python benchmarks/knn_refresh.py --device cpu --counts 3000 --cpu-count 2000 --stream-count 2000 \\
        --rows 128 --tile 512                                  # the device code path run on the CPU: proves the script

With ``--device cpu`` the "device" runs are the GPU code path (its plan, blocks of ``--rows`` x ``--tile``) executed
on the CPU, so the dry run exercises every branch; its seconds say nothing about a GPU.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
import warnings
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distill.strategies import _knn  # noqa: E402

GiB = 1 << 30


def features(n: int, width: int, device: torch.device, seed: int = 0, clusters: int = 1000) -> torch.Tensor:
    """[n, width] unit rows on the host: gaussian clusters (near neighbours, as a trained student's features)."""
    g = torch.Generator(device=device).manual_seed(seed)
    centres = torch.randn(clusters, width, generator=g, device=device)
    out = torch.empty(n, width)
    for s in range(0, n, 65536):
        m = min(65536, n - s)
        which = torch.randint(0, clusters, (m,), generator=g, device=device)
        x = centres[which] + 0.7 * torch.randn(m, width, generator=g, device=device)
        out[s:s + m] = F.normalize(x, dim=-1).cpu()
    return out


@contextlib.contextmanager
def free_bytes(free: int | None) -> Iterator[None]:
    """``torch.cuda.mem_get_info`` reporting ``free`` bytes (None: the card's own)."""
    real = torch.cuda.mem_get_info
    if free is not None:
        total = real()[1] if torch.cuda.is_available() else 80 * GiB
        torch.cuda.mem_get_info = lambda device=None: (free, total)  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.cuda.mem_get_info = real  # type: ignore[assignment]


def device_plan(n: int, width: int, k: int, device: torch.device, rows: int, tile: int,
                budget: int | None = None) -> _knn.Plan:
    """The GPU's plan for n keys (``budget``: bytes over the headroom, to force streaming); with a CPU ``device`` the
    same plan run on the CPU."""
    cuda = torch.device("cuda", torch.cuda.current_device()) if device.type == "cuda" else torch.device("cuda", 0)
    free = None
    if budget is not None or device.type != "cuda":
        total = torch.cuda.mem_get_info()[1] if device.type == "cuda" else 80 * GiB
        free = max(_knn.HEADROOM_BYTES, int(_knn.HEADROOM_FRACTION * total)) + (budget if budget is not None
                                                                                  else 64 * GiB)
    with free_bytes(free):
        p = _knn.plan(n, width, k, cuda, rows=rows, tile=tile)
    return p if device.type == "cuda" else dataclasses.replace(p, device=torch.device("cpu"))


def timed(f: torch.Tensor, k: int, p: _knn.Plan) -> tuple[float, torch.Tensor]:
    if p.device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    found = torch.cat([idx for _, idx in _knn.neighbours(f, k, p)])
    return time.perf_counter() - t, found


def describe(p: _knn.Plan) -> str:
    if p.device.type == "cpu" and p.passes == 0:
        return f"cpu tiles {p.rows}"
    return (f"{'resident' if p.resident else f'streamed, block {p.block:,}'}, key passes {p.passes}, "
            f"tiles {p.rows} x {p.tile}")


def tile_parts(width: int, k: int, rows: int, tile: int, device: torch.device, repeats: int = 5) -> str:
    """The ``KNN_TILE`` line: seconds of one tile's matmul and of its ``tile_top``, the medians of ``repeats``."""
    g = torch.Generator(device=device).manual_seed(9)
    q = F.normalize(torch.randn(rows, width, generator=g, device=device), dim=-1)
    keys = F.normalize(torch.randn(tile, width, generator=g, device=device), dim=-1)

    def median_s(f) -> float:
        times = []
        for _ in range(repeats + 1):  # the first: warm-up (cuBLAS heuristics, the allocator)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            f()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        return sorted(times[1:])[repeats // 2]

    with _knn.ieee_fp32(device):
        sim = q @ keys.T
        mm = median_s(lambda: q @ keys.T)
        top = median_s(lambda: _knn.tile_top(sim, 0, k))
    return (f"KNN_TILE {rows} x {tile} x F={width} on {device.type}: matmul {1e3 * mm:.2f} ms "
            f"({2 * rows * tile * width / mm / 1e12:.2f} TFLOP/s), tile_top {1e3 * top:.2f} ms "
            f"({100 * top / (mm + top):.0f} % of the two; reads {rows * tile * 4 / 2**20:.1f} MiB of similarities)")


def estimate(n: int, width: int, k: int, rate: float, measured_at: int, device: torch.device, rows: int,
             tile: int) -> str:
    """The ``KNN_ESTIMATE`` line: a refresh at ``n`` images at ``rate`` FLOP/s (measured at ``measured_at``)."""
    flop = 2 * n * n * width
    s = flop / rate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a card too small for a block: the plan says "cpu"
        p = device_plan(n, width, k, device, rows, tile)
    keys = n * width * 4
    if p.passes == 0:
        moved = "none (the CPU: the card has no room for a block)"
    else:
        up = keys * p.passes + (0 if p.resident else keys)
        moved = f"{up / 1e9:,.0f} GB to the device ({p.passes} x the keys' {keys / 1e9:,.1f} GB" + \
                ("" if p.resident else " + the queries once") + f"), {n * k * 8 / 1e9:.2f} GB of indices back"
    return (f"KNN_ESTIMATE N={n:,} F={width}: 2 N^2 F = {flop / 1e15:,.1f} PFLOP; at the N={measured_at:,} rate "
            f"({rate / 1e12:.2f} TFLOP/s) {s:,.0f} s = {s / 3600:.2f} h per refresh on one {device.type} device "
            f"(under DDP each rank 1/world of it); plan here: {describe(p)}; bytes: {moved}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--counts", default="100000,1000000")
    ap.add_argument("--cpu-count", type=int, default=20000)
    ap.add_argument("--stream-count", type=int, default=300000)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--classes", type=int, default=1000, help="width of the smoothed probabilities (KNN_AGREE)")
    ap.add_argument("--rows", type=int, default=_knn.ROWS)
    ap.add_argument("--tile", type=int, default=_knn.TILE)
    ap.add_argument("--estimate", type=int, default=10**7, help="images of the KNN_ESTIMATE line")
    a = ap.parse_args()
    dev = torch.device(a.device)
    if dev.type == "cuda":
        from distill.utils.runtime import deterministic_cublas, resolve_device
        deterministic_cublas()  # as a training run with run.deterministic (the default) sets it
        dev = resolve_device(a.device)
        print(f"KNN_ENV {torch.cuda.get_device_name(dev)}, torch {torch.__version__}, "
              f"{torch.cuda.mem_get_info(dev)[0] / GiB:.1f} GiB free of {torch.cuda.mem_get_info(dev)[1] / GiB:.1f}")
    print(f"KNN_ENV CPU threads {torch.get_num_threads()}, F = {a.width}, k = {a.k}")
    counts = [int(c) for c in a.counts.split(",")]
    gen = dev if dev.type == "cuda" else torch.device("cpu")
    cpu_plan = _knn.plan(a.cpu_count, a.width, a.k, torch.device("cpu"))

    f = features(a.cpu_count, a.width, gen)
    cpu_s, cpu_found = timed(f, a.k, cpu_plan)
    flops = 2 * a.cpu_count ** 2 * a.width
    print(f"KNN cpu N={a.cpu_count:,}: {cpu_s:.2f} s ({describe(cpu_plan)}; {flops / cpu_s / 1e9:.0f} GFLOP/s)")
    p = device_plan(a.cpu_count, a.width, a.k, dev, a.rows, a.tile)
    _, dev_found = timed(f, a.k, p)
    probs = torch.softmax(4 * torch.randn(a.cpu_count, a.classes, generator=torch.Generator().manual_seed(1)), -1)
    same_rows = (dev_found == cpu_found).all(1).float().mean().item()
    same_sets = (dev_found.sort(1).values == cpu_found.sort(1).values).all(1).float().mean().item()
    same_labels = (probs[dev_found].mean(1).argmax(-1) == probs[cpu_found].mean(1).argmax(-1)).float().mean().item()
    print(f"KNN_AGREE N={a.cpu_count:,} {dev.type} vs cpu: neighbour lists identical {100 * same_rows:.3f} %, "
          f"neighbour sets {100 * same_sets:.3f} %, smoothed labels {100 * same_labels:.3f} %")
    del f

    print(tile_parts(a.width, a.k, a.rows, a.tile, dev))
    rate = 0.0
    for n in counts:
        f = features(n, a.width, gen, seed=n)
        p = device_plan(n, a.width, a.k, dev, a.rows, a.tile)
        s, found = timed(f, a.k, p)
        if n == max(counts):
            rate = 2 * n * n * a.width / s
        est = cpu_s * (n / a.cpu_count) ** 2
        print(f"KNN {dev.type} N={n:,}: {s:.2f} s ({describe(p)}; {2 * n * n * a.width / s / 1e12:.2f} TFLOP/s); "
              f"cpu here ~{est:,.0f} s by N^2 from N={a.cpu_count:,} ({est / s:,.0f}x)")
        if n == min(counts):
            again = timed(f, a.k, p)[1]
            print(f"KNN_REPEAT N={n:,}: indices identical to the first run: {torch.equal(again, found)}")
            from distill.strategies._pseudo import knn_labels
            probs = torch.softmax(torch.randn(n, a.classes, generator=torch.Generator().manual_seed(2)), -1)
            t = time.perf_counter()
            knn_labels(f, probs, a.k, device=dev)
            print(f"KNN_LABELS N={n:,} C={a.classes}: {time.perf_counter() - t:.2f} s (normalize + spool to "
                  f"TMPDIR + kNN + smoothing, the device's own plan)")
        del f, found

    n = a.stream_count
    f = features(n, a.width, gen, seed=7)
    resident = device_plan(n, a.width, a.k, dev, a.rows, a.tile)
    work = a.rows * a.tile * _knn.WORK_BYTES + a.rows * 12 * a.k * 4
    small = work + 2 * a.tile * 4 * a.width + (n // 3 + a.rows) * (4 * a.width + 12 * a.k)  # about 3 passes
    streamed = device_plan(n, a.width, a.k, dev, a.rows, a.tile, budget=small)
    r_s, r_found = timed(f, a.k, resident)
    s_s, s_found = timed(f, a.k, streamed)
    print(f"KNN_STREAMED N={n:,}: resident {r_s:.2f} s ({describe(resident)}), streamed {s_s:.2f} s "
          f"({describe(streamed)}); indices identical: {torch.equal(r_found, s_found)}")
    del f, r_found, s_found
    print(estimate(a.estimate, a.width, a.k, rate, max(counts), dev, a.rows, a.tile))


if __name__ == "__main__":
    main()
