"""distill/report/stats.py against textbook examples and values computed by hand."""
from __future__ import annotations

import math

import pytest

from distill.report.stats import (
    ALPHA,
    Comparison,
    mcnemar,
    mean_std,
    paired,
    pm,
    spread,
    two_se,
    verdict,
    welch,
    welch_from_stats,
)

# Wikipedia, "Welch's t-test", example 1: t = -2.46, nu ~ 25.0, p = 0.021
A1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
A2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]


def test_mean_std_is_the_sample_std() -> None:
    # mean 0.6; deviations -0.1, 0, +0.1 -> sum of squares 0.02 / (n - 1 = 2) = 0.01 -> std 0.1
    mean, std = mean_std([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6) and std == pytest.approx(0.1)
    one = mean_std([0.42])
    assert one[0] == 0.42 and math.isnan(one[1])
    assert all(math.isnan(v) for v in mean_std([]))


def test_welch_matches_the_textbook_example() -> None:
    c = welch(A1, A2)
    assert c.p == pytest.approx(0.021, abs=5e-4) and c.real and c.test == "Welch"
    assert c.diff / (c.two_se / 2) == pytest.approx(-2.46, abs=5e-3)  # t
    s = welch_from_stats(*mean_std(A1), len(A1), *mean_std(A2), len(A2))  # the same from mean ± std, n
    assert s.p == pytest.approx(c.p, rel=1e-9) and s.two_se == pytest.approx(c.two_se)


def test_two_standard_errors_with_three_seeds_is_not_p_below_0_05() -> None:
    """The issue's point: |diff| just over 2 SE with n = 3 a side (equal spreads: df = 4) is p ~ 0.12, not real."""
    c = welch_from_stats(0.0164, 0.01, 3, 0.0, 0.01, 3)  # SE = 0.01 sqrt(2/3) = 0.008165: diff = 2.009 SE
    assert c.diff > c.two_se and c.p == pytest.approx(0.115, abs=0.003) and not c.real  # t(4) = 2: p = 0.116
    diff, two, real = two_se([0.79, 0.80, 0.81], [0.68, 0.70, 0.72])  # 7.7 SE: real under Welch too
    assert diff == pytest.approx(0.1) and two == pytest.approx(0.0258199, abs=1e-6) and real


def test_paired_t_by_hand() -> None:
    # per-seed differences 0.10, 0.15, 0.05: mean 0.1, sd 0.05, t = 0.1 / (0.05 / sqrt 3) = 2 sqrt 3, df 2;
    # for df 2 the two-sided p is 1 - |t| / sqrt(t^2 + 2) = 1 - sqrt(12 / 14) = 0.074180
    c = paired([0.8, 0.9, 0.7], [0.7, 0.75, 0.65])
    assert c.diff == pytest.approx(0.1) and c.p == pytest.approx(1 - math.sqrt(12 / 14), abs=1e-9) and not c.real
    assert c.two_se == pytest.approx(2 * 0.05 / math.sqrt(3))
    with pytest.raises(ValueError, match="one per seed"):
        paired([0.1, 0.2], [0.1])


def test_mcnemar_exact_by_hand() -> None:
    # 6 images only b gets right, none only a: two-sided binomial p = 2 * 0.5^6 = 0.03125
    c = mcnemar([False] * 6 + [True] * 4, [True] * 10)
    assert c.p == pytest.approx(0.03125) and c.real and c.diff == pytest.approx(-0.6)
    # 5 discordant, all one way: 2 * 0.5^5 = 0.0625, not real; agreement everywhere: p = 1
    assert mcnemar([True] * 5 + [False], [False] * 6).p == pytest.approx(0.0625)
    assert not mcnemar([True] * 5 + [False], [False] * 6).real
    assert mcnemar([True, False], [True, False]).p == 1.0


def test_one_seed_is_never_real() -> None:
    diff, two, real = two_se([0.9], [0.1, 0.2])
    assert diff == pytest.approx(0.75) and math.isnan(two) and not real
    assert verdict([0.9], [0.1, 0.2]) == "+75.0 points, 2 SE = n/a (one seed) -> within noise"


def test_real_only_below_alpha() -> None:
    assert ALPHA == 0.05
    assert Comparison(0.1, 0.05, 0.0499).real and not Comparison(0.1, 0.05, 0.05).real
    assert not Comparison(0.1, math.nan, math.nan).real


def test_wording() -> None:
    assert pm([0.5, 0.6, 0.7]) == "60.0 ± 10.0 (3)"
    assert pm([0.625]) == "62.5"  # one seed looks as a single number always did
    assert spread([0.61, 0.58, 0.64]) == (0.58, 0.64)
    assert verdict([0.79, 0.80, 0.81], [0.68, 0.70, 0.72]) == "+10.0 points, 2 SE = 2.6, Welch p = 0.005 -> real"
    # beyond 2 SE (3.4 SE), but Welch p = 0.050 with 3 seeds a side and one side nearly constant: not real
    a, b = [0.50, 0.55, 0.60], [0.45, 0.451, 0.452]
    assert "-> within noise" in verdict(a, b) and abs(welch(a, b).diff) > welch(a, b).two_se
    # the same seeds paired: the paired test decides and both p's are printed
    # (differences 0.05, 0.04, 0.06: t = 0.05 / (0.01 / sqrt 3) = 5 sqrt 3, df 2, p = 1 - sqrt(75 / 77) = 0.0131)
    a, b = [0.8, 0.9, 0.7], [0.75, 0.86, 0.64]
    assert "Welch p = 0.592" in verdict(a, b) and verdict(a, b).endswith("-> within noise")
    assert verdict(a, b, pair=True).endswith("paired p = 0.013 -> real")


def test_the_welch_recheck_of_results_md() -> None:
    """benchmarks/welch_recheck.py: fm vs erm at 60 epochs stands (p 0.027), at 200 epochs it does not (p 0.089)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "welch_recheck.py"
    spec = importlib.util.spec_from_file_location("welch_recheck", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = {(r["section"], r["claim"]): r for r in mod.rows()}
    assert rows[("Generalization, 60 epochs", "fm vs erm, target mean")]["p"] == pytest.approx(0.0272, abs=5e-4)
    late = rows[("Generalization, 200 epochs", "fm vs erm, target mean")]
    assert late["p"] == pytest.approx(0.089, abs=1e-3) and not late["stands"] and late["two_se"] < late["diff"]
    assert late["paired"] == pytest.approx(0.080, abs=1e-3)
