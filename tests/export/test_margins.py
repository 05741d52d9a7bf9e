"""distill.export.margins: int8 can only turn images the fp32 model leaves within its logit move of a tie."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distill.export import export_checkpoint
from distill.export.margins import fp32_margins, near_ties


def _logits_with_margins(margins: np.ndarray, classes: int = 4) -> np.ndarray:
    """[N, C] logits whose top-1 is class 0 with the given margin over class 1, the rest far below."""
    x = np.full((len(margins), classes), -5.0)
    x[:, 0], x[:, 1] = margins, 0.0
    return x


def test_margins_are_top1_minus_top2():
    margin, top1, top2 = fp32_margins(np.array([[0.1, 2.0, 1.5], [3.0, -1.0, 2.9]]))
    assert np.allclose(margin, [0.5, 0.1]) and top1.tolist() == [1, 0] and top2.tolist() == [2, 2]


def test_only_images_within_the_move_of_a_tie_flip():
    margins = np.linspace(0.0, 2.0, 1000, endpoint=False) + 1e-3  # 0.001 .. 1.999, every 0.002
    fp32 = _logits_with_margins(margins)
    int8 = fp32.copy()
    sign = np.where(np.arange(1000) % 2 == 0, -1.0, 1.0)  # half the images lose margin, half gain
    int8[:, 0] += sign * 0.15
    int8[:, 1] -= sign * 0.15  # every margin moves by exactly 0.3
    ties = near_ties(fp32, int8)
    assert ties is not None and ties.images == 1000
    assert ties.move_median == pytest.approx(0.3) and ties.move_p95 == pytest.approx(0.3)
    assert ties.near_tie_pct == pytest.approx(15.0, abs=0.11)  # margins below 0.3: 150 of 1000
    flipped = (margins < 0.3) & (sign < 0)
    assert ties.disagreement_pct == pytest.approx(100 * flipped.mean())
    assert ties.flipped_margin_max < 0.3 <= ties.move_p95
    assert ties.disagreement_pct <= ties.near_tie_pct


def test_a_confident_model_has_no_near_ties():
    fp32 = _logits_with_margins(np.full(200, 5.0))
    int8 = fp32 + np.random.default_rng(0).normal(0, 0.05, fp32.shape)
    ties = near_ties(fp32, int8)
    assert ties is not None and ties.near_tie_pct == 0.0 and ties.disagreement_pct == 0.0
    assert ties.flipped_margin_max == 0.0


@pytest.mark.parametrize("shape", [(0, 4), (5, 1)])
def test_nothing_to_measure_is_none(shape):
    assert near_ties(np.zeros(shape), np.zeros(shape)) is None


def test_the_export_records_near_ties_and_explains_a_missed_budget(run_ckpt: Path, tiny_root: Path, tmp_path: Path):
    from tests.export.test_int8_step import _forced_config

    lines: list[str] = []
    cfg = _forced_config(tiny_root).model_copy(update={"max_fallback_layers": 0})  # over budget, no ranking
    rep = export_checkpoint(run_ckpt, tmp_path / "exp", cfg, log=lines.append)
    m = next(m for m in rep.models if m.precision == "int8")
    ties = m.model_extra["near_ties"]
    assert ties["images"] == m.parity["n"] > 0
    assert 0.0 <= ties["disagreement_pct"] <= 100.0 and ties["move_p95"] >= ties["move_median"] >= 0.0
    assert any("within int8's logit move" in line for line in lines)
