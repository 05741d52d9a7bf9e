"""QA H (the device path): a torn bench file, repeated batch sizes, Ctrl-C before any record, an engine without
--runtime tensorrt, rss vs peak."""
from __future__ import annotations

from pathlib import Path

import pytest

import distill.bench.edge_runner as edge_runner
from distill.cli import main
from distill.records import BenchRecord

FAST = ["--warmup", "0", "--iters", "2", "--threads", "1"]


def _torn(small_onnx: Path, path: Path) -> Path:
    """A bench file of one record and a second line cut off half way (no newline at the end)."""
    assert edge_runner.main([str(small_onnx), *FAST, "--out", str(path)]) == 0
    line = path.read_bytes()
    path.write_bytes(line + line[: len(line) // 2])
    return path


@pytest.mark.parametrize("via", ["edge_runner", "distill bench"])
def test_appending_to_a_file_with_a_cut_off_last_line_starts_a_new_line(small_onnx: Path, tmp_path: Path, via: str,
                                                                       capsys) -> None:
    out = _torn(small_onnx, tmp_path / "bench.jsonl")
    capsys.readouterr()
    if via == "edge_runner":
        assert edge_runner.main([str(small_onnx), *FAST, "--out", str(out)]) == 0
    else:
        assert main(["bench", str(small_onnx), *FAST, "--out", str(out)]) == 0
    skipped: list[tuple[int, str]] = []
    records = list(BenchRecord.read_lines(out, skipped))
    assert len(records) == 2  # the first and the new one: only the cut-off line is lost
    assert [n for n, _ in skipped] == [2]
    assert out.read_bytes().endswith(b"\n")
    err = capsys.readouterr().err
    assert err.count("last line is cut off") == 1 and str(out) in err, err


def test_read_jsonl_names_the_line_it_skips(small_onnx: Path, tmp_path: Path, capsys) -> None:
    out = _torn(small_onnx, tmp_path / "bench.jsonl")
    capsys.readouterr()
    assert len(edge_runner.read_jsonl(out)) == 1
    err = capsys.readouterr().err
    assert f"{out}:2: not JSON" in err and "skipped that line" in err, err


def test_a_batch_size_given_twice_is_refused_in_one_line_before_timing(small_onnx: Path, tmp_path: Path, monkeypatch,
                                                                       capsys) -> None:
    from distill import api

    timed: list[str] = []
    monkeypatch.setattr(edge_runner, "bench_runners", lambda *a, **k: timed.append("timed") or [])
    out = tmp_path / "dup.jsonl"
    assert edge_runner.main([str(small_onnx), *FAST, "--batch", "8,1,8", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --batch '8,1,8' gives batch size 8 more than once; give each size once"], err
    assert main(["bench", str(small_onnx), *FAST, "--batch", "8,8", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--batch '8,8' gives batch size 8 more than once" in err[0], err
    with pytest.raises(Exception, match="batch '2,1,2' gives batch size 2 more than once"):
        api.bench(small_onnx, batch=[2, 1, 2], warmup=0, iters=1)
    assert timed == [] and not out.exists()


def test_ctrl_c_before_any_model_finished_names_no_file(small_onnx: Path, tmp_path: Path, monkeypatch,
                                                        capsys) -> None:
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(edge_runner, "bench_file", interrupted)
    out = tmp_path / "int.jsonl"
    assert edge_runner.main([str(small_onnx), *FAST, "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["interrupted before any model finished: no record was written"], err
    assert not out.exists()


def test_an_engine_without_runtime_tensorrt_gets_a_hint_to_pass_it(tmp_path: Path, capsys) -> None:
    engine = tmp_path / "model.int8.engine"
    engine.write_bytes(b"\x00not onnx")
    assert edge_runner.main([str(engine), *FAST]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {engine}: a TensorRT engine (.engine): pass --runtime tensorrt (--runtime ort-cpu runs "
                   ".onnx files)"], err


def test_a_records_rss_is_never_above_its_peak(small_onnx: Path, monkeypatch) -> None:
    """Memory that grows while the runs go on (a larger batch after this one; the kernel's high-water mark read just
    before the current RSS): the record's rss_mb is this batch's, and its peak includes it."""
    state = {"rss_kb": 100 * 1024.0}

    def status_kb(field: str) -> float:
        if field == "VmRSS":
            state["rss_kb"] += 10 * 1024.0  # grows between any two readings
            return state["rss_kb"]
        return state["rss_kb"]  # VmHWM: as of the last reading

    monkeypatch.setattr(edge_runner, "_status_kb", status_kb)
    records = edge_runner.bench_file(small_onnx, "ort-cpu", (1, 2), threads=1, warmup=0, iters=1)
    for r in records:
        mem = r["memory"]
        assert mem["rss_mb"] <= mem["peak_rss_mb"], (r["batch"], mem)
    assert records[0]["memory"]["rss_mb"] < records[1]["memory"]["rss_mb"]  # each batch's own reading


def test_the_tensorrt_hint_names_the_venv_trap_and_cuda_python_for_cuda_12(monkeypatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", None)  # not importable, as in a plain venv on a Jetson
    with pytest.raises(edge_runner.RuntimeUnavailable) as e:
        edge_runner._import_tensorrt()
    said = str(e.value)
    assert "python3 -m venv --system-site-packages" in said and "pip install 'cuda-python>=12,<13'" in said, said



def test_a_cuda_error_in_a_tensorrt_run_is_one_line_not_a_traceback(monkeypatch, tmp_path: Path, capsys) -> None:
    import sys
    import types

    import numpy as np

    from tests.bench.test_runner_checks import _fake_tensorrt

    _fake_tensorrt(monkeypatch, 1, 32, "10.3.0")
    trt, cudart = sys.modules["tensorrt"], sys.modules["cuda.bindings.runtime"]
    fake = trt.Runtime(None).deserialize_cuda_engine(b"1..32")  # the fake's classes, given what a run needs
    shapes = {"input": (1, 3, 32, 32), "logits": (1, 10)}
    monkeypatch.setattr(type(fake), "get_tensor_dtype", lambda self, n: 0, raising=False)
    ctx = type(fake.create_execution_context())
    monkeypatch.setattr(ctx, "get_tensor_shape", lambda self, n: shapes[n], raising=False)
    monkeypatch.setattr(ctx, "set_tensor_address", lambda self, n, a: None, raising=False)
    monkeypatch.setattr(ctx, "execute_async_v3", lambda self, stream: True, raising=False)
    trt.nptype = lambda dtype: np.float32
    cudart.cudaMalloc = lambda nbytes: (0, 4096)
    cudart.cudaFree = lambda dev: (0,)
    cudart.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    cudart.cudaMemcpyAsync = lambda *a: (700,)  # cudaErrorIllegalAddress: cuda-python returns it, never raises
    cudart.cudaStreamSynchronize = lambda stream: (0,)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"fake")
    assert edge_runner.main([str(engine), "--runtime", "tensorrt", "--warmup", "0", "--iters", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {engine}: CUDA error 700 (700) in cudaMemcpyAsync (to the GPU)"], err


def test_a_whole_last_record_without_its_newline_is_not_called_cut_off(small_onnx: Path, tmp_path: Path,
                                                                        capsys) -> None:
    """A complete record with no newline at the end (``echo -n``, another tool) is read as it is: appending adds
    the newline without the "cut off ... readers skip it" warning it got until review 2."""
    out = tmp_path / "bench.jsonl"
    assert edge_runner.main([str(small_onnx), *FAST, "--out", str(out)]) == 0
    out.write_bytes(out.read_bytes().rstrip(b"\n"))
    capsys.readouterr()
    assert edge_runner.main([str(small_onnx), *FAST, "--out", str(out)]) == 0
    skipped: list[tuple[int, str]] = []
    assert len(list(BenchRecord.read_lines(out, skipped))) == 2 and skipped == []
    err = capsys.readouterr().err
    assert "cut off" not in err, err


def test_the_last_line_is_found_across_read_blocks(tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    for body, want in [(b"", None), (b"a\n", None), (b"abc", b"abc"), (b"x\n" + b"y" * 70000, b"y" * 70000),
                       (b"x" * 70000 + b"\n" + b"y" * 3, b"y" * 3), (b"\n\n" + b"z" * 131072, b"z" * 131072)]:
        path.write_bytes(body)
        assert edge_runner._unended_last_line(path) == want, (len(body), want and len(want))


@pytest.mark.parametrize("before", [b"", b"\n\n"])
@pytest.mark.parametrize("via", ["edge_runner", "distill bench"])
def test_a_file_whose_only_line_is_cut_off_is_appended_to(small_onnx: Path, tmp_path: Path, via: str, before: bytes,
                                                          capsys) -> None:
    """kill -9 during the first record's write leaves one cut-off line: it was refused as 'does not hold bench
    records' until review 2, while a cut-off line after a whole record was appended to. Now both are."""
    out = tmp_path / "bench.jsonl"
    assert edge_runner.main([str(small_onnx), *FAST, "--out", str(out)]) == 0
    line = out.read_bytes()
    out.write_bytes(before + line[: len(line) // 2])
    capsys.readouterr()
    argv = [str(small_onnx), *FAST, "--out", str(out)]
    assert (edge_runner.main(argv) if via == "edge_runner" else main(["bench", *argv])) == 0
    skipped: list[tuple[int, str]] = []
    assert len(list(BenchRecord.read_lines(out, skipped))) == 1 and [n for n, _ in skipped] == [len(before) + 1]
    assert capsys.readouterr().err.count("last line is cut off") == 1


def test_a_cut_off_only_line_that_is_no_bench_record_is_refused_saying_so(tmp_path: Path) -> None:
    out = tmp_path / "bench.jsonl"
    out.write_bytes(b'{"name": "not a bench rec')
    with pytest.raises(ValueError, match=rf"^--out {out}: its only line is cut off \(no newline at the end: an "
                                         r"interrupted write\?\) and is not the start of a bench record; delete it"):
        edge_runner.check_bench_out(out)


@pytest.mark.parametrize("line", [b'{"student": "x", "models": []}', b"[1, 2]"])
def test_a_whole_one_line_json_file_of_another_kind_is_not_called_cut_off(tmp_path: Path, line: bytes) -> None:
    """Review 4 finding 4: a complete one-line JSON file without its newline (another tool's .jsonl, a minified
    record) was called cut off, and the user told to delete it: it is refused as a file of another kind."""
    out = tmp_path / "summ.jsonl"
    out.write_bytes(line)
    with pytest.raises(ValueError, match=rf"^--out {out}: exists and does not hold bench records") as caught:
        edge_runner.check_bench_out(out)
    assert "cut off" not in str(caught.value) and "delete" not in str(caught.value)
    assert out.read_bytes() == line


@pytest.mark.parametrize("platform, maxrss", [("darwin", 300 * 2**20), ("linux", 300 * 1024)])
def test_the_lifetime_peak_is_read_in_the_platforms_unit(monkeypatch, platform: str, maxrss: int) -> None:
    """Without /proc, the peak is ru_maxrss: bytes on macOS, kilobytes on Linux. Until review 2 macOS's was read as
    kilobytes (1024x too large)."""
    import resource
    import sys
    import types

    monkeypatch.setattr(edge_runner, "_status_kb", lambda field: None)
    monkeypatch.setattr(resource, "getrusage", lambda who: types.SimpleNamespace(ru_maxrss=maxrss))
    monkeypatch.setattr(sys, "platform", platform)
    with edge_runner.PeakRSS() as peak:
        pass
    assert peak.peak_mb == 300.0 and peak.lifetime
