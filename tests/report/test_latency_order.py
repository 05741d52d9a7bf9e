"""A hand-made bench record whose p50 is above its p99 (issue 21, item 5): the latency chart drew its bar (to p50) past
its whisker (to p99), off the chart's scale (set by the largest p99) and over the numbers column. It is now left out of
the chart, with a warning naming its bench file; its numbers stay in the tables."""
from __future__ import annotations

import json
import re
from pathlib import Path

from distill.report.charts import latency_order_warnings, latency_out_of_order, latency_svg
from distill.report.data import Point
from distill.report.write import write_report
from tests.report.test_engine_join import engine_record, write_export
from tests.report.test_latency_per_device import _latency


def _point(precision: str, p50: float, p90: float, p99: float) -> Point:
    return Point("s", precision, "ort-cpu", 1, {"min": 0.5, "p50": p50, "p90": p90, "p99": p99}, None, "m", "cpu")


def _xs(svg: str) -> list[float]:
    return [float(v) for v in re.findall(r'\b(?:x|x1|x2|cx)="(-?[\d.]+)"', svg)]


def test_the_chart_leaves_out_a_point_whose_percentiles_are_out_of_order() -> None:
    good, bad = _point("fp32", 1.0, 1.5, 2.0), _point("fp16", 10.0, 3.0, 4.0)
    svg = latency_svg([good, bad], width=760)
    assert svg.count("<rect") == 1 and "fp16" not in svg and "fp32" in svg
    assert max(_xs(svg)) <= 760  # everything inside the chart
    assert latency_svg([bad]) == ""  # nothing left to draw: no chart


def test_what_is_out_of_order() -> None:
    assert latency_out_of_order({"p50": 1.0, "p90": 1.0, "p99": 1.0}) is None  # equal is in order
    assert "out of order" in (latency_out_of_order({"p50": 2.0, "p90": 1.5, "p99": 1.0}) or "")
    assert "out of order" in (latency_out_of_order({"p50": 1.0, "p90": 3.0, "p99": 2.0}) or "")
    assert "not all finite" in (latency_out_of_order({"p50": float("nan"), "p90": 1.0, "p99": 2.0}) or "")
    assert "not all finite" in (latency_out_of_order({"p50": -1.0, "p90": 1.0, "p99": 2.0}) or "")
    assert latency_order_warnings([_point("fp32", 1.0, 1.5, 2.0)]) == []


def test_the_report_warns_and_keeps_the_records_numbers_in_the_table(tmp_path: Path) -> None:
    ex = write_export(tmp_path / "exp", "1")
    engine_record(str(ex / "model.fp16.engine")).append_to(ex / "bench.jsonl")
    bad = engine_record(str(ex / "model.int8.engine")).model_dump(by_alias=True)
    bad["latency_ms"] = {**bad["latency_ms"], "p50": 9.5, "p90": 0.74, "p99": 0.77}  # edited by hand
    with open(ex / "bench.jsonl", "a") as f:
        f.write(json.dumps(bad) + "\n")
    written = write_report([ex], tmp_path / "r.html")
    said = [w for w in written.warnings if "out of order" in w]
    assert len(said) == 1 and said[0].startswith(f"{ex / 'bench.jsonl'}: the record of "), written.warnings
    assert "int8/tensorrt" in said[0] and "p50 9.5 ms" in said[0] and "left out of the latency chart" in said[0]
    section = _latency(written.html.read_text())
    chart = section.split('aria-label="latency distribution"')[1].split("</svg>")[0]
    assert "fp16" in chart and "int8/tensorrt" not in chart and max(_xs(chart)) <= 760
    assert "9.5" in section.split("</svg>")[-1]  # the table below the chart still lists it
