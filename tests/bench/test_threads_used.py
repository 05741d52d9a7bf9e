"""`distill bench` without `--threads` (QA F9): the record said `threads: null` and nothing else, so a reader could not
tell how many threads produced the latency. The record keeps `threads` as asked (null: the runtime's default) and adds
`threads_used` (torch.get_num_threads(); onnxruntime's intra-op pool as created, where it can be counted) and
`threads_basis` (how that is known; where onnxruntime's default cannot be read, its documented value in words, and
`threads_used` stays null). The console line and the report's latency table show it; older records (threads null, no
threads_used) still read, as "default"."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from distill.bench.edge_runner import (
    ORT_DEFAULT_DOCUMENTED,
    ORT_POOL_COUNTED,
    TENSORRT_NO_THREADS,
    ort_threads,
    os_threads,
    threads_text,
)
from distill.cli import main
from distill.records import BenchRecord
from distill.report.charts import esc
from distill.report.write import write_report

from ..report.test_engine_join import engine_record, write_export

FAST = ["--batch", "1", "--warmup", "0", "--iters", "2"]
COUNTABLE = os.path.isdir("/proc/self/task")


def _bench(capsys: pytest.CaptureFixture, model: Path, out: Path, *flags: str) -> tuple[dict, list[str]]:
    assert main(["bench", str(model), *FAST, "--out", str(out), *flags]) == 0
    lines = capsys.readouterr().err.splitlines()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 1
    return records[0], [line for line in lines if "p50" in line]


def test_torch_without_threads_records_the_threads_torch_ran_with(capsys: pytest.CaptureFixture,
                                                                  small_checkpoint: Path, tmp_path: Path) -> None:
    record, said = _bench(capsys, small_checkpoint, tmp_path / "b.jsonl", "--runtime", "torch")
    used = torch.get_num_threads()  # the bench ran in this process, with torch's default
    assert record["threads"] is None  # as asked: none
    assert record["threads_used"] == used and record["threads_basis"] == "torch's default (torch.get_num_threads())"
    assert len(said) == 1 and said[0].endswith(f"; {used} thread{'s' * (used != 1)} (torch's default "
                                               "(torch.get_num_threads()))"), said


def test_torch_with_threads_records_them_as_asked(capsys: pytest.CaptureFixture, small_checkpoint: Path,
                                                  tmp_path: Path) -> None:
    before = torch.get_num_threads()
    try:
        record, said = _bench(capsys, small_checkpoint, tmp_path / "b.jsonl", "--runtime", "torch", "--threads", "1")
    finally:
        torch.set_num_threads(before)
    assert (record["threads"], record["threads_used"], record["threads_basis"]) == (1, 1, "--threads")
    assert said[0].endswith("; 1 thread (--threads)"), said


@pytest.mark.skipif(not COUNTABLE, reason="counts threads in /proc/self/task (Linux)")
def test_ort_cpu_without_threads_records_the_pool_it_made(capsys: pytest.CaptureFixture, small_onnx: Path,
                                                          tmp_path: Path) -> None:
    record, said = _bench(capsys, small_onnx, tmp_path / "b.jsonl", "--runtime", "ort-cpu")
    assert record["threads"] is None and record["threads_basis"] == ORT_POOL_COUNTED
    assert isinstance(record["threads_used"], int) and 1 <= record["threads_used"] <= (os.cpu_count() or 1)
    assert said[0].endswith(f"; {threads_text(record)}") and f"{record['threads_used']} thread" in said[0], said


@pytest.mark.skipif(not COUNTABLE, reason="counts threads in /proc/self/task (Linux)")
@pytest.mark.parametrize("pool", [1, 3])
def test_the_count_is_the_intra_op_pool_onnxruntime_made(small_onnx: Path, pool: int) -> None:
    """What ort_threads counts around a session's creation is its intra-op pool: a session told to make a pool of
    ``pool`` threads counts as ``pool``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = pool, 1
    before = os_threads()
    session = ort.InferenceSession(str(small_onnx), so, providers=["CPUExecutionProvider"])
    after = os_threads()
    assert ort_threads(None, "ort-cpu", before, after) == (pool, ORT_POOL_COUNTED)
    del session


@pytest.mark.skipif(not COUNTABLE, reason="counts threads in /proc/self/task (Linux)")
def test_a_thread_that_ends_while_the_session_is_created_does_not_shorten_the_count(small_onnx: Path) -> None:
    """Review 1 (3): the count was a difference of totals (after - before + 1), and a thread that ended meanwhile
    (a thread pool just shut down: its /proc entry can outlive its join) made it one short. Here a thread is counted
    in ``before`` and gone (its entry too) by ``after``: the pool of 2 still counts as 2."""
    import threading
    import time

    import onnxruntime as ort

    release = threading.Event()
    ending = threading.Thread(target=release.wait)
    ending.start()
    before = os_threads()
    assert before is not None and str(ending.native_id) in before
    release.set()
    ending.join()
    deadline = time.monotonic() + 30
    while str(ending.native_id) in (os_threads() or ()) and time.monotonic() < deadline:
        time.sleep(0.01)  # until the kernel has reaped it
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 2, 1
    session = ort.InferenceSession(str(small_onnx), so, providers=["CPUExecutionProvider"])
    assert ort_threads(None, "ort-cpu", before, os_threads()) == (2, ORT_POOL_COUNTED)
    del session


def test_a_default_that_cannot_be_read_is_named_as_documented_not_counted() -> None:
    assert ort_threads(None, "ort-cpu", None, None) == (None, ORT_DEFAULT_DOCUMENTED)  # no /proc here
    assert ort_threads(None, "ort-cuda", frozenset("a"), frozenset("abc")) == (None, ORT_DEFAULT_DOCUMENTED)  # CUDA's
    assert ort_threads(4, "ort-trt", None, None) == (4, "--threads")
    text = threads_text({"threads": None, "threads_used": None, "threads_basis": ORT_DEFAULT_DOCUMENTED})
    assert text == f"threads: {ORT_DEFAULT_DOCUMENTED}" and "physical core" in text
    assert threads_text({"threads": None, "threads_used": None, "threads_basis": TENSORRT_NO_THREADS}) == \
        f"threads: {TENSORRT_NO_THREADS}"
    assert threads_text({"threads": None}) == "threads: the runtime's default (count not recorded)"  # before threads_used
    assert threads_text({"threads": 2}) == "2 threads (--threads)"


def _latency_heading(tmp_path: Path, name: str) -> str:
    page = Path(write_report([tmp_path], tmp_path / name).html).read_text()
    start = page.index("<h3>All records")
    return page[start:page.index("</h3>", start)]


def test_the_report_shows_the_threads_used_and_reads_old_records(tmp_path: Path) -> None:
    folder = write_export(tmp_path / "exp", "1")
    old = engine_record(str(folder / "model.int8.engine")).to_dict()
    old["threads"] = None  # as written before threads_used: no such keys
    (tmp_path / "bench.jsonl").write_text(json.dumps(old) + "\n")
    read = list(BenchRecord.read_lines(tmp_path / "bench.jsonl"))
    assert read[0].threads is None and read[0].threads_used is None and read[0].threads_label() == "default"
    assert "threads: default" in _latency_heading(tmp_path, "old.html")

    new = BenchRecord.from_dict({**old, "threads_used": 2, "threads_basis": ORT_POOL_COUNTED, "runtime": "ort-cpu"})
    (tmp_path / "bench.jsonl").write_text(json.dumps(new.to_dict()) + "\n")
    heading = _latency_heading(tmp_path, "new.html")
    assert f'threads: <span title="{esc(ORT_POOL_COUNTED)}">2 (default)</span>' in heading, heading
