"""distill/report/stats.py against values computed by hand."""
from __future__ import annotations

import math

import pytest

from distill.report.stats import mean_std, pm, spread, two_se, verdict


def test_mean_std_is_the_sample_std() -> None:
    # mean 0.6; deviations -0.1, 0, +0.1 -> sum of squares 0.02 / (n - 1 = 2) = 0.01 -> std 0.1
    mean, std = mean_std([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6) and std == pytest.approx(0.1)
    one = mean_std([0.42])
    assert one[0] == 0.42 and math.isnan(one[1])
    assert all(math.isnan(v) for v in mean_std([]))


def test_two_se_by_hand() -> None:
    # a: mean 0.8, var 0.0001 (values 0.79, 0.80, 0.81); b: mean 0.7, var 0.0004 (0.68, 0.70, 0.72)
    # SE = sqrt(0.0001/3 + 0.0004/3) = sqrt(0.0005/3) = 0.0129099...; 2 SE = 0.0258199
    diff, two, real = two_se([0.79, 0.80, 0.81], [0.68, 0.70, 0.72])
    assert diff == pytest.approx(0.1) and two == pytest.approx(0.0258199, abs=1e-6) and real
    # the same means with a wide spread: 2 SE = 2 sqrt((0.01 + 0.01) / 3) = 0.1633 > 0.1 -> noise
    diff, two, real = two_se([0.7, 0.8, 0.9], [0.6, 0.7, 0.8])
    assert diff == pytest.approx(0.1) and two == pytest.approx(0.163299, abs=1e-6) and not real
    # negative differences count by their size
    assert two_se([0.68, 0.70, 0.72], [0.79, 0.80, 0.81])[2]


def test_one_seed_is_never_real() -> None:
    diff, two, real = two_se([0.9], [0.1, 0.2])
    assert diff == pytest.approx(0.75) and math.isnan(two) and not real
    assert verdict([0.9], [0.1, 0.2]) == "+75.0 points, 2 SE = n/a (one seed) -> within noise"


def test_printing_in_percent() -> None:
    assert pm([0.5, 0.6, 0.7]) == "60.0 ± 10.0 (3)"
    assert pm([0.625]) == "62.5"  # one seed looks as a single number always did
    assert spread([0.61, 0.58, 0.64]) == (0.58, 0.64)
    assert verdict([0.79, 0.80, 0.81], [0.68, 0.70, 0.72]) == "+10.0 points, 2 SE = 2.6 -> real"
