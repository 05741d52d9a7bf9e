"""sfda's kNN refresh on a CUDA GPU (distill/strategies/_knn.py): what the CPU suite can only check on the CPU.

- resident and streamed (a budget forced small) give identical indices on the card, and so does a second run
  (the refresh must be deterministic on a given GPU: resume is exact there);
- float32 on the GPU agrees with the CPU path (clustered features: the same labels; near ties may reorder);
- TF32 turned on by the process is off inside the kNN (the same indices as with it off).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distill.strategies import _knn
from distill.strategies._pseudo import knn_labels

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs a CUDA GPU (run `python -m pytest -m gpu tests/gpu` on a GPU machine)"),
]

GiB = 1 << 30


def _features(n: int = 20000, width: int = 256, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = 4 * torch.randn(50, width, generator=g)
    x = centres[torch.arange(n) % 50] + torch.randn(n, width, generator=g)
    return F.normalize(x, dim=-1)


def _run(f: torch.Tensor, p: _knn.Plan, k: int = 5) -> torch.Tensor:
    return torch.cat([found for _, found in _knn.neighbours(f, k, p)])


def test_resident_streamed_and_repeated_runs_give_the_same_indices_on_the_gpu(monkeypatch):
    from distill.utils.runtime import deterministic_cublas

    deterministic_cublas()
    f, cuda = _features(), torch.device("cuda", torch.cuda.current_device())
    resident = _knn.plan(len(f), f.shape[1], 5, cuda, rows=1024, tile=4096)
    assert resident.resident
    total = torch.cuda.mem_get_info(cuda)[1]
    headroom = max(_knn.HEADROOM_BYTES, int(_knn.HEADROOM_FRACTION * total))
    work = 1024 * 4096 * _knn.WORK_BYTES + 1024 * 240
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (
        headroom + work + 4096 * 1024 + 6 * 1024 * (1024 + 60), total))
    streamed = _knn.plan(len(f), f.shape[1], 5, cuda, rows=1024, tile=4096)
    monkeypatch.undo()
    assert not streamed.resident and streamed.passes == 4, streamed
    first = _run(f, resident)
    assert torch.equal(_run(f, streamed), first)
    assert torch.equal(_run(f, resident), first)
    cpu = _run(f, _knn.plan(len(f), f.shape[1], 5, torch.device("cpu")))
    assert (first == cpu).all(1).float().mean() > 0.99  # float32 rounding only: a near tie may fall otherwise


def test_labels_on_the_gpu_are_the_cpu_labels_on_clustered_features():
    f = _features(6000, 128, seed=1)
    probs = F.one_hot(torch.arange(6000) % 50, 50).float() * 0.6 + 0.4 / 50
    cuda = torch.device("cuda", torch.cuda.current_device())
    assert torch.equal(knn_labels(f, probs, 5, device=cuda), knn_labels(f, probs, 5))


def test_tf32_on_in_the_process_is_off_inside_the_knn():
    f, cuda = _features(8000, 512, seed=2), torch.device("cuda", torch.cuda.current_device())
    p = _knn.plan(len(f), f.shape[1], 5, cuda)
    want = _run(f, p)
    m = torch.backends.cuda.matmul
    saved = m.allow_tf32
    m.allow_tf32 = True
    try:
        got = _run(f, p)
        assert m.allow_tf32  # put back
    finally:
        m.allow_tf32 = saved
    assert torch.equal(got, want)
