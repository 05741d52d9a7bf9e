"""Jetson records in the report: the power mode and L4T release are part of the device (QA H finding 5), shown as text
(finding 7); each device has its own Pareto front, and report.md a device column (finding 6)."""
from __future__ import annotations

from pathlib import Path

from distill.records import BenchRecord
from distill.report.data import device_label, mark_pareto
from distill.report.write import collect, write_report
from tests.report.test_engine_join import engine_record, write_export

MAXN = "NV Power Mode: MAXN_SUPER 2"
W15 = "NV Power Mode: 15W 0"
BOARD = "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"


def jetson(record: BenchRecord, mode: str, p50: float, when: str) -> BenchRecord:
    """``record`` as the TensorRT runner writes it on a Jetson in nvpmodel ``mode``."""
    lat = {"mean": p50, "std": 0.0, "min": p50, "p50": p50, "p90": p50, "p99": p50, "max": p50}
    dev = {"jetson": {"nv_tegra_release": "R36 (release), REVISION: 4.3", "l4t": "36.4.3", "board": BOARD,
                      "power_mode": mode}, "gpus": [], "cpu": {"model": "ARMv8 Processor rev 1 (v8l)"}}
    return record.model_copy(update={"device": dev, "latency_ms": record.latency_ms.model_copy(update=lat),
                                     "timestamp": when})


def test_one_engine_timed_at_two_power_modes_is_two_points(tmp_path: Path) -> None:
    ex = write_export(tmp_path / "exp", "1")
    rec = engine_record(str(ex / "model.int8.engine"))
    jetson(rec, MAXN, 0.2, "2026-12-06T09:20:31+0000").append_to(ex / "bench.jsonl")
    jetson(rec, W15, 0.5, "2026-12-06T10:00:00+0000").append_to(ex / "bench.jsonl")
    data = collect([ex])
    assert sorted((p.device, p.latency["p50"]) for p in data.points) == [
        (f"{BOARD} (15W · L4T 36.4.3)", 0.5), (f"{BOARD} (MAXN_SUPER · L4T 36.4.3)", 0.2)]
    assert not any("timed 2 times" in w for w in data.warnings)


def test_a_jetson_is_its_board_whatever_the_runtime(tmp_path: Path) -> None:
    rec = jetson(engine_record("/x/model.int8.engine"), MAXN, 0.2, "2026-12-06T09:20:31+0000")
    with_gpu = rec.model_copy(update={"device": {**rec.device, "gpus": [{"name": "Orin (nvgpu)"}]}})
    on_cpu = rec.model_copy(update={"runtime": "ort-cpu"})
    assert device_label(with_gpu) == device_label(on_cpu) == f"{BOARD} (MAXN_SUPER · L4T 36.4.3)"


def test_jetson_details_are_text_in_both_reports(tmp_path: Path) -> None:
    ex = write_export(tmp_path / "exp", "1")
    jetson(engine_record(str(ex / "model.int8.engine")), MAXN, 0.2, "2026-12-06T09:20:31+0000").append_to(
        ex / "bench.jsonl")
    written = write_report([ex], tmp_path / "r.html")
    html, md = written.html.read_text(), written.markdown.read_text()
    assert "nv_tegra_release" not in html and '"power_mode"' not in html
    assert f"{BOARD} · MAXN_SUPER · L4T 36.4.3" in html
    assert f"Measured on {BOARD} (MAXN_SUPER · L4T 36.4.3)." in md


def _two_devices(tmp_path: Path) -> Path:
    """An export whose fp32 file is timed on an x86 CPU (slow) and whose int8 engine on a Jetson (fast)."""
    ex = write_export(tmp_path / "exp", "1")
    jetson(engine_record(str(ex / "model.int8.engine")), MAXN, 0.2, "2026-12-06T09:20:31+0000").append_to(
        ex / "bench.jsonl")
    cpu = engine_record(str(ex / "model.fp32.onnx"), "10" * 32).model_copy(update={
        "runtime": "ort-cpu", "device": {"cpu": {"model": "Xeon", "usable_cores": 2}}})
    slow = {"mean": 3.0, "p50": 3.0, "p90": 3.1, "p99": 3.2, "max": 3.2}  # percentiles in order, as a runner writes them
    cpu.model_copy(update={"latency_ms": cpu.latency_ms.model_copy(update=slow)}).append_to(ex / "bench.jsonl")
    return ex


def test_each_device_has_its_own_front(tmp_path: Path) -> None:
    data = collect([_two_devices(tmp_path)])
    for p in data.points:  # equally accurate: on one shared front the slower (the x86 CPU's) would be dominated
        p.score, p.score_se = 0.5, None
    mark_pareto(data.points)
    assert sorted((p.runtime, p.pareto) for p in data.points) == [("ort-cpu", True), ("tensorrt", True)]


def test_report_md_has_a_device_column_for_several_devices_and_html_a_chart_each(tmp_path: Path) -> None:
    written = write_report([_two_devices(tmp_path)], tmp_path / "r.html")
    md = written.markdown.read_text()
    rows = md[md.index("## All measurements"):].split("\n\n")[1].splitlines()
    assert rows[0] == "| batch | student | precision | runtime | file | device | p50 ms | p90 ms | p99 ms | accuracy % |"
    assert sorted(row.split(" | ")[5] for row in rows[2:]) == [f"{BOARD} (MAXN_SUPER · L4T 36.4.3)", "Xeon (2 cores)"]
    html = written.html.read_text()
    assert html.count('<h3 class="device">') == 2  # one chart and front per device, each headed by it
