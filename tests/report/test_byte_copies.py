"""Two timed files with the same bytes at two places the report names apart (QA F2): ``distill qad --export`` writes
its PTQ arm as a byte copy of the export's int8 file (``model.int8-ort-cpu.ptq.onnx``), and timing both (one bench
run: the export's file, QAD's files) gave one row, whichever was timed last: the records were keyed by sha256 alone.
Each is a row of its own; a file timed twice (a rerun) is still one row, the later record."""
from __future__ import annotations

from pathlib import Path

from distill.bench.edge_runner import write_jsonl
from distill.report.write import collect

from .conftest import write_run
from .test_other_folder import record
from .test_ship_decision import FP32, _export, _qad

INT8_SHA = "b" * 64  # _export's int8 file


def _inputs(root: Path, rerun: bool) -> Path:
    run = write_run(root / "run", strategy="kd", acc={"clean": 0.9, "dark": 0.8, "noisy": 0.6}, seed=0)
    ex = _export(root / "export", run / "checkpoints" / "best", FP32)
    _qad(ex / "qad", run / "checkpoints" / "best", "ptq")
    recs = [record(str(ex / "model.int8-ort-cpu.onnx"), INT8_SHA),
            record(str(ex / "qad" / "model.int8-ort-cpu.ptq.onnx"), INT8_SHA)]
    if rerun:
        recs.append(record(str(ex / "model.int8-ort-cpu.onnx"), INT8_SHA).model_copy(
            update={"latency_ms": recs[0].latency_ms.model_copy(update={"p50": 2.0, "p90": 2.0, "p99": 2.0, "max": 2.0})}))
    write_jsonl([r.to_dict() for r in recs], root / "bench.jsonl")
    return root


def test_the_export_int8_file_and_its_ptq_copy_in_a_qad_folder_are_two_rows(tmp_path: Path) -> None:
    data = collect([_inputs(tmp_path, rerun=False)])
    rows = sorted((p.precision, Path(p.model).name) for p in data.points)
    assert rows == [("int8/ort-cpu", "model.int8-ort-cpu.onnx"),
                    ("int8/ort-cpu (PTQ)", "model.int8-ort-cpu.ptq.onnx")], rows


def test_a_file_timed_twice_is_still_one_row_the_later(tmp_path: Path) -> None:
    data = collect([_inputs(tmp_path, rerun=True)])
    export_rows = [p for p in data.points if p.precision == "int8/ort-cpu"]
    assert len(export_rows) == 1 and export_rows[0].latency["p50"] == 2.0
    assert len(data.points) == 2
