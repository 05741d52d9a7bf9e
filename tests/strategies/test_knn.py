"""The refresh's exact kNN (distill/strategies/_knn.py): one tie rule whatever the tiling."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from distill.strategies import _knn
from distill.strategies._knn import knn_indices
from tests.gloo import free_port


def _tied(n: int = 300, dim: int = 16, seed: int = 0) -> torch.Tensor:
    """Unit rows whose dot products are exact in float32 (four entries of ±0.5 each), so any summation order gives the
    same bits, and full of exact ties (duplicate rows among them)."""
    g = torch.Generator().manual_seed(seed)
    f = torch.zeros(n, dim)
    for i in range(n):
        cols = torch.randperm(dim, generator=g)[:4]
        f[i, cols] = 0.5 * (torch.randint(0, 2, (4,), generator=g).float() * 2 - 1)
    f[n // 2:n // 2 + 20] = f[:20]  # duplicates
    return f


def _reference(q: torch.Tensor, keys: torch.Tensor, k: int) -> torch.Tensor:
    """The tie rule on the whole matrix: a stable sort by value, descending, keeps equal values in index order."""
    return torch.sort(q @ keys.T, dim=1, descending=True, stable=True).indices[:, :k]


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_ties_go_to_the_smaller_key_index_whatever_the_tiles(chunk):
    f = _tied()
    sim = f @ f.T
    kth = sim.topk(5, dim=1).values[:, -1:]
    assert bool(((sim == kth).sum(1) > 1).all())  # every row has ties at the 5th value
    assert torch.equal(knn_indices(f, f, 5, chunk), _reference(f, f, 5))
    assert torch.equal(knn_indices(f[:37], f, 1, chunk), _reference(f[:37], f, 1))


def test_negative_zero_ties_with_zero():
    """-0.0 == 0.0: a tie, ordered by index, although a sort of the bits would put one before the other."""
    q = torch.tensor([[1.0, 0.0]])
    keys = torch.tensor([[0.0, 1.0], [-0.0, 1.0], [0.0, -1.0], [-1.0, 0.0]])
    assert (q @ keys.T)[0, :3].tolist() == [0.0, 0.0, 0.0]
    assert knn_indices(q, keys, 3, 1).tolist() == [[0, 1, 2]]
    assert knn_indices(q, keys.flip(0), 3, 2).tolist() == [[1, 2, 3]]


# ---------------------------------------------------------------------------- the device path, run on the CPU
GiB = 1 << 30


def _fake_card(monkeypatch, free: int, total: int = 80 * GiB) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, total))


def test_the_budget_rule_keeps_the_keys_on_the_card_when_they_fit_beside_the_headroom(monkeypatch):
    """free - max(2 GiB, 10 % of the card) is the budget: 10^6 keys of 1,280 floats (4.8 GiB) fit a card with 20 GiB
    free (budget 12 GiB); 10^7 (48 GiB) stream, the keys crossing ceil(N / block) times; too little: the CPU."""
    cuda = torch.device("cuda", 0)
    _fake_card(monkeypatch, free=20 * GiB)
    p = _knn.plan(10**6, 1280, 5, cuda)
    assert p.resident and p.passes == 1 and p.device == cuda and (p.rows, p.tile) == (_knn.ROWS, _knn.TILE)
    p = _knn.plan(10**7, 1280, 5, cuda)
    work = _knn.ROWS * _knn.TILE * _knn.WORK_BYTES + _knn.ROWS * 60 * 4
    block = (12 * GiB - work - 2 * _knn.TILE * 5120) // (5120 + 60) // _knn.ROWS * _knn.ROWS
    assert not p.resident and p.block == block and p.block % p.rows == 0 and p.passes == -(-10**7 // block) == 5
    # a card whose 10 % is more than 2 GiB: 40 GiB free of 140 GiB leaves a budget of 26 GiB
    _fake_card(monkeypatch, free=40 * GiB, total=140 * GiB)
    assert _knn.plan(5 * 10**6, 1280, 5, cuda).resident  # 23.8 GiB of keys
    assert not _knn.plan(6 * 10**6, 1280, 5, cuda).resident  # 28.6 GiB
    _fake_card(monkeypatch, free=8 * GiB + GiB)  # a budget of 1 GiB: less than one tile's work beside a key tile
    with pytest.warns(UserWarning, match="runs on the CPU"):
        p = _knn.plan(10**6, 1280, 5, cuda, chunk=512)
    assert p == _knn.Plan(torch.device("cpu"), 512, 512, 10**6, True, 0)
    assert _knn.plan(10**6, 1280, 5, torch.device("cpu")) == _knn.Plan(torch.device("cpu"), 1024, 1024, 10**6, True, 0)


def _device_plan_on_cpu(monkeypatch, n: int, width: int, k: int, free_beyond: int, rows: int, tile: int):
    """The plan a card with ``free_beyond`` bytes over the headroom gets, run on the CPU (the same blocks)."""
    _fake_card(monkeypatch, free=8 * GiB + free_beyond)
    p = _knn.plan(n, width, k, torch.device("cuda", 0), rows=rows, tile=tile)
    return dataclasses.replace(p, device=torch.device("cpu"))


@pytest.mark.parametrize("features", ["tied", "random"])
def test_the_device_path_resident_or_streamed_gives_the_cpu_paths_neighbours(monkeypatch, features):
    """The device code path on the CPU (same blocks; a budget forced small to stream the keys): the CPU reference's
    indices exactly, ties included; every matmul rows x tile at most; the keys cross ceil(N / block) times."""
    n, width, k, rows, tile = 700, 16, 5, 64, 128
    f = _tied(n, width) if features == "tied" else torch.nn.functional.normalize(
        torch.randn(n, width, generator=torch.Generator().manual_seed(3)), dim=-1)
    want = torch.cat([found for _, found in _knn.neighbours(f, k, _knn.plan(n, width, k, torch.device("cpu")))])
    assert torch.equal(want, knn_indices(f, f, k, 1024))
    work = rows * tile * _knn.WORK_BYTES + rows * 60 * 4
    resident = _device_plan_on_cpu(monkeypatch, n, width, k, work + n * 64, rows, tile)
    streamed = _device_plan_on_cpu(monkeypatch, n, width, k, work + 2 * tile * 64 + 3 * rows * (64 + 60), rows, tile)
    assert resident.resident and not streamed.resident and streamed.block == 3 * rows and streamed.passes == 4
    uploaded, shapes = [], []
    monkeypatch.setattr(_knn, "upload", lambda x, device: uploaded.append(len(x)) or x)
    matmul = torch.Tensor.__matmul__
    monkeypatch.setattr(torch.Tensor, "__matmul__", lambda a, b: shapes.append((len(a), b.shape[1])) or matmul(a, b))
    for p in (resident, streamed):
        uploaded.clear()
        shapes.clear()
        got = list(_knn.neighbours(f, k, p))
        assert [s for s, _ in got] == list(range(0, n, rows))
        assert torch.equal(torch.cat([found for _, found in got]), want), p
        assert max(a for a, _ in shapes) == rows and max(b for _, b in shapes) == tile
        keys_up = sum(uploaded) - (n if not p.resident else 0)  # streamed: each query block once, then the tiles
        assert keys_up == n * p.passes, (uploaded, p)
    # a share of the rows that starts on a block boundary: the same rows as in the whole pass
    part = torch.cat([found for _, found in _knn.neighbours(f, k, streamed, 2 * rows, 7 * rows)])
    assert torch.equal(part, want[2 * rows:7 * rows])


def test_knn_labels_on_the_device_path_are_the_cpu_labels(monkeypatch):
    """knn_labels with a CUDA device (the plan's device swapped for the CPU): the CPU path's labels, bit for bit."""
    from distill.strategies._pseudo import knn_labels

    g = torch.Generator().manual_seed(4)
    feats, probs = torch.randn(500, 12, generator=g), torch.softmax(3 * torch.randn(500, 6, generator=g), -1)
    want = knn_labels(feats, probs, k=5)
    real, plans = _knn.plan, []

    def small_tiles_on_the_cpu(n, w, k, device, chunk):
        plans.append(real(n, w, k, device, chunk, rows=64, tile=128))
        return dataclasses.replace(plans[-1], device=torch.device("cpu"))

    monkeypatch.setattr("distill.strategies._pseudo.plan", small_tiles_on_the_cpu)
    _fake_card(monkeypatch, free=8 * GiB + 64 * 128 * _knn.WORK_BYTES + 64 * 240 + 2 * 128 * 48 + 64 * (48 + 60))
    got = knn_labels(feats, probs, k=5, device=torch.device("cuda", 0))
    assert plans == [_knn.Plan(torch.device("cuda", 0), 64, 128, 64, False, 8)]  # streamed, 8 passes
    assert torch.equal(got, want)


@pytest.mark.parametrize("api", ["legacy", "new", "medium", "untouched"])
def test_tf32_is_off_inside_the_device_knn_and_put_back_after(api):
    """However the process turned TF32 on (torch.backends.cuda.matmul.allow_tf32, or fp32_precision since torch 2.9:
    torch refuses to read one after the other was set), the device kNN's matmuls run without it."""
    if api == "new" and not hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        pytest.skip("torch < 2.9 has no fp32_precision")
    import subprocess
    import sys

    code = f"""
import torch
from distill.strategies._knn import ieee_fp32
m = torch.backends.cuda.matmul
if {api!r} == "legacy":
    m.allow_tf32 = True
    with ieee_fp32(torch.device("cuda", 0)):
        assert m.allow_tf32 is False
    assert m.allow_tf32 is True and torch.get_float32_matmul_precision() == "high"
    with ieee_fp32(torch.device("cpu")):
        assert m.allow_tf32 is True
elif {api!r} == "new":
    m.fp32_precision = "tf32"
    with ieee_fp32(torch.device("cuda", 0)):
        assert m.fp32_precision == "ieee"
    assert m.fp32_precision == "tf32"
elif {api!r} == "untouched":  # review 4 L1: a default process is left as it was, not set to "ieee" for good
    with ieee_fp32(torch.device("cuda", 0)):
        pass
    assert m.fp32_precision == "none" and torch.get_float32_matmul_precision() == "highest"
else:  # review 3 M3: after this, torch refused to read the precision (a later torch.compile failed)
    torch.set_float32_matmul_precision("medium")
    with ieee_fp32(torch.device("cuda", 0)):
        assert m.fp32_precision == "ieee"
    assert torch.get_float32_matmul_precision() == "medium"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)  # a fresh process: global flags
    assert out.stdout.strip() == "ok", out.stderr


# ---------------------------------------------------------------------------- DDP: a share of the queries per rank
def _share_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(300, 12, generator=g), torch.softmax(3 * torch.randn(300, 6, generator=g), -1)


def _share_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as tdist

    from distill.strategies._pseudo import knn_labels

    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        sims = []
        matmul = torch.Tensor.__matmul__

        def counting(a, b):
            sims.append(len(a) * b.shape[1])  # similarities computed
            return matmul(a, b)

        torch.Tensor.__matmul__ = counting  # type: ignore[method-assign]
        try:
            labels = knn_labels(*_share_data(), k=5, chunk=64)
        finally:
            torch.Tensor.__matmul__ = matmul  # type: ignore[method-assign]
        torch.save({"labels": labels, "sims": sum(sims)}, f"{out}.{rank}")
    finally:
        try:
            tdist.barrier()  # both ranks done before rank 0's store goes away
        finally:
            tdist.destroy_process_group()

def _two_gloo_ranks(worker, tmp_path):
    """``worker`` run as two gloo ranks (``mp.spawn``): what each saved, and the single process's labels."""
    import torch.multiprocessing as mp

    from distill.strategies._pseudo import knn_labels
    port = free_port()
    mp.spawn(worker, args=(port, str(tmp_path / "r")), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"r.{r}") for r in (0, 1))
    return r0, r1, knn_labels(*_share_data(), k=5, chunk=64)


@pytest.mark.slow
def test_two_gloo_ranks_each_find_half_the_neighbours_and_end_with_the_same_labels(tmp_path):
    """Under DDP each rank computes the kNN of a share of the rows (whole blocks: 0-127 and 128-299 of 300 in blocks
    of 64) and the labels are gathered: both ranks hold the single process's labels, bit for bit, and each computed
    its share's similarities only (before: every rank computed all 300 x 300)."""
    r0, r1, want = _two_gloo_ranks(_share_worker, tmp_path)
    assert torch.equal(r0["labels"], want) and torch.equal(r1["labels"], want)
    assert (r0["sims"], r1["sims"]) == (128 * 300, 172 * 300)
    assert _knn.share_of(300, 64, 0, 2) == (0, 128) and _knn.share_of(300, 64, 1, 2) == (128, 300)
    assert [_knn.share_of(10, 4, r, 4) for r in range(4)] == [(0, 0), (0, 4), (4, 8), (8, 10)]  # 3 blocks, 4 ranks


def _empty_share_worker(rank: int, port: int, out: str) -> None:
    """knn_labels on a faked CUDA device (20 GiB free: the keys resident; the plan's device swapped for the CPU, as
    in test_knn_labels_on_the_device_path_are_the_cpu_labels), counting the rows uploaded and the collectives."""
    import torch.distributed as tdist

    from distill.strategies import _pseudo

    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.cuda.mem_get_info = lambda device=None: (20 * GiB, 80 * GiB)  # type: ignore[assignment]
        torch.cuda.empty_cache = lambda: None  # type: ignore[assignment]
        real_plan, real_upload, uploads, collectives = _knn.plan, _knn.upload, [], []
        _pseudo.plan = lambda *a, **kw: dataclasses.replace(real_plan(*a, **kw), device=torch.device("cpu"))
        _knn.upload = lambda rows, device: uploads.append(len(rows)) or real_upload(rows, device)
        for name in ("all_reduce", "all_gather", "broadcast", "barrier"):
            def counted(*a, _real=getattr(tdist, name), _name=name, **kw):
                collectives.append(_name)
                return _real(*a, **kw)
            setattr(tdist, name, counted)
        labels = _pseudo.knn_labels(*_share_data(), k=5, chunk=64, device=torch.device("cuda", 0))
        torch.save({"labels": labels, "uploads": uploads, "collectives": collectives}, f"{out}.{rank}")
    finally:
        try:
            tdist.barrier()
        finally:
            tdist.destroy_process_group()


@pytest.mark.slow
def test_a_rank_with_an_empty_share_uploads_no_key_and_joins_every_collective(tmp_path):
    """300 rows on a CUDA run are one block of 4,096 (the share unit): rank 0's share is empty, rank 1's all 300.
    Before, rank 0 still uploaded every key to its card (resident: 300 rows, [N, F] float32 at 10^7 images is
    tens of GB) and searched nothing with them. Now it uploads none, and both ranks make the same collectives in the
    same order (the plan's budget all_reduce, the labels' all_gather): both end with the single process's labels."""
    assert _knn.share_of(300, _knn.share_unit(torch.device("cuda", 0), 64), 0, 2) == (0, 0)
    r0, r1, want = _two_gloo_ranks(_empty_share_worker, tmp_path)
    assert torch.equal(r0["labels"], want) and torch.equal(r1["labels"], want)
    assert (r0["uploads"], r1["uploads"]) == ([], [300])
    assert r0["collectives"] == r1["collectives"] == ["all_reduce", "all_gather"]


def test_every_rank_cuts_the_same_shares_whatever_its_plan(monkeypatch):
    """On a CUDA run one rank may stream, keep the keys resident, or fall back to the CPU (its card too full): the
    shares are cut in a unit that every plan's blocks divide, so the ranks' bounds agree and each share starts on a
    block (its rows are the single process's)."""
    cuda = torch.device("cuda", 0)
    for chunk in (1024, 1000, 8192):
        unit = _knn.share_unit(cuda, chunk)
        _fake_card(monkeypatch, free=60 * GiB)
        roomy = _knn.plan(10**7, 1280, 5, cuda, chunk)
        _fake_card(monkeypatch, free=9 * GiB)
        with pytest.warns(UserWarning, match="runs on the CPU"):
            full = _knn.plan(10**7, 1280, 5, cuda, chunk)
        assert full.device.type == "cpu" and unit % full.rows == 0 and unit % roomy.rows == 0, (chunk, unit)
    assert _knn.share_unit(torch.device("cpu"), 1000) == 1000


def test_the_plan_counts_the_allocators_cache_as_free_and_takes_the_least_rank(monkeypatch):
    """Review 3 H2 (session 26): mem_get_info does not count what torch's allocator caches from training, so after
    epochs that filled the card a refresh streamed or fell to the CPU where a fresh start (a resume) did not, and
    DDP ranks could plan differently (another device: other rounding). The cache is given back before the plan, and
    every rank plans with the least budget of all."""
    cuda, calls = torch.device("cuda", 0), []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: calls.append("mem_get_info") or (20 * GiB,
                                                                                                      80 * GiB))
    assert _knn.plan(10**6, 1280, 5, cuda).resident and calls == ["empty_cache", "mem_get_info"]
    # two ranks: this one has 20 GiB free, the other 9 (a budget of 1 GiB): both take the CPU
    monkeypatch.setattr(_knn, "group_size", lambda: 2)
    monkeypatch.setattr(_knn.dist, "get_backend", lambda: "gloo")
    monkeypatch.setattr(_knn.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(_knn.dist, "get_rank", lambda: 1)

    def least(t, op):
        t.fill_(min(int(t), 9 * GiB - 8 * GiB))
    monkeypatch.setattr(_knn.dist, "all_reduce", least)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rank 1 says nothing: rank 0 says it once
        assert _knn.plan(10**6, 1280, 5, cuda, chunk=512).device.type == "cpu"


def test_a_small_set_is_planned_with_its_own_matmul_size(monkeypatch):
    """Review 3 L1: 300 images reserved a full 4,096 x 16,384 tile's work (1.6 GiB) and fell to the CPU on a card
    with less than that free over the headroom."""
    cuda = torch.device("cuda", 0)
    _fake_card(monkeypatch, free=8 * GiB + (64 << 20))  # 64 MiB over the headroom
    assert _knn.plan(300, 1280, 5, cuda).resident
    with pytest.warns(UserWarning, match=r"one block needs 1\.8 GiB on cuda:0, which has 8\.1 GiB free beside a "
                                         r"headroom of 8\.0 GiB"):
        assert _knn.plan(10**6, 1280, 5, cuda).device.type == "cpu"
