"""How close to a tie the fp32 model leaves each image, and how far int8 moves it: the floor of int8 disagreement.

An int8 model moves every logit a little. An image changes top-1 class only where the fp32 model's margin (top-1
logit minus top-2 logit) is smaller than that move, so the share of images the fp32 model leaves within the move of
a tie bounds what any int8 recipe (calibration method, float fallback, QAD) can reach: a student that leaves a
quarter of its images near a tie disagrees with itself in int8 on several points of them, however it is quantized.
Lowering that takes a smaller move (fewer int8 layers, fp16) or a more confident student (benchmarks/RESULTS.md,
"Why int8 disagrees").
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from distill.export.evaluate import row_chunks

MOVE_QUANTILE = 0.95  # "int8's move": this quantile of |Δ margin| over the images


@dataclass(frozen=True)
class NearTies:
    """int8 vs fp32 logits [N, C] of the same images.

    Attributes:
        images: N.
        move_median, move_p95: |int8 margin - fp32 margin| over the images (logits), on fp32's top-2 pair.
        near_tie_pct: % of images whose fp32 margin is below ``move_p95``: those int8 can turn.
        disagreement_pct: % of images whose top-1 class differs.
        flipped_margin_max: the largest fp32 margin among the flipped images (0 when none flipped).
    """

    images: int
    move_median: float
    move_p95: float
    near_tie_pct: float
    disagreement_pct: float
    flipped_margin_max: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def explain(self) -> str:
        """One clause for a warning: how much of the disagreement the fp32 model's near-ties explain."""
        return (f"{self.near_tie_pct:.1f} % of the {self.images} test images are within int8's logit move "
                f"(p95 {self.move_p95:.3f}) of a tie in fp32, so a few points of disagreement are the student's "
                "near-ties, not the calibration: a more confident student or fp16 lowers them")


def fp32_margins(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top-1 logit - top-2 logit, top-1 class, top-2 class) per row of ``logits`` [N, C], C >= 2."""
    order = np.argsort(-logits, axis=1, kind="stable")
    rows = np.arange(len(logits))
    top1, top2 = order[:, 0], order[:, 1]
    return logits[rows, top1] - logits[rows, top2], top1, top2


def near_ties(fp32: np.ndarray, int8: np.ndarray) -> NearTies | None:
    """:class:`NearTies` of ``int8`` logits against ``fp32`` logits of the same images (None: < 2 classes or no
    images), in float64, a chunk of rows at a time."""
    if fp32.ndim != 2 or fp32.shape != int8.shape or fp32.shape[0] == 0 or fp32.shape[1] < 2:
        return None
    margins, moves, flips = [], [], []
    for ref, other in row_chunks(fp32, int8):  # an argsort of [N, C] would be 8 bytes a logit
        margin, top1, top2 = fp32_margins(ref)
        rows = np.arange(len(ref))
        margins.append(margin)
        moves.append(np.abs((other[rows, top1] - other[rows, top2]) - margin))
        flips.append(other.argmax(1) != top1)
    margin, move, flipped = np.concatenate(margins), np.concatenate(moves), np.concatenate(flips)
    p95 = float(np.quantile(move, MOVE_QUANTILE))
    return NearTies(images=len(margin), move_median=float(np.median(move)), move_p95=p95,
                    near_tie_pct=100.0 * float((margin < p95).mean()), disagreement_pct=100.0 * float(flipped.mean()),
                    flipped_margin_max=float(margin[flipped].max()) if flipped.any() else 0.0)
