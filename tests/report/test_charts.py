"""The report's SVG charts and cell formatting (distill/report/charts.py)."""
from __future__ import annotations

import re

from distill.report.charts import fit_text, latency_svg, nice_ticks, pareto_svg, pct
from distill.report.data import Point


def _point(lat: float, score: float | None, pareto: bool = False) -> Point:
    return Point("s", "fp32", "ort-cpu", 1, {"p50": lat, "p90": 1.5 * lat, "p99": 2 * lat}, None, "m", "cpu",
                 score=score, pareto=pareto)


def test_cells_print_fractions_as_percent() -> None:
    assert pct(0.125, 2) == "12.50" and pct(0.004) == "0.4" and pct(None) == "–" and pct(float("nan")) == "–"


def test_ticks_are_round_and_span_the_range() -> None:
    assert nice_ticks(3.2, 48.7) == [10, 20, 30, 40]
    assert nice_ticks(0, 1) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


def test_long_labels_are_cut_with_an_ellipsis() -> None:
    assert fit_text("short", 200, 11) == "short"
    cut = fit_text("x" * 100, 60, 10)
    assert cut.endswith("…") and len(cut) < 100


def test_pareto_chart_plots_scored_points_in_percent() -> None:
    svg = pareto_svg([_point(1.0, 0.5, pareto=True), _point(2.0, 0.8, pareto=True), _point(3.0, 0.6)])
    assert svg.count("data-point=") == 3
    assert re.search(r"accuracy 80\.00%", svg) and "accuracy, %" in svg
    assert "No benchmark record" in pareto_svg([_point(1.0, None)])
    assert latency_svg([]) == "" and latency_svg([_point(1.0, 0.5)]).startswith("<svg")
