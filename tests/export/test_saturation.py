"""int8 on x86 CPUs without VNNI: onnxruntime's u8 x s8 kernels there (VPMADDUBSW) add two products into a saturating
int16, so 8-bit weights (|w| up to 127) compute another model than on a VNNI CPU. ``reduce_range`` writes weights in
[-64, 64] (255 x 64 x 2 fits), the float fallback's per-tensor layers and QAD's file included, and export.json says
whether a file is safe. The design is checked here on every CPU (the integers in the files); where QEMU's user-mode
emulator is installed, the files also run on an emulated AVX2 CPU (Haswell) against their exact result."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from distill.export import ExportConfig, export_checkpoint
from distill.export.quantize import SATURATION_FREE_WEIGHT, qdq_report, saturation_risk
from tests.cpu_kinds import OTHER_CPUS
from tests.test_benchmarks import _script


def _int8_weight_ranges(path: Path) -> dict[str, tuple[int, int]]:
    return {r["node"]: tuple(r["inputs"][1]["int_range"]) for r in qdq_report(path)
            if len(r["inputs"]) > 1 and "int_range" in r["inputs"][1]}


def _config(tiny_root: Path, **over) -> ExportConfig:
    """An ort-cpu export whose fallback must run (negative max_drop) and keep a layer or two."""
    return ExportConfig(precisions=("int8",), data_root=str(tiny_root), int8_flavour="ort-cpu", max_drop=-100.0,
                        max_fallback_layers=2, exporter="torchscript", eval_count=12, calib_count=32, latency_iters=3,
                        sensitivity_count=16, threads=1, **over)


def _kept_between_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the fallback to keep one layer that reads and writes int8 (it gets per-tensor weights in the file)."""
    import distill.export.int8_step as int8_step
    from distill.export.fallback import FallbackResult

    def keep_one(quantize_excluding, ranked, measure, baseline, max_drop, max_layers, **kw):
        node = next(c["node"] for c in ranked if c["op_type"] == "Conv" and "/layer" in c["node"])  # not the stem
        path = quantize_excluding([node])
        return FallbackResult(kept_float=[node], satisfied=True, disagreement_pts=measure(path)), path

    monkeypatch.setattr(int8_step, "greedy_fallback", keep_one)


def test_reduce_range_exports_weights_no_x86_cpu_saturates_on(run_ckpt: Path, tiny_root: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _kept_between_int8(monkeypatch)
    lines: list[str] = []
    full = export_checkpoint(run_ckpt, tmp_path / "full", _config(tiny_root, reduce_range=False), log=lines.append)
    model = next(m for m in full.models if m.precision == "int8")
    ranges = _int8_weight_ranges(tmp_path / "full" / model.file)
    assert max(max(abs(lo), abs(hi)) for lo, hi in ranges.values()) > SATURATION_FREE_WEIGHT  # 8-bit: at risk
    at_risk = model.model_extra["x86_without_vnni"]
    assert not at_risk["exact"] and at_risk["layers_at_risk"] == len(saturation_risk(tmp_path / "full" / model.file))
    assert any("x86 CPUs without VNNI" in w and "--reduce-range" in w for w in full.warnings)

    assert ExportConfig().reduce_range  # the default: a file every x86 CPU runs alike
    reduced = export_checkpoint(run_ckpt, tmp_path / "reduced", _config(tiny_root), log=lines.append)
    model = next(m for m in reduced.models if m.precision == "int8")
    ranges = _int8_weight_ranges(tmp_path / "reduced" / model.file)
    kept = model.fallback["kept_float"][0]
    assert kept in ranges  # the kept layer between int8 layers has its per-tensor int8 weights in the file...
    assert all(-SATURATION_FREE_WEIGHT <= lo <= hi <= SATURATION_FREE_WEIGHT for lo, hi in ranges.values()), ranges
    assert model.model_extra["x86_without_vnni"] == {"exact": True, "layers_at_risk": 0, "examples": []}
    assert model.model_extra["quantization"]["reduce_range"] is True
    assert not any("x86 CPUs without VNNI" in w for w in reduced.warnings)


def test_saturation_risk_needs_u8_activations_and_wide_int8_weights() -> None:
    def conv_model(act_zp: np.ndarray, weight: np.ndarray) -> onnx.ModelProto:
        inits = [numpy_helper.from_array(np.array(np.float32(0.1)), "s"), numpy_helper.from_array(act_zp, "z"),
                 numpy_helper.from_array(weight, "w_q"), numpy_helper.from_array(np.array(np.float32(0.01)), "w_s"),
                 numpy_helper.from_array(np.array(np.int8(0)), "w_z")]
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
                 helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
                 helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], name="w_dq"),
                 helper.make_node("Conv", ["xd", "w"], ["y"], name="conv")]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 2, 2])], inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])

    wide = np.full((3, 2, 3, 3), 65, np.int8)
    assert saturation_risk(conv_model(np.array(np.uint8(128)), wide)) == ["conv"]
    assert saturation_risk(conv_model(np.array(np.uint8(128)), wide - 1)) == []  # |w| <= 64: safe
    assert saturation_risk(conv_model(np.array(np.int8(0)), wide)) == []  # s8 x s8 (tensorrt flavour): no VPMADDUBSW


def test_qad_writes_the_weight_range_of_the_export_it_starts_from(run_ckpt: Path, tiny_root: Path,
                                                                  tmp_path: Path) -> None:
    from distill.cli import main
    from distill.export.qad_config import QADRecord

    export_checkpoint(run_ckpt, tmp_path / "exp", ExportConfig(
        precisions=("int8",), data_root=str(tiny_root), exporter="torchscript", eval_count=8, calib_count=32,
        latency_iters=2, threads=1, max_fallback_layers=0, reduce_range=True), log=lambda s: None)
    common = [str(run_ckpt), "--export", str(tmp_path / "exp"), "--epochs", "1", "--calib-count", "32",
              "--eval-count", "8", "--holdout-count", "16", "--quiet"]
    assert main(["qad", *common, "--out", str(tmp_path / "q")]) == 0
    record = QADRecord.read(tmp_path / "q")
    ranges = _int8_weight_ranges(tmp_path / "q" / record.qad_file)
    assert ranges and all(-SATURATION_FREE_WEIGHT <= lo <= hi <= SATURATION_FREE_WEIGHT for lo, hi in ranges.values())
    assert record.qdq_check["x86_without_vnni_at_risk"] == 0
    assert record.torch_vs_onnx["top1_agreement"] >= 0.9  # the fake-quant student computed the 7-bit weights too
    assert main(["qad", *common, "--out", str(tmp_path / "q8"), "--no-reduce-range"]) == 0
    record = QADRecord.read(tmp_path / "q8")
    assert max(max(abs(lo), abs(hi)) for lo, hi in _int8_weight_ranges(tmp_path / "q8" / record.qad_file).values()) \
        > SATURATION_FREE_WEIGHT
    assert record.qdq_check["x86_without_vnni_at_risk"] > 0
    # the benchmarks rebuild a QAD folder with its file's weight range, not the registry's default
    file_flavour = _script("qad_arms").file_flavour
    assert [file_flavour(QADRecord.read(tmp_path / d), tmp_path / d).reduce_range for d in ("q", "q8")] == [True, False]


_EMULATED = """
import sys, numpy as np, onnxruntime as ort
x = np.load(sys.argv[1])
for path in sys.argv[2:]:
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    np.save(path + ".out.npy", s.run(None, {"x": x})[0])
"""


@pytest.mark.parametrize("cpu", [pytest.param(k, marks=pytest.mark.skipif(why is not None, reason=str(why)))
                                 for k, (_, why) in OTHER_CPUS.items()])
def test_on_an_avx2_cpu_only_the_reduced_range_file_computes_its_exact_result(cpu: str, tmp_path: Path) -> None:
    """One conv quantized both ways from a float model whose products saturate int16 pairs: on an AVX2 CPU without
    VNNI the 8-bit file is far from its own exact result (the Q/DQ graph run in float), the 7-bit one is not."""
    from distill.export.images import ImageCalibrationReader, ImageSet
    from distill.export.quantize import FLAVOURS, calibrate, prepare, quantize, with_weight_range

    rng = np.random.default_rng(0)
    weight = np.abs(rng.normal(1.0, 0.1, (8, 3, 3, 3))).astype(np.float32)  # all positive: pairs add up
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8, 8, 8])],
                              [numpy_helper.from_array(weight, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "f.onnx"))
    images = ImageSet(rng.integers(200, 256, (16, 8, 8, 3)).astype(np.uint8), np.zeros(16, np.int64),
                      np.array(["d"] * 16), (0.0,) * 3, (1.0 / 255,) * 3, [])  # inputs 200-255: u8 near the top
    prepared = prepare(tmp_path / "f.onnx", tmp_path / "p.onnx", int8_rewrites=False)
    ranges = calibrate(prepared, ImageCalibrationReader(images, "x"), "minmax", tmp_path / "r.json")
    files = {rr: quantize(prepared, tmp_path / f"q{int(rr)}.onnx", with_weight_range(FLAVOURS["ort-cpu"], rr), ranges)
             for rr in (False, True)}
    x = next(images.batches(16))
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "run.py").write_text(_EMULATED)
    subprocess.run([*OTHER_CPUS[cpu][0], sys.executable, str(tmp_path / "run.py"), str(tmp_path / "x.npy"),
                    *map(str, files.values())], check=True, capture_output=True)
    import onnxruntime as ort

    for rr, path in files.items():
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # Q/DQ in float: exact products
        exact = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        emulated = np.load(f"{path}.out.npy")
        error = float(np.abs(emulated - exact).max() / np.abs(exact).max())
        assert (error < 0.02) if rr else (error > 0.2), (rr, error)


@pytest.mark.parametrize("cpu", [pytest.param(cpu, marks=pytest.mark.skipif(OTHER_CPUS[k][1] is not None,
                                                                        reason=str(OTHER_CPUS[k][1])))
                                 for cpu, k in (("Haswell", "qemu-haswell"), ("as-avx2", "as-avx2"))])
def test_the_cpu_kinds_benchmark_scores_an_export_here_and_on_the_other_cpu(cpu: str, export_dir: Path, monkeypatch,
                                                                           capsys) -> None:
    bench = _script("int8_cpu_kinds")
    monkeypatch.setattr(sys, "argv", ["int8_cpu_kinds.py", "--arm", f"default={export_dir}", "--jobs", "1",
                                      "--with-option", "--cpu", cpu])
    bench.main()
    out = capsys.readouterr().out
    assert "onnxruntime 1048544 (saturated)" in out  # the other CPU has no VNNI: the probe's pairs saturate
    row = next(line for line in out.splitlines() if line.startswith(f"| {export_dir.name} |"))
    assert row.count("|") == 5 and "%" in row and "with the option" in row  # run, images, fp32 moved, the arm
    assert f"- default: emulated+option ({cpu}) minus here:" in out


@pytest.mark.skipif(OTHER_CPUS["as-avx2"][1] is not None, reason=str(OTHER_CPUS["as-avx2"][1]))
def test_the_cpu_speed_benchmark_times_an_export_on_both_kinds(export_dir: Path, monkeypatch, capsys) -> None:
    bench = _script("int8_cpu_speed")
    monkeypatch.setattr(sys, "argv", ["int8_cpu_speed.py", "--arm", f"default={export_dir}", "--option", "default",
                                      "--rounds", "1", "--iters", "4"])
    bench.main()
    out = capsys.readouterr().out
    assert "avx2 saturated" in out  # the child under scripts/as_avx2.sh ran onnxruntime's AVX2 kernels
    row = next(line for line in out.splitlines() if line.startswith(f"| {export_dir.name} |"))
    assert row.count("|") == 5 and row.count("**") == 4  # run, fp32 ms, the arm, the arm with the option
    assert "- avx2: default+option minus default, int8/fp32 over 1 runs:" in out
