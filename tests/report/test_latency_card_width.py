"""At 800 px the latency section's "All records" table stays inside its card for Jetson records (long device names)
and a long timm name: each device is a group of rows headed by it, not a column, and model names may break
(before: ``section #latency overflows its card: 843 > 750 px``)."""
from __future__ import annotations

import json
from pathlib import Path

from distill.report.browser import render
from distill.report.write import write_report
from tests.report.test_browser import require_chromium
from tests.report.test_engine_join import engine_record
from tests.report.test_jetson_devices import BOARD, MAXN, W15, _two_devices, jetson


def _report(tmp_path: Path) -> Path:
    """Engines timed at two power modes and three batch sizes, with GPU memory, an x86 CPU's ONNX records of another
    thread count, and a student of a long timm name."""
    ex = _two_devices(tmp_path)
    for mode in (MAXN, W15):
        for name in ("model.fp16.engine", "model.int8.engine"):
            for b in (1, 8, 32):
                r = jetson(engine_record(str(ex / name)), mode, 0.1 * b, "2026-12-06T10:00:00+0000")
                r.model_copy(update={"batch": b, "threads": None, "throughput_ips": 12345.6,
                                     "memory": {"peak_rss_delta_mb": 123.4, "gpu_peak_mb": 1234.0}}
                             ).append_to(ex / "bench.jsonl")
    listed = json.loads((ex / "export.json").read_text())
    listed["student"] = "mobilenetv4_conv_medium.e500_r256_in1k"
    (ex / "export.json").write_text(json.dumps(listed))
    return write_report([ex], tmp_path / "r.html").html


def _latency(html: str) -> str:
    start = html.index('<section id="latency">')
    return html[start:html.index("</section>", start)]


def test_all_records_groups_rows_by_device_without_a_device_column(tmp_path: Path) -> None:
    table = _latency(_report(tmp_path).read_text()).split("<h3>All records")[1]
    assert "<th>device</th>" not in table
    groups = [g.split("</th>")[0].split(">")[-1] for g in table.split('<tr class="grp">')[1:]]
    assert groups == [f"{BOARD} (15W · L4T 36.4.3)", f"{BOARD} (MAXN_SUPER · L4T 36.4.3)", "Xeon (2 cores)"]


def test_the_latency_card_does_not_overflow_at_800_px(tmp_path: Path) -> None:
    chrome = require_chromium()
    r = render(_report(tmp_path), 800, chrome=chrome)
    assert r.ready and [p for p in r.problems if "#latency" in p] == [], r.problems
