"""The threads a latency was timed with are worded by one function on distill's side,
:func:`distill.bench.edge_runner.threads_text` (the standalone runner's own, which cannot import distill): the
export's int8 log line, and the recommendation's reason in brief (the basis without how it was found). The report's
table cells keep their shorter form (:func:`distill.records.ship.threads_label`).

Before: the recommendation worded them itself (``recommend._timed``): ``4 threads`` where the log line above it said
``4 threads (--threads)``, ``onnxruntime's default threads`` where no count was read.
"""
from __future__ import annotations

import pytest

from distill.bench.edge_runner import ORT_DEFAULT_DOCUMENTED, ORT_POOL_COUNTED, TENSORRT_NO_THREADS, threads_text
from distill.export.recommend import int8_facts
from distill.records import ExportedModel

ASKED = {"threads": 4, "threads_used": 4, "threads_basis": "--threads"}
COUNTED = {"threads": None, "threads_used": 2, "threads_basis": ORT_POOL_COUNTED}
DOCUMENTED = {"threads": None, "threads_used": None, "threads_basis": ORT_DEFAULT_DOCUMENTED}
OLDER = {"threads": None}  # an export.json or bench record from before threads_used


@pytest.mark.parametrize(("threads", "full", "brief"), [
    (ASKED, "4 threads (--threads)", "4 threads (as asked)"),
    (COUNTED, f"2 threads ({ORT_POOL_COUNTED})", "2 threads (onnxruntime's default)"),
    (DOCUMENTED, f"threads: {ORT_DEFAULT_DOCUMENTED}", "threads: onnxruntime's default, not counted"),
    (OLDER, "threads: the runtime's default (count not recorded)", "threads: the runtime's default, count not recorded"),
    ({"threads": 1}, "1 thread (--threads)", "1 thread (as asked)"),
    ({"threads": None, "threads_used": None, "threads_basis": TENSORRT_NO_THREADS}, f"threads: {TENSORRT_NO_THREADS}",
     f"threads: {TENSORRT_NO_THREADS}"),
])
def test_the_words_are_pinned(threads: dict, full: str, brief: str) -> None:
    assert threads_text(threads) == full
    assert threads_text(threads, brief=True) == brief


@pytest.mark.parametrize(("threads", "timed"), [
    (ASKED, "batch 8, 4 threads (as asked)"),
    (COUNTED, "batch 8, 2 threads (onnxruntime's default)"),
    (DOCUMENTED, "batch 8, threads: onnxruntime's default, not counted"),
    (OLDER, "batch 8, threads: the runtime's default, count not recorded"),
])
def test_the_recommendation_names_the_threads_in_the_log_lines_words(threads: dict, timed: str) -> None:
    """The words pinned, not compared with the output of the function the recommendation calls (review 1, finding
    8: that held for any wording)."""
    check = {"ratio_vs_fp32": 0.8, "ratio_ci95": [0.7, 0.85], "representative": True, "batch": 8, **threads}
    entry = ExportedModel(file="model.int8-ort-cpu.onnx", bytes=1, sha256="0", precision="int8", runtime="ort-cpu",
                          flavour="ort-cpu", target_runtime="onnxruntime-cpu", disagreement_pts={"a": 0.1},
                          latency_check=check)
    facts = int8_facts(entry, 1.0)
    assert facts.timed == timed
    assert facts.ratio_text() == f"0.80x fp32 latency (p50s; per-round ratio's 95 % interval up to 0.85; {timed})"


def test_a_thread_count_asked_for_reads_the_same_in_the_log_and_the_recommendation() -> None:
    """The count is the log line's; the recommendation names no flag, which a caller of ``api.export(threads=4)``
    did not pass (review 1, finding 6: it said ``(--threads)``), nor parentheses inside its parentheses."""
    check = {"ratio_vs_fp32": 0.8, "ratio_ci95": [0.7, 0.85], "representative": True, "batch": 1, **ASKED}
    entry = ExportedModel(file="model.int8-ort-cpu.onnx", bytes=1, sha256="0", precision="int8", runtime="ort-cpu",
                          flavour="ort-cpu", target_runtime="onnxruntime-cpu", disagreement_pts={"a": 0.1},
                          latency_check=check)
    assert threads_text(check) == "4 threads (--threads)"  # the command's log line
    facts = int8_facts(entry, 1.0)
    assert facts.timed == "batch 1, 4 threads (as asked)"
    assert facts.ratio_text() == "0.80x fp32 latency (p50s; per-round ratio's 95 % interval up to 0.85; batch 1, " \
        "4 threads (as asked))"
