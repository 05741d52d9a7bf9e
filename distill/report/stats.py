"""Seeds and significance: the one home for mean ± std over seeds and the tests that call a difference *real*.

Quality numbers from one seed mislead (two seeds of one recipe on the digits suite differ by
several points), so the benchmarks run several seeds and report mean ± sample std. A difference
between two recipes is called *real* only when a test gives p < 0.05 (:data:`ALPHA`, two-sided):

- seeds of two recipes: Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``), which does
  not assume equal spreads. The old rule, |diff| > 2 standard errors of the difference, is a z-test:
  with 3 seeds a side Welch's t has ~2-4 degrees of freedom and 2 SE is only p ≈ 0.1-0.2.
- the same seeds of two recipes (seed i of each shares its data order and test split): the paired
  t-test on per-seed differences (``scipy.stats.ttest_rel``), :func:`paired`;
- two models scored on the same test images: McNemar's exact test on the images one gets right
  and the other wrong (a two-sided binomial test of the discordant pairs), :func:`mcnemar`.

With fewer than two values on either side nothing can be called real. Inputs are fractions, as in
every artifact; :func:`pm` prints percent.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy

from distill.records import pct

ALPHA = 0.05  # "real" means p < ALPHA (two-sided)


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation) of ``xs``; the std is NaN with one value, both NaN with none."""
    values = [float(x) for x in xs]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


@dataclass(frozen=True)
class Comparison:
    """a - b: the difference of means, 2 SE of it, the test's p-value (NaN: untestable) and its name."""

    diff: float
    two_se: float
    p: float
    test: str = "Welch"

    @property
    def real(self) -> bool:
        """p < :data:`ALPHA` (never with NaN p: one seed, or no spread on either side and equal means)."""
        return not math.isnan(self.p) and self.p < ALPHA


def _p_from_t(diff: float, se: float, df: float) -> float:
    """Two-sided p of t = diff / se with ``df`` degrees of freedom (se 0: 0 if the means differ, else NaN)."""
    if se == 0:
        return 0.0 if diff != 0 else math.nan
    return float(2 * _scipy.t.sf(abs(diff / se), df))


def welch_from_stats(mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int) -> Comparison:
    """Welch's t-test from summary numbers (mean ± sample std, n), as ``scipy.stats.ttest_ind_from_stats``."""
    diff = mean_a - mean_b
    if n_a < 2 or n_b < 2:
        return Comparison(diff, math.nan, math.nan)
    va, vb = std_a ** 2 / n_a, std_b ** 2 / n_b
    se = math.sqrt(va + vb)
    if se == 0:
        return Comparison(diff, 0.0, _p_from_t(diff, 0.0, 1))
    p = _scipy.ttest_ind_from_stats(mean_a, std_a, n_a, mean_b, std_b, n_b, equal_var=False).pvalue
    return Comparison(diff, 2 * se, float(p))


def welch(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """Welch's t-test of seeds ``a`` vs seeds ``b`` (``scipy.stats.ttest_ind(equal_var=False)``)."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    out = welch_from_stats(ma, sa, len(a), mb, sb, len(b))
    if math.isnan(out.p) or out.two_se == 0:
        return out
    p = _scipy.ttest_ind(np.asarray(a, float), np.asarray(b, float), equal_var=False).pvalue
    return Comparison(out.diff, out.two_se, float(p))


def paired(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """Paired t-test of ``a[i]`` vs ``b[i]`` (the same seed of two recipes; ``scipy.stats.ttest_rel``).

    ``two_se`` is 2 standard errors of the mean per-seed difference."""
    if len(a) != len(b):
        raise ValueError(f"paired: {len(a)} vs {len(b)} values (one per seed on both sides)")
    d = [float(x) - float(y) for x, y in zip(a, b)]
    mean, std = mean_std(d)
    if len(d) < 2:
        return Comparison(mean, math.nan, math.nan, "paired t")
    se = std / math.sqrt(len(d))
    if se == 0:
        return Comparison(mean, 0.0, _p_from_t(mean, 0.0, 1), "paired t")
    return Comparison(mean, 2 * se, float(_scipy.ttest_rel(a, b).pvalue), "paired t")


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> Comparison:
    """McNemar's exact test of two models on the same test images (per-image correctness, same order).

    Only the images exactly one model gets right carry information: under "equally accurate" each
    of those is a's with probability 1/2 (``scipy.stats.binomtest``). ``diff`` is acc(a) - acc(b)."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape:
        raise ValueError(f"mcnemar: {a.size} vs {b.size} images (the same test images, in the same order)")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    diff = (only_a - only_b) / a.size if a.size else math.nan
    p = 1.0 if only_a + only_b == 0 else float(_scipy.binomtest(only_a, only_a + only_b, 0.5).pvalue)
    se = math.sqrt(only_a + only_b - (only_a - only_b) ** 2 / a.size) / a.size if a.size else math.nan
    return Comparison(diff, 2 * se, p, "McNemar")


def two_se(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, bool]:
    """(mean(a) - mean(b), 2 standard errors of that difference, whether it is real: Welch's p < 0.05).

    With fewer than two values on either side the spread is unknown: 2 SE is NaN and the
    difference is never called real. (Before, "real" meant |diff| > 2 SE: a z-test, too lenient for 3 seeds.)
    """
    c = welch(a, b)
    return c.diff, c.two_se, c.real


def spread(xs: Sequence[float]) -> tuple[float, float]:
    """(min, max) of ``xs``: the seed spread shown next to mean ± std; NaN, NaN with none."""
    return (min(xs), max(xs)) if len(xs) else (math.nan, math.nan)


def pm(xs: Sequence[float], digits: int = 1) -> str:
    """``xs`` (fractions) printed in percent: ``62.0 ± 2.0 (3)`` for several seeds, ``62.0`` for one."""
    mean, std = mean_std(xs)
    if len(xs) < 2:
        return pct(mean, digits)
    return f"{pct(mean, digits)} ± {pct(std, digits)} ({len(xs)})"


def _p_text(p: float) -> str:
    return "n/a" if math.isnan(p) else "< 0.001" if p < 0.001 else f"{p:.3f}"


def wording(c: Comparison) -> str:
    """``real`` where p < 0.05, else ``within noise`` (the only two words a benchmark uses)."""
    return "real" if c.real else "within noise"


def verdict(a: Sequence[float], b: Sequence[float], pair: bool = False) -> str:
    """One line on a - b in points: ``+5.0 points, 2 SE = 1.2, Welch p = 0.004 -> real`` (or ``within noise``).

    ``pair``: ``a[i]`` and ``b[i]`` are the same seed (same data order, same initialization, same test
    split), so the paired t-test decides (its p is printed after Welch's)."""
    c = welch(a, b)
    if math.isnan(c.two_se):
        return f"{100 * c.diff:+.1f} points, 2 SE = n/a (one seed) -> within noise"
    text = f"{100 * c.diff:+.1f} points, 2 SE = {100 * c.two_se:.1f}, Welch p = {_p_text(c.p)}"
    if pair and len(a) == len(b):
        c = paired(a, b)
        text += f", paired p = {_p_text(c.p)}"
    return f"{text} -> {wording(c)}"
