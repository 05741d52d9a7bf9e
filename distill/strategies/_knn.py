"""Exact k nearest neighbours for the source-free refresh (``sfda``'s kNN smoothing).

Every query against every key by dot product (cosine on L2-normalized rows), in tiles, keeping a running top-k.

**Tie rule** (:func:`knn_indices`): the larger dot product first; of equal ones, the smaller key index first. It holds
whatever the tile sizes, so any tiling of the same dot products gives the same indices in the same order. ``topk``
alone does not keep it (which of equal values it returns is its own choice: on the CPU, tied keys 0, 7, 14, 21, 28
of 2,000 come back as 14, 7, 21, 28, 0), so a row where a value equal to the k-th was left out takes the first ones
in index order instead. With no exact ties (the usual case for float features) the indices are ``topk``'s.

Not a strategy (the leading underscore keeps the registry from importing it as one).
"""
from __future__ import annotations

import torch
from torch import Tensor


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
    val, at = sim.topk(kk, dim=-1)
    kth = val[:, -1:]
    short = (sim == kth).sum(1) > (val == kth).sum(1)  # a value equal to the k-th was left out
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
