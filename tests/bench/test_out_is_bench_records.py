"""QA G F15: ``distill bench EXP --out EXP/export.json`` appended JSON lines to the export's record, and the next
``distill bench EXP`` failed on it. ``--out`` is now a ``.jsonl`` file that, when it exists, holds bench records: else
one line naming it, before anything is timed or written. Appending to its own bench file still works."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import distill.bench.edge_runner as edge_runner
from distill.cli import main

FAST = ["--warmup", "0", "--iters", "2", "--threads", "1"]


def _no_timing(monkeypatch) -> list[str]:
    timed: list[str] = []
    monkeypatch.setattr(edge_runner, "bench_runners", lambda *a, **k: timed.append("timed") or [])
    monkeypatch.setattr("distill.bench.run.bench_file", lambda *a, **k: timed.append("timed") or [])
    return timed


@pytest.mark.parametrize("runner", ["distill", "edge_runner"])
def test_a_record_or_a_file_of_other_lines_is_refused(small_onnx: Path, tmp_path: Path, monkeypatch, capsys,
                                                      runner: str) -> None:
    timed = _no_timing(monkeypatch)
    record = tmp_path / "export.json"
    record.write_text(json.dumps({"format": "distill.export", "models": []}, indent=2))
    other = tmp_path / "notes.jsonl"
    other.write_text(json.dumps({"note": "mine"}) + "\n")
    for out, why in ((record, "not a .jsonl file"), (other, "exists and does not hold bench records")):
        before = out.read_bytes()
        argv = [str(small_onnx), *FAST, "--out", str(out)]
        assert (main(["bench", *argv]) if runner == "distill" else edge_runner.main(argv)) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: --out {out}: {why}"), err
        assert out.read_bytes() == before
    assert timed == []


def test_bench_appends_to_its_own_file(small_onnx: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "b.jsonl"
    for n in (1, 2):
        assert main(["bench", str(small_onnx), *FAST, "--out", str(out)]) == 0
        assert [json.loads(line)["model_name"] for line in out.read_text().splitlines()] == [small_onnx.name] * n
    empty = tmp_path / "empty.jsonl"  # an empty file (touched beforehand) is a bench file with no records yet
    empty.touch()
    assert edge_runner.main([str(small_onnx), *FAST, "--out", str(empty)]) == 0
    assert len(empty.read_text().splitlines()) == 1
