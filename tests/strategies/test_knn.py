"""The refresh's exact kNN (distill/strategies/_knn.py): one tie rule whatever the tiling."""
from __future__ import annotations

import pytest
import torch

from distill.strategies._pseudo import knn_indices


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
