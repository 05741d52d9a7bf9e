"""The report's Pareto rule and test-set noise (distill/report/data.py)."""
from __future__ import annotations

import pytest

from distill.report.data import Point, binomial_se, mark_pareto


def test_pareto_rule() -> None:
    def pt(lat: float, acc: float) -> Point:
        return Point("s", "fp32", "ort-cpu", 1, {"p50": lat, "p90": lat, "p99": lat}, {"d": acc}, "", "", score=acc)

    pts = [pt(1, 0.5), pt(2, 0.9), pt(3, 0.8), pt(4, 0.95), pt(0.5, 0.4)]
    mark_pareto(pts)
    assert [p.pareto for p in pts] == [True, True, False, True, True]


def _pt(lat: float, acc: float, n: int | None = None) -> Point:
    p = Point("s", "fp32", "ort-cpu", 1, {"p50": lat, "p90": lat, "p99": lat}, {"d": acc}, "", "", score=acc,
              count={"d": n} if n else None)
    p.score_se = binomial_se(p.accuracy, p.count, ["d"])
    return p


def test_pareto_ignores_differences_within_the_test_set_noise() -> None:
    # 36.5 % vs 38 % on 400 images: 6 images apart, SE ~2.4 points: the slower int8 model is not better
    fast, slow = _pt(1.0, 0.365, 400), _pt(2.0, 0.38, 400)
    mark_pareto([fast, slow])
    assert fast.pareto and not slow.pareto
    # the same difference on 100000 images is real
    fast, slow = _pt(1.0, 0.365, 100_000), _pt(2.0, 0.38, 100_000)
    mark_pareto([fast, slow])
    assert fast.pareto and slow.pareto
    # as fast and significantly more accurate: the other is dominated
    a, b = _pt(1.0, 0.9, 1000), _pt(1.0, 0.5, 1000)
    mark_pareto([a, b])
    assert a.pareto and not b.pareto
    # mean over two domains of 96 images at 50 %: p~ = 50/100, var = 2 * 0.25 / 100, SE = sqrt(var) / 2
    assert binomial_se({"a": 0.5, "b": 0.5}, {"a": 96, "b": 96}, ["a", "b"]) == pytest.approx(0.0353553, rel=1e-5)
    # 0 of 46 right: p~ = 2/50, SE = sqrt(0.04 * 0.96 / 50), not zero
    assert binomial_se({"a": 0.0}, {"a": 46}, ["a"]) == pytest.approx(0.0277128, rel=1e-5)
    assert binomial_se({"a": 0.5}, None, ["a"]) is None
