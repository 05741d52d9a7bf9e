"""The edge runner runs as a copied single file with torch (and distill) unimportable."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import distill.bench.edge_runner as edge_runner

BLOCKER = r"""
import sys, runpy
attempts = []
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "distill", "torchvision", "timm"):
            attempts.append(name)
            raise ImportError(f"{name} is blocked: the edge runner must not need it")
        return None
sys.meta_path.insert(0, Block())
sys.argv = [sys.argv[1]] + sys.argv[2:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as e:
    code = e.code
else:
    code = 0
print("BLOCKED_ATTEMPTS=" + ",".join(attempts), file=sys.stderr)
print("TORCH_LOADED=" + str("torch" in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def test_edge_runner_without_torch(small_onnx: Path, tmp_path: Path) -> None:
    device_dir = tmp_path / "device"  # as if scp'd to a Jetson: the file alone, outside the repo
    device_dir.mkdir()
    runner = shutil.copy(edge_runner.__file__, device_dir / "edge_runner.py")
    model = shutil.copy(small_onnx, device_dir / "model.onnx")
    out = device_dir / "bench.jsonl"
    r = subprocess.run([sys.executable, "-c", BLOCKER, str(runner), str(model), "--batch", "1,2", "--iters", "4",
                        "--warmup", "1", "--threads", "1", "--profile", "--out", str(out)],
                       capture_output=True, text=True, timeout=120, cwd=device_dir)
    assert r.returncode == 0, r.stderr
    assert "BLOCKED_ATTEMPTS=\n" in r.stderr + "\n" and "TORCH_LOADED=False" in r.stderr, r.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["batch"] for x in recs] == [1, 2]
    for rec in recs:
        assert set(edge_runner.RECORD_KEYS) <= set(rec)  # the same schema as distill bench
        lat = rec["latency_ms"]
        assert lat["p50"] <= lat["p90"] <= lat["p99"] and rec["top_ops"]
        assert rec["model_meta"]["precision"] == "fp32"


def test_edge_runner_error_is_one_line(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-c", BLOCKER, edge_runner.__file__, str(tmp_path / "none.onnx")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not found" in errors[0] and "Traceback" not in r.stderr


class _Logged:
    """A runner that records its calls in a shared log (for the order) and takes no time."""

    def __init__(self, name: str, log: list[str], path: Path) -> None:
        self.name, self.log, self.path, self.meta = name, log, path, {}
        self.runtime, self.providers, self.threads = "ort-cpu", ["CPUExecutionProvider"], 1

    def input_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, 3, 4, 4)

    def run(self, x) -> None:
        self.log.append(self.name)

    def profiled(self) -> None:
        return None


def test_several_runners_are_timed_round_robin_one_record_each(tmp_path: Path) -> None:
    """bench_runners (the demo's bench): A B A B ..., so background load hits every model alike; one record per
    runner and batch, each with its own timed runs."""
    log: list[str] = []
    runners = [_Logged(n, log, tmp_path / f"{n}.onnx") for n in ("a", "b")]
    records = edge_runner.bench_runners(runners, (1, 2), warmup=2, iters=3)
    assert log == ["a", "b"] * (2 + 3) * 2  # warmup then timed, per batch size, interleaved
    assert [(r["model_name"], r["batch"]) for r in records] == [("a.onnx", 1), ("b.onnx", 1), ("a.onnx", 2),
                                                                ("b.onnx", 2)]
    assert all(r["iters"] == 3 and r["latency_ms"]["p50"] >= 0 for r in records)


def test_bench_files_times_real_models_together(small_onnx: Path, tmp_path: Path) -> None:
    other = Path(shutil.copy(small_onnx, tmp_path / "other.onnx"))
    records = edge_runner.bench_files([small_onnx, other], "ort-cpu", (1,), threads=1, warmup=1, iters=4)
    assert [r["model"] for r in records] == [str(small_onnx), str(other)]
    assert all(r["latency_ms"]["p50"] > 0 and r["iters"] == 4 for r in records)


def _run_order(monkeypatch, log: list[str]) -> None:
    """Log the file name of every ONNX Runtime call (warm-up and timed), to see the order models ran in."""
    real = edge_runner.OrtRunner.run

    def run(self, x):
        log.append(Path(self.path).stem)
        return real(self, x)

    monkeypatch.setattr(edge_runner.OrtRunner, "run", run)


def test_distill_bench_interleave_times_several_files_round_robin(small_onnx: Path, tmp_path: Path,
                                                                   monkeypatch, capsys) -> None:
    """`distill bench A B --interleave`: A B A B ... (fair ratios on a shared machine); without it, A then B."""
    from distill.cli import main

    other = Path(shutil.copy(small_onnx, tmp_path / "other.onnx"))
    # --interleave: two passes (sessions re-created in rotated order, see bench_files), each warms up once
    for flag, expected in (([], ["small.fp32"] * 3 + ["other"] * 3), (["--interleave"], ["small.fp32", "other"] * 4)):
        log: list[str] = []
        with monkeypatch.context() as m:
            _run_order(m, log)
            rc = main(["bench", str(small_onnx), str(other), "--warmup", "1", "--iters", "2", "--threads", "1",
                       *flag])
        assert rc == 0
        assert log == expected, flag
        records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [Path(r["model"]).name for r in records] == ["small.fp32.onnx", "other.onnx"]


def test_distill_bench_interleave_refuses_a_checkpoint_in_one_line(small_onnx: Path, small_checkpoint: Path,
                                                                    capsys) -> None:
    from distill.cli import main

    assert main(["bench", str(small_onnx), str(small_checkpoint), "--interleave", "--iters", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--interleave" in err[0] and "torch" in err[0], err


def test_edge_runner_interleaves_several_files(small_onnx: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """The Jetson runner takes several files too: `edge_runner.py fp16.onnx int8.onnx --interleave`."""
    other = Path(shutil.copy(small_onnx, tmp_path / "other.onnx"))
    log: list[str] = []
    _run_order(monkeypatch, log)
    assert edge_runner.main([str(small_onnx), str(other), "--interleave", "--warmup", "0", "--iters", "3",
                             "--threads", "1"]) == 0
    assert log == ["small.fp32", "other"] * 3
    assert [json.loads(line)["model_name"] for line in capsys.readouterr().out.splitlines()] == [
        "small.fp32.onnx", "other.onnx"]


def test_compare_latency_does_not_favour_the_session_created_last(monkeypatch) -> None:
    """onnxruntime's session created last ran 1-2.5 % faster than the same file's created first (RESULTS.md,
    "onnxruntime sessions created later run faster"). Simulated: runners whose runs take 0.9 on a fake clock when
    they were created last, 1.0 otherwise. Two identical models must compare 1.00, not 0.90 (the last one's edge)."""
    import distill.bench.compare as compare

    clock = {"t": 0.0}
    created: list["_Fake"] = []

    class _Fake:
        threads_used, threads_basis = 1, "counted"  # as OrtRunner has them (compare records the baseline's)

        def __init__(self, path, runtime, threads=None, spin=True, batches=None) -> None:
            self.path = path
            created.append(self)

        def input_shape(self, batch: int) -> tuple[int, ...]:
            return (batch, 3, 4, 4)

        def run(self, x) -> None:
            last_of_pass = created[-1] is self  # the newest session
            clock["t"] += 0.9 if last_of_pass else 1.0

    monkeypatch.setattr(compare, "OrtRunner", _Fake)
    monkeypatch.setattr(edge_runner.time, "perf_counter", lambda: clock["t"])
    res = compare.compare_latency({"a": "same.onnx", "b": "same.onnx"}, iters=40, warmup=2)
    assert abs(res["ratio_p50"]["b"] - 1.0) < 1e-9, res["ratio_p50"]  # one creation order gives 0.9
    assert len(created) == 4 and [c.path for c in created] == ["same.onnx"] * 4  # two passes, two sessions each
    assert all(len(s) > 0 for s in res["stats"].values()) and res["iters"] == 40
    # per-round ratios: 0.9 in one pass, 1/0.9 in the other; their median's interval holds the true 1.0
    assert res["ratio_ci95"]["a"] == [1.0, 1.0]
    low, high = res["ratio_ci95"]["b"]
    assert abs(low - 0.9) < 1e-9 and abs(high - 1 / 0.9) < 1e-9
    # three models (the export's fp32, int8 and fallback file): given order then reverse would never make the middle
    # one the newest; each must be newest in a third of its runs, so all three pool the same times
    created.clear()
    res = compare.compare_latency({"a": "same.onnx", "b": "same.onnx", "c": "same.onnx"}, iters=30, warmup=2)
    assert len(created) == 9 and all(abs(r - 1.0) < 1e-9 for r in res["ratio_p50"].values()), res["ratio_p50"]
    means = [s["mean"] for s in res["stats"].values()]  # ms: 10 runs newest (900) and 20 not (1000) each
    assert all(abs(m - (10 * 900 + 20 * 1000) / 30) < 1e-6 for m in means), means


def test_bench_files_does_not_favour_the_session_created_last(tmp_path: Path, monkeypatch) -> None:
    """The demo's bench table and ``distill bench --interleave`` (``bench_files``) created their sessions once, in
    the order given, so the last file got the newest session's 1-2.5 % edge. Simulated as in the test above: a
    run takes 0.9 on a fake clock for the newest live runner, 1.0 otherwise. Three copies of one file must come
    out alike, each runner must be closed after its pass, and a closed runner must never run."""
    clock = {"t": 0.0}
    created: list["_Fake"] = []

    class _Fake:
        runtime, providers, threads, meta = "ort-cpu", ["CPUExecutionProvider"], 1, {}

        def __init__(self, path, runtime, threads=None, spin=True, batches=None) -> None:
            self.path, self.closed = Path(path), False
            created.append(self)

        def input_shape(self, batch: int) -> list[int]:
            return [batch, 3, 4, 4]

        def run(self, x) -> None:
            assert not self.closed, "a closed runner ran"
            newest = [c for c in created if not c.closed][-1] is self
            clock["t"] += 0.9 if newest else 1.0

        def profiled(self) -> None:
            return None

        def close(self) -> None:
            self.closed = True

    files = []
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.onnx").write_bytes(b"same")
        files.append(tmp_path / f"{name}.onnx")
    monkeypatch.setattr(edge_runner, "OrtRunner", _Fake)
    monkeypatch.setattr(edge_runner.time, "perf_counter", lambda: clock["t"])
    recs = edge_runner.bench_files(files, "ort-cpu", batches=(1, 2), warmup=1, iters=30)
    assert [(r["model_name"], r["batch"]) for r in recs] == [(f"{n}.onnx", b) for b in (1, 2) for n in "abc"]
    means = [r["latency_ms"]["mean"] for r in recs]  # ms: each file newest in 10 of its 30 runs
    assert all(abs(m - (10 * 900 + 20 * 1000) / 30) < 1e-6 for m in means), means
    assert [c.path.name for c in created] == ["a.onnx", "b.onnx", "c.onnx", "b.onnx", "c.onnx", "a.onnx",
                                              "c.onnx", "a.onnx", "b.onnx"]  # rotated creation, one pass each
    assert all(c.closed for c in created)
    assert all(r["iters"] == 30 for r in recs)
    # TensorRT engines are deserialized once per file and timed in one pass (the effect is ONNX Runtime's)
    created.clear()
    monkeypatch.setattr(edge_runner, "open_runner", lambda m, runtime, threads=None: _Fake(m, runtime, threads))
    recs = edge_runner.bench_files(files, "tensorrt", batches=(1,), warmup=1, iters=6)
    assert [c.path.name for c in created] == ["a.onnx", "b.onnx", "c.onnx"] and all(c.closed for c in created)
    assert [round(r["latency_ms"]["mean"], 6) for r in recs] == [1000.0, 1000.0, 900.0]  # the lean, kept there


def test_cpu_info_moves_the_flags_named_hidden_out_of_flags(monkeypatch) -> None:
    from distill.bench.edge_runner import HIDDEN_FLAGS_ENV, cpu_info

    monkeypatch.delenv(HIDDEN_FLAGS_ENV, raising=False)  # (set when the suite itself runs under scripts/as_avx2.sh)
    seen = cpu_info()["flags"]
    if not seen:
        pytest.skip("this CPU lists none of the SIMD flags cpu_info records")
    monkeypatch.setenv(HIDDEN_FLAGS_ENV, f"{seen[0]} not_a_flag")
    cpu = cpu_info()
    assert seen[0] not in cpu["flags"] and cpu["hidden_flags"] == [seen[0]] and cpu["flags"] == seen[1:]


def test_the_ratio_interval_is_the_sign_tests_order_statistics() -> None:
    """20 rounds: the median's 95 % interval runs from the 6th to the 15th smallest ratio (P(Bin(20, 1/2) <= 5) =
    0.0207 per side); under 6 rounds no rank gives 95 %, so the whole range."""
    from distill.bench.compare import ratio_interval

    ratios = [0.01 * k for k in range(1, 21)]
    median, low, high = ratio_interval([2.0] * 20, [2 * r for r in reversed(ratios)])
    assert (round(median, 6), round(low, 6), round(high, 6)) == (0.105, 0.06, 0.15)
    assert ratio_interval([1.0] * 5, [0.5, 0.9, 0.7, 0.8, 0.6]) == (0.7, 0.5, 0.9)
