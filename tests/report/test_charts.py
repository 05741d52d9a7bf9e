"""The report's SVG charts and cell formatting (distill/report/charts.py)."""
from __future__ import annotations

import re

from distill.report.charts import fit_text, latency_svg, nice_ticks, pareto_svg, pct, text_width, tick_labels
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


def _axis_labels(svg: str, anchor: str) -> list[tuple[float, float]]:
    """(position, value) of the chart's tick labels: x of the x axis (``middle``), y of the y axis (``end``)."""
    pat = (r'<text x="([\d.]+)" y="[\d.]+" font-size="11" text-anchor="middle" fill="#55606c">([^<]+)</text>'
           if anchor == "middle" else
           r'<text x="[\d.]+" y="([\d.]+)" font-size="11" text-anchor="end" fill="#55606c">([^<]+)</text>')
    return [(float(pos), float(label)) for pos, label in re.findall(pat, svg)]


def test_axis_labels_name_the_ticks_they_sit_at() -> None:
    """A linear axis's labels are its ticks' values: 0.2 .. 0.3 ms in steps of 0.025 read 0.200 0.225 0.250 ...,
    evenly spaced in value as in position. fmt_num's two decimals labelled the tick at 0.225 "0.23" and the one at
    0.275 "0.28" (seen in a report of three files timed at 0.197, 0.215 and 0.291 ms)."""
    svg = pareto_svg([_point(0.197, 0.13, pareto=True), _point(0.215, 0.13), _point(0.291, 0.13)])
    ticks = _axis_labels(svg, "middle")
    assert len(ticks) >= 4
    (x0, v0), (x1, v1) = ticks[0], ticks[1]
    for x, v in ticks:  # each label's value sits where the axis puts it
        assert abs((x - x0) - (x1 - x0) * (v - v0) / (v1 - v0)) < 0.2, ticks
    assert [label for label in re.findall(r'text-anchor="middle" fill="#55606c">([^<]+)<', svg)][:3] == [
        "0.200", "0.225", "0.250"]


def test_the_latency_charts_zero_label_fits_its_left_margin() -> None:
    """The latency axis starts at 0 at x = 8: labelled "0.00" beside 0.05-step ticks it stuck out of the chart
    (the browser check: 'chart label outside its chart: text "0.00"', at some measured latencies)."""
    svg = latency_svg([_point(0.21, 0.13), _point(0.29, 0.13)])
    x, label = next((float(x), t) for x, t in re.findall(
        r'<text x="([\d.]+)" y="[\d.]+" font-size="11" text-anchor="middle" fill="#55606c">([^<]+)<', svg))
    assert label == "0" and x - text_width(label, 11) / 2 >= 0, (x, label)


def test_tick_labels_keep_the_decimals_a_tick_needs() -> None:
    assert tick_labels([0.2, 0.225, 0.25]) == ["0.200", "0.225", "0.250"]
    assert tick_labels([0, 0.05, 0.1]) == ["0", "0.05", "0.10"]
    assert tick_labels([0, 10, 20]) == ["0", "10", "20"] and tick_labels([100, 102.5, 105]) == ["100.0", "102.5", "105.0"]
    assert tick_labels([0.05, 0.1, 0.2, 0.5, 1], uniform=False) == ["0.05", "0.1", "0.2", "0.5", "1"]


def test_a_log_axis_over_many_decades_keeps_its_labels_apart() -> None:
    """p50s from 5 µs to 50 s (seven decades): the 1-2-5 ticks' labels "5000" "10000" "20000" overlapped (the browser
    check: 'chart labels overlap'); such an axis is labelled at the powers of ten only (review 2)."""
    svg = pareto_svg([_point(0.005, 0.13, pareto=True), _point(1.0, 0.13), _point(50000.0, 0.13)])
    assert "log scale" in svg
    labels = re.findall(r'<text x="([\d.]+)" y="[\d.]+" font-size="11" text-anchor="middle" fill="#55606c">([^<]+)<',
                        svg)
    assert len(labels) >= 5, labels
    for (x0, a), (x1, b) in zip(labels, labels[1:]):  # 4 px between neighbours, by the charts' own width estimate
        assert float(x1) - float(x0) >= (text_width(a, 11) + text_width(b, 11)) / 2 + 4, labels
    # an axis of fewer decades keeps its 1-2-5 ticks
    few = pareto_svg([_point(0.05, 0.13, pareto=True), _point(50.0, 0.13)])
    assert re.findall(r'text-anchor="middle" fill="#55606c">([^<]+)<', few)[:4] == ["0.05", "0.1", "0.2", "0.5"]
