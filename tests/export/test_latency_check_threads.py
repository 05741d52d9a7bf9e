"""The export's latency check with onnxruntime's default threads (``ExportConfig(threads=None)``, the Python API) wrote
``latency_check.threads: null`` and nothing else. It records the threads its sessions used as a bench record does
(``threads_used``, ``threads_basis``), and says them where the check is shown: the export's log line, the
recommendation's reason, and both reports' INT8 decisions table."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from distill.bench.edge_runner import ORT_POOL_COUNTED, threads_text
from distill.export import ExportConfig, export_checkpoint
from distill.export.recommend import int8_facts
from distill.report.write import write_report

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc/self/task")


@pytest.mark.parametrize("int8_speed", [0.5, 2.0], ids=["int8-faster", "int8-slower"])
def test_default_threads_are_recorded_logged_and_reported(run_ckpt: Path, tiny_root: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, int8_speed: float) -> None:
    """Both ways the timing can come out (int8 slower than fp32 is a warning line): the test failed when a loaded
    machine timed the tiny int8 model slower than its fp32."""
    import distill.export.int8_step as step

    real = step.compare_latency

    def timed(models, **kw):  # the real measurement, its int8 p50s scaled: this test is about the words, not the CPU
        res = real(models, **kw)
        for name, stats in res["stats"].items():
            if name != "fp32":
                stats["p50"] = res["stats"]["fp32"]["p50"] * int8_speed
        return res

    monkeypatch.setattr(step, "compare_latency", timed)
    said: list[str] = []
    out = tmp_path / "exp"
    report = export_checkpoint(run_ckpt, out, ExportConfig(
        precisions=("fp32", "int8"), data_root=str(tiny_root), int8_flavour="ort-cpu", exporter="torchscript",
        target_domains=("noisy",), calib_count=32, eval_count=12, latency_iters=3, threads=None), log=said.append)
    (int8,) = [m for m in report.models if m.precision == "int8"]
    check = (int8.model_extra or {})["latency_check"]
    used = check["threads_used"]
    assert check["threads"] is None and check["threads_basis"] == ORT_POOL_COUNTED
    assert isinstance(used, int) and used >= 1
    # the line is a warning where int8 timed slower than fp32 (load, this CPU kind): either way it names the threads
    line = next(s for s in said if s.removeprefix("warning: ").startswith("int8 (ort-cpu)") and "fp32" in s
                and "batch" in s)
    assert threads_text(check) in line, line
    # what the recommendation's reason says the ratio holds for
    assert int8_facts(int8, 1.0).timed == f"batch 1, {used} thread{'s' * (used != 1)} (onnxruntime's default)"
    from distill.report.export_sections import latency_threads  # here: the record's checks above run on older code

    written = write_report([out], tmp_path / "report")  # the export alone
    cell = latency_threads(check)
    assert cell == f"threads {used} (default)"
    assert cell in Path(written.html).read_text()
    md = written.markdown.read_text()
    row = next(r for r in md[md.index("## INT8 decisions"):].splitlines() if r.startswith("| ") and "ort-cpu" in r)
    assert f"x, {cell}" in row, row


def test_an_older_latency_check_reads_as_default() -> None:
    from distill.report.export_sections import latency_threads

    assert latency_threads({"threads": None}) == "threads default"  # written before threads_used
    assert latency_threads({"threads": 1, "threads_used": 1}) == "threads 1"
