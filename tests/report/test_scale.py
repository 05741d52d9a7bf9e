"""The report's cost grows with runs + records, not runs x records (review 2, M1: each record's label rebuilt the
run lookup, {realpath(run): run} over every run, 8.5x slower at 100 runs and 20,000 records)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from distill.report.write import collect

from .conftest import write_run
from .test_other_folder import ACC, old_export, record


def realpaths_of_collect(root: Path, runs: int, records: int, monkeypatch: pytest.MonkeyPatch) -> int:
    for k in range(runs):
        run = write_run(root / "runs" / f"kd{k}", strategy="kd", acc=ACC, seed=k, options={"temperature": k})
        old_export(root / "export" / f"e{k}", run / "checkpoints" / "best", str(run), "%x" % (k % 16))
    lines = []
    for n in range(records):  # all of the first export's fp32 file, one batch size each
        r = record(str(root / "export" / "e0" / "model.fp32.onnx"), "00" * 32).to_dict()
        r["batch"] = n + 1
        lines.append(json.dumps(r))
    (root / "bench.jsonl").write_text("\n".join(lines) + "\n")
    calls = 0
    real = os.path.realpath

    def counted(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os.path, "realpath", counted)
    data = collect([*(root / "runs").iterdir(), *(root / "export").iterdir(), root / "bench.jsonl"])
    monkeypatch.setattr(os.path, "realpath", real)
    assert len(data.points) == records and all(p.student == "test_resnet (kd; temperature=0)" for p in data.points)
    return calls


def test_the_run_lookup_is_built_once_not_per_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    few = realpaths_of_collect(tmp_path / "few", 2, 200, monkeypatch)
    many = realpaths_of_collect(tmp_path / "many", 20, 200, monkeypatch)
    # 18 more runs and exports: a few dozen more paths to resolve each, not 18 more per record (3,600)
    assert many - few < 18 * 40, (few, many)
