"""The latency-bars section draws one chart per device at each batch size, headed by the device, as the Pareto section
does (before: the x86 CPU's and the Jetson's bars in one chart, on one scale)."""
from __future__ import annotations

from pathlib import Path

from distill.report.write import write_report
from tests.report.test_engine_join import engine_record, write_export
from tests.report.test_jetson_devices import BOARD, _two_devices


def _latency(html: str) -> str:
    start = html.index('<section id="latency">')
    return html[start:html.index("</section>", start)]


def test_latency_bars_have_a_chart_per_device(tmp_path: Path) -> None:
    section = _latency(write_report([_two_devices(tmp_path)], tmp_path / "r.html").html.read_text())
    charts = section.split('aria-label="latency distribution"')[1:]
    assert len(charts) == 2  # batch 1: the Jetson's and the x86 CPU's
    headings = [h.split("</h4>")[0] for h in section.split('<h4 class="device">')[1:]]
    assert headings == [f"{BOARD} (MAXN_SUPER · L4T 36.4.3)", "Xeon (2 cores)"]
    jetson, cpu = (c.split("</svg>")[0] for c in charts)  # each chart's bars: its own device's records only
    assert "int8/tensorrt" in jetson and "fp32" not in jetson
    assert "fp32" in cpu and "int8/tensorrt" not in cpu


def test_one_device_has_one_chart_and_no_device_heading(tmp_path: Path) -> None:
    ex = write_export(tmp_path / "exp", "1")
    engine_record(str(ex / "model.int8.engine")).append_to(ex / "bench.jsonl")
    engine_record(str(ex / "model.fp16.engine")).append_to(ex / "bench.jsonl")
    section = _latency(write_report([ex], tmp_path / "r.html").html.read_text())
    assert section.count('aria-label="latency distribution"') == 1 and '<h4 class="device">' not in section
