"""Keep the int8-sensitive layers in float until every domain is within the budget — without labels.

1. Sensitivity: quantize with one candidate left in float at a time (a Conv/Gemm/MatMul; with
   ``--fallback-outputs`` also one with the activation it feeds, its output kept float,
   :mod:`distill.export.float_outputs`, and the search below tries each layer once, as its variant ranked
   higher; the calibration
   cache makes each variant a quantization pass, not a calibration) and measure how much
   closer its predictions get to fp32 on *calibration* images — label-free, no test data used
   for ranking. Score = reduction of KL(softmax fp32 || softmax int8), averaged over images,
   vs. the fully int8 model (KL weighs errors by how much they move the class probabilities,
   unlike a raw logit MSE).
2. Greedy: in that order, try keeping each layer in float on top of those already kept;
   re-quantize and measure, per domain, the top-1 *disagreement* with the fp32 model on the
   calibration images (the measure the caller passes; the pipeline's is label-free, so no test
   label — and no target label of a source-free run — decides anything; the disagreement bounds
   the accuracy drop). A layer stays in float only if it lowers the worst domain's
   disagreement (ties: the mean) — paying a layer's latency for nothing is the wrong trade.
   Stop when no domain disagrees on more than ``max_drop`` points, when ``max_layers`` layers
   are kept, or after ``max_trials`` tries; the best variant seen is kept and reported. Test
   accuracy is measured afterwards, for the report only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from distill.export.evaluate import predict_onnx, row_chunks
from distill.export.float_outputs import excluded_nodes, label
from distill.export.images import ImageSet


@dataclass
class FallbackResult:
    """What the fallback did (all of it goes to export.json)."""

    kept_float: list[str] = field(default_factory=list)  # the layers (Conv/Gemm/MatMul nodes) kept in float
    float_outputs: list[str] = field(default_factory=list)  # those of them whose output (and activation) is float too
    excluded: list[str] = field(default_factory=list)  # every node quantize_static leaves in float: the above + activations
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    satisfied: bool = False
    disagreement_pts: dict[str, float] = field(default_factory=dict)  # of the chosen variant, per domain


def kl_divergence(ref_logits: np.ndarray, logits: np.ndarray) -> float:
    """Mean over images of KL(softmax(ref) || softmax(logits)); logits [N, C], in float64, a chunk of rows at a
    time."""
    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    total = 0.0
    for ref, other in row_chunks(ref_logits, logits):
        lp, lq = log_softmax(ref), log_softmax(other)
        total += float((np.exp(lp) * (lp - lq)).sum(axis=1).sum())
    return total / len(ref_logits)


def rank_layers(quantize_excluding: Callable[[list[str]], Path], candidates: list[dict[str, str]],
                probe: ImageSet, fp32_logits: np.ndarray, int8_logits: np.ndarray,
                log: Callable[[str], None] = lambda s: None) -> list[dict[str, Any]]:
    """Score each candidate layer by how much keeping it alone in float reduces logit error.

    Args:
        quantize_excluding: writes an int8 model with the given layers kept float; returns its path.
        candidates: ``[{"node", "op_type"[, "float_output"]}]`` to try
            (:func:`distill.export.float_outputs.fallback_candidates`).
        probe: images (calibration split) to measure on.
        fp32_logits, int8_logits: logits of the fp32 and fully int8 models on ``probe``.

    Returns:
        candidates with ``kl`` (divergence from fp32 with that layer float) and ``gain`` (its
        reduction vs. all-int8), most sensitive first.
    """
    base = kl_divergence(fp32_logits, int8_logits)
    scored = []
    for i, c in enumerate(candidates):
        path = quantize_excluding(excluded_nodes(c))
        kl = kl_divergence(fp32_logits, predict_onnx(path, probe))
        scored.append({**c, "kl": kl, "gain": base - kl})
        if (i + 1) % 10 == 0:
            log(f"  sensitivity: {i + 1}/{len(candidates)} candidates")
    return sorted(scored, key=lambda d: -d["gain"])


def _score(drops: dict[str, float]) -> tuple[float, float]:
    """(worst, mean) per-domain points: what the greedy search lowers, worst first."""
    if not drops:
        return (0.0, 0.0)
    return (round(max(drops.values()), 6), round(float(np.mean(list(drops.values()))), 6))


def greedy_fallback(quantize_excluding: Callable[[list[str]], Path], ranked: list[dict[str, Any]],
                    measure: Callable[[Path], dict[str, float]], baseline: dict[str, float],
                    max_drop: float, max_layers: int, max_trials: int | None = None,
                    log: Callable[[str], None] = lambda s: None) -> tuple[FallbackResult, Path | None]:
    """Keep layers in float, most sensitive first, until every domain is at most ``max_drop`` points off.

    Args:
        measure: model path -> per-domain points to keep under ``max_drop`` (the pipeline passes
            top-1 disagreement with fp32 on calibration images: label-free).
        baseline: ``measure`` of the all-int8 model, the score to beat.
        max_layers: most layers kept in float.
        max_trials: most candidates tried (default ``3 * max_layers``); each layer is tried once, as the variant
            (alone, or with its float output) that ``ranked`` puts first (:func:`best_variants`).

    Returns:
        the result and the path of the chosen model (the first that satisfies the budget, else
        the best seen; None when no layer improved on the all-int8 model).
    """
    res = FallbackResult(sensitivity=ranked, disagreement_pts=dict(baseline))
    max_trials = 3 * max_layers if max_trials is None else max_trials
    kept: list[dict[str, Any]] = []
    best_score = _score(baseline)
    best: tuple[Path, dict[str, float]] | None = None
    for c in best_variants(ranked)[:max(0, max_trials)]:
        if len(kept) >= max_layers:
            break
        trial = kept + [c]
        path = quantize_excluding(_excluded(trial))
        pts = measure(path)
        worst = max(pts.values()) if pts else 0.0
        score = _score(pts)
        accepted = score < best_score
        res.steps.append({"tried": c["node"], "op_type": c["op_type"], "float_output": bool(c.get("float_output")),
                          **_described(trial), "disagreement_pts": pts, "worst_disagreement_pts": worst,
                          "accepted": accepted})
        log(f"  fallback: try {c['op_type']} {label(c)} in float ({len(trial)} layer(s)): worst "
            f"disagreement {worst:.2f} pts -> {'kept' if accepted else 'reverted'}")
        if accepted:
            kept, best_score, best = trial, score, (path, pts)
            if worst <= max_drop:
                res.satisfied = True
                break
    if best is None:
        return res, None
    path, res.disagreement_pts = best
    described = _described(kept)
    res.kept_float, res.float_outputs, res.excluded = (described["kept_float"], described["float_outputs"],
                                                       described["excluded"])
    return res, path


def best_variants(ranked: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``ranked`` with one candidate per layer, the first (most sensitive) of its variants, in order: a layer's
    float-output variant takes the plain one's place in the search only when the ranking found it more useful,
    so the trial budget still buys 3 layers per layer kept and the extra candidates cost only ranking time."""
    seen: set[str] = set()
    out = []
    for c in ranked:
        if c["node"] not in seen:
            seen.add(c["node"])
            out.append(c)
    return out


def _excluded(kept: list[dict[str, Any]]) -> list[str]:
    return [n for c in kept for n in excluded_nodes(c)]


def _described(kept: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The layers kept (one candidate each, :func:`best_variants`), those with a float output, and the nodes left out
    of quantization (export.json's keys)."""
    return {"kept_float": [c["node"] for c in kept], "float_outputs": [c["node"] for c in kept if c.get("float_output")],
            "excluded": _excluded(kept)}
