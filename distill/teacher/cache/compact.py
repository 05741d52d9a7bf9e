"""Compact cache rows: what a row stores of the teacher's logits and embedding, and the dense logits back.

``distill cache build --logits full|topk|none [--topk K] [--no-embeddings]`` (recorded in the
manifest's ``layout``, :class:`~distill.records.CacheRowLayout`):

- ``full`` (default): ``logits`` [n, C] in the cache dtype, as before.
- ``topk``: TinyViT's sparse logits (Wu et al. 2022: top-100, ~0.4 kB an image). A row stores the
  K largest logits (``logits_topk_values`` [n, K], cache dtype), their classes
  (``logits_topk_index`` [n, K], int16 when C <= 32767 else int32) and one ``logits_rest`` [n]: the
  log-mean-exp of the other C - K logits. Dense logits put ``logits_rest`` on every other class, so
  ``softmax(dense)`` equals the teacher's softmax on the top K and spreads the remaining probability
  evenly over the rest, which is exactly TinyViT's soft label (it stores top-K probabilities and
  fills the rest with ``(1 - sum) / (C - K)``). At a KD temperature T != 1 the fill is an
  approximation (the rest's spread is lost); argmax is exact.
- ``none``: no stored logits; ``logit_scale * image_emb @ text_embeddings.T``, as the builder
  computes them (:meth:`distill.teacher.clip.Teacher.forward`), from the stored (normalized)
  embedding and the fp32 text head, with the exact scale recorded in the layout: identical for
  an fp32 cache, within fp16 rounding of the embedding for an fp16 one.

``--no-embeddings`` leaves ``image_emb`` out (strategies that match features refuse such a cache
at start-up: :func:`check_strategy_layout`). Per row, at ViT-B/32 (D=512, C=1000, fp16) with
crop-only views: index + view columns 45 B; embedding 1,024 B; full logits 2,000 B; top-100
402 B (values 200 + classes 200 + rest 2).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import torch
from torch import Tensor

from distill.errors import DistillError
from distill.records import CacheBuildPlan, CacheManifest, CacheRowLayout
from distill.records.teacher import LogitMode
from distill.teacher.cache.format import ROW_DTYPES

if TYPE_CHECKING:
    from distill.strategies.base import Needs

LOGIT_MODES: tuple[LogitMode, ...] = ("full", "topk", "none")
FULL = CacheRowLayout()


def row_layout(manifest: CacheManifest) -> CacheRowLayout:
    """The manifest's layout (absent in caches from before compact rows: full logits and embeddings)."""
    return manifest.layout or FULL


def make_layout(logits: str = "full", topk: int | None = None, embeddings: bool = True,
                num_classes: int | None = None) -> CacheRowLayout | None:
    """The layout of a build's options; None for the default (full) so such a plan stays what it was.

    Raises:
        DistillError: an unknown mode, a top-k without a valid K, or a cache that would hold nothing to
            train from (no logits and no embeddings).
    """
    mode = next((m for m in LOGIT_MODES if m == logits), None)  # ``logits`` narrowed to a LogitMode
    if mode is None:
        raise DistillError(f"--logits must be one of {', '.join(LOGIT_MODES)}, got '{logits}'")
    if logits == "topk":
        if topk is None or topk < 1 or (num_classes is not None and topk >= num_classes):
            raise DistillError(f"--logits topk needs --topk K with 1 <= K < classes ({num_classes}), got {topk}; "
                               "use --logits full to keep every class")
    elif topk is not None:
        raise DistillError(f"--topk {topk} is only for --logits topk (got --logits {logits})")
    if logits == "none" and not embeddings:
        raise DistillError("--logits none recomputes logits from the embeddings: it cannot go with --no-embeddings")
    if logits == "full" and embeddings:
        return None
    return CacheRowLayout(logits=mode, topk=topk, embeddings=embeddings)


def plan_layout(plan: CacheBuildPlan) -> CacheRowLayout:
    """The row layout of a build plan (full when it records none)."""
    return plan.layout if plan.layout is not None else FULL


def manifest_columns(layout: CacheRowLayout, rows: int, D: int, C: int, P: int, dtype: str
                     ) -> tuple[dict[str, list[int]], dict[str, str]]:
    """The manifest's ``shapes`` and ``row_dtypes``: what the shards of this layout hold."""
    shapes = {"image_emb": [rows, D], "logits": [rows, C], "view_params": [rows, P], "text_embeddings": [C, D]}
    row_dtypes = {"image_emb": dtype, "logits": dtype, **{k: str(v).removeprefix("torch.") for k, v in ROW_DTYPES.items()}}
    if layout == FULL:
        return shapes, row_dtypes
    K = int(layout.topk or 0)
    extra = {"logits_topk_values": ([rows, K], dtype),
             "logits_topk_index": ([rows, K], str(index_dtype(C)).removeprefix("torch.")),
             "logits_rest": ([rows], dtype)}
    for name in ("image_emb", "logits", *extra):
        if name not in output_columns(layout):
            shapes.pop(name, None), row_dtypes.pop(name, None)
        elif name in extra:
            shapes[name], row_dtypes[name] = extra[name]
    return shapes, row_dtypes


def index_dtype(num_classes: int) -> torch.dtype:
    return torch.int16 if num_classes <= 32767 else torch.int32


def output_columns(layout: CacheRowLayout) -> tuple[str, ...]:
    """The teacher-output tensors a shard of this layout stores."""
    return (("image_emb",) if layout.embeddings else ()) + logit_columns(layout, stored_only=True)


def logit_columns(layout: CacheRowLayout, stored_only: bool = False) -> tuple[str, ...]:
    """The stored tensors dense logits are made from."""
    if layout.logits == "full":
        return ("logits",)
    if layout.logits == "topk":
        return ("logits_topk_values", "logits_topk_index", "logits_rest")
    return () if stored_only else ("image_emb",)


def compact_outputs(layout: CacheRowLayout, emb: Tensor, logits: Tensor, dtype: torch.dtype) -> dict[str, Tensor]:
    """A batch's teacher outputs (``emb`` [B, D], ``logits`` [B, C], fp32) as this layout stores them (on the CPU)."""
    out: dict[str, Tensor] = {}
    if layout.embeddings:
        out["image_emb"] = emb.to(dtype).cpu()
    if layout.logits == "full":
        out["logits"] = logits.to(dtype).cpu()
    elif layout.logits == "topk":
        assert layout.topk is not None  # make_layout records K with 'topk' (a resumed plan equals the fresh one)
        z = logits.float()
        values, index = z.topk(int(layout.topk), dim=1)
        rest = z.scatter(1, index, float("-inf")).logsumexp(1) - math.log(z.shape[1] - int(layout.topk))
        out.update(logits_topk_values=values.to(dtype).cpu(),
                   logits_topk_index=index.to(index_dtype(z.shape[1])).cpu(),
                   logits_rest=rest.to(dtype).cpu())
    return out


def empty_outputs(layout: CacheRowLayout, dim: int, num_classes: int, dtype: torch.dtype) -> dict[str, Tensor]:
    """Zero-row output tensors of this layout (a shard whose images were all skipped)."""
    out = {"image_emb": torch.zeros(0, dim, dtype=dtype), "logits": torch.zeros(0, num_classes, dtype=dtype),
           "logits_topk_values": torch.zeros(0, int(layout.topk or 0), dtype=dtype),
           "logits_topk_index": torch.zeros(0, int(layout.topk or 0), dtype=index_dtype(num_classes)),
           "logits_rest": torch.zeros(0, dtype=dtype)}
    return {k: out[k] for k in output_columns(layout)}


def dense_logits(layout: CacheRowLayout, stored: Mapping[str, Tensor], text_embeddings: Tensor) -> Tensor:
    """Dense float32 logits [B, C] from a batch's stored columns (:func:`logit_columns`), whatever the layout.

    Args:
        layout: the cache's row layout.
        stored: the gathered columns, in their stored dtypes.
        text_embeddings: [C, D] float32 zero-shot head (for ``none``).
    """
    if layout.logits == "full":
        return stored["logits"].float()
    if layout.logits == "topk":
        values, index, rest = (stored[k] for k in logit_columns(layout))
        C = text_embeddings.shape[0]
        dense = rest.float().unsqueeze(1).expand(len(rest), C).clone()
        return dense.scatter_(1, index.long(), values.float())
    if layout.logit_scale is None:
        raise DistillError("cache layout 'none' without a recorded logit_scale; rebuild the cache")
    return layout.logit_scale * stored["image_emb"].float() @ text_embeddings.float().T


def check_strategy_layout(name: str, needs: Needs, layout: CacheRowLayout, path: str | Path) -> None:
    """Refuse, at start-up and in one line, a strategy whose needs this cache's rows cannot serve.

    Args:
        name: the strategy's name.
        needs: its :class:`~distill.strategies.base.Needs` (``cached_features``, ``cached_logits``, ``logit_modes``).
        layout: the cache's row layout.
        path: the cache (for the message).
    """
    if needs.cached_features and not layout.embeddings:
        raise DistillError(f"strategy '{name}' matches teacher embeddings, but cache {path} was built with "
                           "--no-embeddings; rebuild it without --no-embeddings, or choose a strategy that reads "
                           "logits only (kd, adv_cached, teacher_pl, sfda)")
    if needs.cached_logits and layout.logits not in needs.logit_modes:
        raise DistillError(f"strategy '{name}' reads logits as {'/'.join(needs.logit_modes)}, but cache {path} "
                           f"stores them as '{layout.logits}'; rebuild it with --logits full")


__all__ = ["FULL", "LOGIT_MODES", "check_strategy_layout", "compact_outputs", "dense_logits", "empty_outputs",
           "index_dtype", "logit_columns", "make_layout", "output_columns", "row_layout"]
