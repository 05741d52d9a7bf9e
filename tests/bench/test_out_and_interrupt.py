"""--out checked before timing, records appended as each model finishes, Ctrl-C keeps them (QA findings 2, 4, 10)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import distill.bench.edge_runner as edge_runner
from distill.cli import main

FAST = ["--warmup", "0", "--iters", "2", "--threads", "1"]


def _bad_outs(tmp_path: Path) -> list[tuple[str, str]]:
    afile = tmp_path / "afile"
    afile.write_text("x")
    (tmp_path / "adir").mkdir()
    return [(str(tmp_path / "adir"), "is a folder"), (str(afile / "b.jsonl"), "is a file")]


def _no_timing(monkeypatch) -> list[str]:
    timed: list[str] = []
    monkeypatch.setattr(edge_runner, "bench_runners", lambda *a, **k: timed.append("timed") or [])
    return timed


def test_edge_runner_refuses_an_unwritable_out_before_timing(small_onnx: Path, tmp_path: Path, monkeypatch,
                                                            capsys) -> None:
    timed = _no_timing(monkeypatch)
    for out, why in _bad_outs(tmp_path):
        assert edge_runner.main([str(small_onnx), *FAST, "--out", out]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --out ") and out in err[0] and why in err[0], err
    assert timed == []


def test_distill_bench_and_report_refuse_an_unwritable_out_in_one_line(small_onnx: Path, tmp_path: Path,
                                                                      monkeypatch, capsys) -> None:
    timed = _no_timing(monkeypatch)
    for out, why in _bad_outs(tmp_path):
        assert main(["bench", str(small_onnx), *FAST, "--out", out]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--out" in err[0] and why in err[0], err
        if why == "is a folder":  # the report writes report.html inside one (tests/report/test_out_folder.py)
            continue
        assert main(["report", str(tmp_path), "--out", out.replace(".jsonl", ".html")]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--out" in err[0] and why in err[0] and "Traceback" not in err[0], err
    assert timed == []


def test_edge_runner_checks_every_model_file_before_timing(small_onnx: Path, tmp_path: Path, monkeypatch,
                                                          capsys) -> None:
    timed = _no_timing(monkeypatch)
    assert edge_runner.main([str(small_onnx), str(tmp_path / "missing.onnx"), *FAST]) == 1
    assert "missing.onnx: model file not found" in capsys.readouterr().err
    assert timed == []


def _fake_bench_file(model, *a, **k) -> list[dict]:
    if "second" in str(model):
        raise KeyboardInterrupt
    return [{"model_name": Path(model).name, "runtime": "ort-cpu", "batch": 1, "throughput_ips": 1.0,
             "latency_ms": {"p50": 1.0, "p90": 1.0, "p99": 1.0}}]


def test_edge_runner_interrupt_keeps_the_finished_models_records(small_onnx: Path, tmp_path: Path, monkeypatch,
                                                                 capsys) -> None:
    second = Path(shutil.copy(small_onnx, tmp_path / "second.onnx"))
    out = tmp_path / "b.jsonl"
    monkeypatch.setattr(edge_runner, "bench_file", _fake_bench_file)
    assert edge_runner.main([str(small_onnx), str(second), *FAST, "--out", str(out)]) == 130
    assert [json.loads(line)["model_name"] for line in out.read_text().splitlines()] == [small_onnx.name]
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("interrupted:")]
    assert len(err) == 1 and "1 record" in err[0] and str(out) in err[0], err


def test_distill_bench_appends_each_models_records_as_it_finishes(small_onnx: Path, tmp_path: Path,
                                                                  monkeypatch, capsys) -> None:
    second = Path(shutil.copy(small_onnx, tmp_path / "second.onnx"))
    out = tmp_path / "b.jsonl"
    monkeypatch.setattr("distill.bench.run.bench_file", _fake_bench_file)
    assert main(["bench", str(small_onnx), str(second), *FAST, "--out", str(out)]) == 130
    assert [json.loads(line)["model_name"] for line in out.read_text().splitlines()] == [small_onnx.name]
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("interrupted:")]
    assert len(err) == 1 and "1 record" in err[0] and str(out) in err[0], err


def test_edge_runner_says_how_many_records_it_wrote(small_onnx: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "b.jsonl"
    assert edge_runner.main([str(small_onnx), *FAST, "--batch", "1,2", "--out", str(out)]) == 0
    assert f"wrote 2 record(s) to {out}" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "named"), [(["--iters", "0"], "--iters"), (["--warmup", "-5"], "--warmup"),
                                              (["--topk", "-1"], "--topk"), (["--topk", "0"], "--topk")])
def test_bad_timing_flags_are_named(small_onnx: Path, flags: list[str], named: str, capsys) -> None:
    assert edge_runner.main([str(small_onnx), "--threads", "1", *flags]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0], err
    assert main(["bench", str(small_onnx), "--threads", "1", *flags]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0], err


def test_a_folder_as_a_model_is_called_a_folder(tmp_path: Path, capsys) -> None:
    assert edge_runner.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a folder" in err[0], err


def test_profile_with_tensorrt_warns(tmp_path: Path, capsys) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    edge_runner.main([str(engine), "--runtime", "tensorrt", "--profile"])
    assert "warning: --profile" in capsys.readouterr().err


RSS_PROBE = r"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("edge_runner", sys.argv[1])
er = importlib.util.module_from_spec(spec); spec.loader.exec_module(er)
seen = []
real = er.rss_mb
def probe():
    seen.append("onnxruntime.capi._pybind_state" in sys.modules)
    return real()
er.rss_mb = probe
er.bench_file(sys.argv[2], "ort-cpu", (1,), 1, 0, 1)
print("FIRST_RSS_AFTER_ORT_IMPORT=" + str(seen[0]))
"""


def test_rss_baseline_is_read_after_onnxruntime_is_loaded(small_onnx: Path) -> None:
    """Else the first model is charged ~40 MiB for loading onnxruntime in its peak RSS delta (QA finding 6)."""
    r = subprocess.run([sys.executable, "-c", RSS_PROBE, edge_runner.__file__, str(small_onnx)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "FIRST_RSS_AFTER_ORT_IMPORT=True" in r.stdout, r.stdout
