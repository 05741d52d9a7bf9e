"""A file benched twice at the same settings (its sha256, runtime, batch, device, threads): one measurement taken
twice, so one point, as a seed run twice is one seed (distill/report/repeats.py). Before, the record read last
silently replaced the other: which one depended on the order the inputs were given in, and nothing said a record
was left out. Now the newest record counts, and the report says which records it left out and their p50s."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distill.bench.edge_runner import write_jsonl
from distill.records import BenchRecord
from distill.report.write import collect, write_report

from .conftest import write_run
from .test_other_folder import ACC, old_export, record


def _timed(model: str, when: str, p50: float, threads: int = 1) -> dict:
    raw = record(model, "10" * 32).to_dict()
    raw.update(timestamp=when, threads=threads)
    raw["latency_ms"] = {**raw["latency_ms"], "p50": p50}
    return BenchRecord.from_dict(raw, "bench.jsonl").to_dict()


@pytest.fixture
def benched_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An export benched on 1 Dec (p50 2.0 ms) and again on 3 Dec (p50 1.5 ms), the second time into another file;
    and at 4 threads once."""
    run = write_run(tmp_path / "runs" / "kd", strategy="kd", acc=ACC, seed=0)
    ex = old_export(tmp_path / "export" / "kd", run / "checkpoints" / "best", str(run), "1")
    onnx = str(ex / "model.fp32.onnx")
    write_jsonl([_timed(onnx, "2026-12-01T10:00:00+0000", 2.0),
                 _timed(onnx, "2026-12-01T10:05:00+0000", 0.8, threads=4)], tmp_path / "a" / "bench.jsonl")
    write_jsonl([_timed(onnx, "2026-12-03T09:00:00+0100", 1.5)], tmp_path / "b" / "bench.jsonl")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("order", ["older first", "newer first"])
def test_a_file_benched_twice_is_one_point_the_newest_record_and_the_repeat_is_said(benched_twice: Path,
                                                                                    order: str) -> None:
    t = benched_twice
    files = [t / "a" / "bench.jsonl", t / "b" / "bench.jsonl"]
    data = collect([t / "runs", t / "export", *(files if order == "older first" else files[::-1])])
    assert len(data.records) == 3
    one = [p for p in data.points if p.threads == 1]
    assert len(one) == 1 and one[0].latency["p50"] == 1.5  # the newer record, whatever the order
    assert [p.latency["p50"] for p in data.points if p.threads == 4] == [0.8]  # another setting: its own point
    (said,) = [w for w in data.warnings if "benchmark record(s) repeat" in w]
    assert said.startswith("1 benchmark record(s) repeat another record of the same file at the same settings")
    assert (f"timed 2 times, counted once: the record of 2026-12-03T09:00:00+0100 in {files[1]} (p50 1.5 ms); "
            f"left out: the record of 2026-12-01T10:00:00+0000 in {files[0]} (p50 2 ms); the later timestamp "
            "counts") in said
    assert [m.repeat for m in data.records if m.record.threads == 1] == \
        [m.source == str(files[0]) for m in data.records if m.record.threads == 1]


def test_the_repeat_is_in_both_reports(benched_twice: Path) -> None:
    t = benched_twice
    out = t / "out" / "r.html"
    write_report([t], out, "r")
    md = out.with_suffix(".md").read_text()
    assert "Benched more than once (each point is the newest record):" in md
    notes = [ln for ln in md.splitlines() if ln.startswith("- ") and "timed 2 times" in ln]
    assert len(notes) == 1 and "(p50 2 ms)" in notes[0] and "(p50 1.5 ms)" in notes[0]
    html = out.read_text()
    assert html.count("(a repeat: a newer record of this file and settings is the point)") == 1
    assert "benchmark record(s) repeat another record" in html


def test_a_bench_file_copied_with_its_tree_is_one_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same record in two files (a copy): the same timestamp, so the one read last counts, as before; said."""
    run = write_run(tmp_path / "A" / "runs" / "kd", strategy="kd", acc=ACC, seed=0)
    ex = old_export(tmp_path / "A" / "export" / "kd", run / "checkpoints" / "best", str(run), "1")
    write_jsonl([_timed(str(ex / "model.fp32.onnx"), "2026-12-01T10:00:00+0000", 2.0)], tmp_path / "A" / "bench.jsonl")
    shutil.copytree(tmp_path / "A", tmp_path / "B")
    monkeypatch.chdir(tmp_path)
    data = collect([tmp_path / "A", tmp_path / "B"])
    assert len(data.points) == 1 and data.points[0].accuracy is not None
    (said,) = [w for w in data.warnings if "benchmark record(s) repeat" in w]
    assert f"counted once: the record of 2026-12-01T10:00:00+0000 in {tmp_path / 'B' / 'bench.jsonl'}" in said
    assert "the same timestamp: the one read last counts" in said


def test_within_one_bench_file_the_line_appended_last_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review 1 L1: within one bench file the later timestamp won over append order, so a device whose clock went
    back (no RTC after a reboot) had its stale latency reported; timestamps now order only bench files."""
    run = write_run(tmp_path / "runs" / "kd", strategy="kd", acc=ACC, seed=0)
    ex = old_export(tmp_path / "export" / "kd", run / "checkpoints" / "best", str(run), "1")
    onnx = str(ex / "model.fp32.onnx")
    bench = tmp_path / "bench.jsonl"  # appended in this order: the second run after a reboot reset the clock to 1970
    write_jsonl([_timed(onnx, "2026-12-01T10:00:00+0000", 2.0), _timed(onnx, "1970-01-01T00:03:00+0000", 1.5)], bench)
    monkeypatch.chdir(tmp_path)
    data = collect([tmp_path / "runs", tmp_path / "export", bench])
    (p,) = data.points
    assert p.latency["p50"] == 1.5  # the line appended last (before fix-G: the one read last)
    (said,) = [w for w in data.warnings if "benchmark record(s) repeat" in w]
    assert (f"counted once: the record of 1970-01-01T00:03:00+0000 in {bench} (p50 1.5 ms); left out: the record of "
            f"2026-12-01T10:00:00+0000 in {bench} (p50 2 ms); in one bench file the line appended last counts (its "
            "timestamp is earlier: the device's clock went back?)") in said
