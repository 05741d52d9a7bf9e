"""Seeds and significance: the one home for mean ± std over seeds and the two-standard-error rule.

Quality numbers from one seed mislead (two seeds of one recipe on the digits suite differ by
several points), so the benchmarks run several seeds and report mean ± sample std. A difference
between two recipes is called *real* only when it exceeds two standard errors of the difference
of their means (Welch: ``sqrt(var_a / n_a + var_b / n_b)``); with fewer than two seeds on either
side nothing can be called real. Inputs are fractions, as in every artifact; :func:`pm` prints
percent.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from distill.records import pct


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation) of ``xs``; the std is NaN with one value, both NaN with none."""
    values = [float(x) for x in xs]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def two_se(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, bool]:
    """(mean(a) - mean(b), 2 standard errors of that difference, whether it is real: |diff| > 2 SE).

    With fewer than two values on either side the spread is unknown: 2 SE is NaN and the
    difference is never called real.
    """
    diff = mean_std(a)[0] - mean_std(b)[0]
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, False
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    return diff, 2 * se, abs(diff) > 2 * se


def spread(xs: Sequence[float]) -> tuple[float, float]:
    """(min, max) of ``xs``: the seed spread shown next to mean ± std; NaN, NaN with none."""
    return (min(xs), max(xs)) if len(xs) else (math.nan, math.nan)


def pm(xs: Sequence[float], digits: int = 1) -> str:
    """``xs`` (fractions) printed in percent: ``62.0 ± 2.0 (3)`` for several seeds, ``62.0`` for one."""
    mean, std = mean_std(xs)
    if len(xs) < 2:
        return pct(mean, digits)
    return f"{pct(mean, digits)} ± {pct(std, digits)} ({len(xs)})"


def verdict(a: Sequence[float], b: Sequence[float]) -> str:
    """One line on a - b in points: ``+5.0 points, 2 SE = 1.2 -> real`` (or ``within noise``)."""
    diff, two, real = two_se(a, b)
    two_txt = "n/a (one seed)" if math.isnan(two) else f"{100 * two:.1f}"
    return f"{100 * diff:+.1f} points, 2 SE = {two_txt} -> {'real' if real else 'within noise'}"
