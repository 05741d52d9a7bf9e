"""distill.export.ort_weights: a float layer between int8 layers gets, in the file, the per-tensor int8 weights
onnxruntime's WeightBiasQuantization would give it at load, bit for bit, so every onnxruntime runs the same model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from distill.export.ort_weights import per_tensor_weights

SCALE, ZERO = np.float32(0.05), np.uint8(128)


def _layer_model(op: str) -> onnx.ModelProto:
    """x -> Q -> DQ -> op (float weight with one output channel 40x the others, float bias) -> Q -> DQ -> y: a layer
    the fallback kept in float between int8 layers, as quantize_static writes it."""
    rng = np.random.default_rng(0)
    if op == "Conv":
        x_shape, y_shape, weight = [2, 4, 6, 6], [2, 6, 6, 6], rng.normal(0, 0.1, (6, 4, 3, 3)).astype(np.float32)
        node = helper.make_node("Conv", ["x_dq", "w", "b"], ["y"], name="/kept/Conv", pads=[1, 1, 1, 1])
    else:
        x_shape, y_shape, weight = [2, 64], [2, 6], rng.normal(0, 0.1, (6, 64)).astype(np.float32)
        node = helper.make_node("Gemm", ["x_dq", "w", "b"], ["y"], name="/kept/Gemm", transB=1)
    weight[0] *= 40.0  # a per-tensor grid crushes the other channels
    inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(rng.normal(0, 0.1, 6).astype(np.float32), "b"),
             numpy_helper.from_array(np.array(SCALE), "s"), numpy_helper.from_array(np.array(ZERO), "z"),
             numpy_helper.from_array(np.array(np.float32(0.02)), "so"), numpy_helper.from_array(np.array(ZERO), "zo")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["x_q"], name="x_q"),
             helper.make_node("DequantizeLinear", ["x_q", "s", "z"], ["x_dq"], name="x_dq"), node,
             helper.make_node("QuantizeLinear", ["y", "so", "zo"], ["y_q"], name="y_q"),
             helper.make_node("DequantizeLinear", ["y_q", "so", "zo"], ["out"], name="out_dq")]
    graph = helper.make_graph(nodes, "kept", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, y_shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray, tmp_path: Path, name: str, **session) -> tuple[np.ndarray, onnx.GraphProto]:
    """The model's output and the graph onnxruntime made of it (basic level, where the transformer runs)."""
    path, optimized = tmp_path / f"{name}.onnx", tmp_path / f"{name}.basic.onnx"
    onnx.save(model, str(path))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(optimized)
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"], **session)
    return s.run(None, {"x": x})[0], onnx.load(str(optimized)).graph


def _weight_is_quantized(graph: onnx.GraphProto, layer: str) -> bool:
    producer = {o: n for n in graph.node for o in n.output}
    node = next(n for n in graph.node if n.name == layer)
    return node.input[1] in producer and producer[node.input[1]].op_type == "DequantizeLinear"


def test_the_file_holds_what_onnxruntime_runs_and_runs_it_without_the_transformer_too(tmp_path):
    for op in ("Conv", "Gemm"):
        model = _layer_model(op)
        x = np.random.default_rng(1).normal(0, 1, [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
                                            ).astype(np.float32)
        # as quantize_static writes it: onnxruntime quantizes the float weight per tensor when it loads the file...
        runs, graph = _run(model, x, tmp_path, f"{op}-as-written")
        assert _weight_is_quantized(graph, f"/kept/{op}")
        # ...and an onnxruntime without that transformer runs it in float: another model (the outlier channel)
        floated, _ = _run(model, x, tmp_path, f"{op}-no-transformer", disabled_optimizers=["WeightBiasQuantization"])
        assert float(np.abs(runs - floated).max()) > 0.1
        assert per_tensor_weights(model) == [f"/kept/{op}"]
        written, graph = _run(model, x, tmp_path, f"{op}-written")
        np.testing.assert_array_equal(written, runs)  # the same integers, scales and int32 bias as onnxruntime's
        without, _ = _run(model, x, tmp_path, f"{op}-written-no-transformer",
                          disabled_optimizers=["WeightBiasQuantization"])
        np.testing.assert_array_equal(without, runs)  # the same model with or without the transformer
        inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        assert inits[f"/kept/{op}/weight_int8"].dtype == np.int8 and inits[f"/kept/{op}/weight_scale"].size == 1
        assert inits[f"/kept/{op}/bias_int32"].dtype == np.int32
        assert "w" not in inits and "b" not in inits  # the float weight and bias are gone


def test_reduce_range_writes_7_bit_weights_that_onnxruntime_runs_as_written(tmp_path):
    """--reduce-range: onnxruntime would quantize the layer at load on [-128, 127] (saturating u8 x s8 pairs on x86
    CPUs without VNNI); the file fixes a [-64, 64] grid instead, which every onnxruntime runs as written."""
    from distill.export.ort_weights import ort_weight_grid

    for op in ("Conv", "Gemm"):
        model = _layer_model(op)
        w = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w"))
        x = np.random.default_rng(1).normal(0, 1, [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
                                            ).astype(np.float32)
        full, _ = _run(model, x, tmp_path, f"{op}-full")
        assert per_tensor_weights(model, reduce_range=True) == [f"/kept/{op}"]
        inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        q, scale, zero = (inits[f"/kept/{op}/weight_{k}"] for k in ("int8", "scale", "zero_point"))
        assert int(q.min()) >= -64 and int(q.max()) <= 64 and int(q.max()) - int(q.min()) >= 120  # the 7-bit grid, used
        assert float(np.abs((q.astype(np.float32) - zero) * scale - w).max()) <= float(scale) / 2 + 1e-6
        reduced, _ = _run(model, x, tmp_path, f"{op}-reduced")
        without, _ = _run(model, x, tmp_path, f"{op}-reduced-no-transformer",
                          disabled_optimizers=["WeightBiasQuantization"])
        np.testing.assert_array_equal(without, reduced)  # runs as written: nothing re-quantizes it at load
        assert float(np.abs(reduced - full).max()) > 0  # not the 8-bit grid onnxruntime would have chosen
    w = np.random.default_rng(2).normal(0, 1, (8, 3)).astype(np.float32)
    q, scale, zero = ort_weight_grid(w, reduce_range=True)
    assert -64 <= int(zero) <= 64 and float(np.abs((q.astype(np.float32) - zero) * scale - w).max()) <= scale / 2 + 1e-6


def test_layers_onnxruntime_leaves_float_are_left_float():
    # an int8 layer: its weight comes from a DequantizeLinear
    model = _layer_model("Conv")
    w = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w"))
    model.graph.initializer.extend([numpy_helper.from_array(np.round(w / 0.01).astype(np.int8), "w_q"),
                                    numpy_helper.from_array(np.array(np.float32(0.01)), "w_s")])
    model.graph.node.insert(0, helper.make_node("DequantizeLinear", ["w_q", "w_s"], ["w_dq"], name="w_dq"))
    next(n for n in model.graph.node if n.op_type == "Conv").input[1] = "w_dq"
    assert per_tensor_weights(model) == []
    # a layer on the float image (no DequantizeLinear before it)
    plain = _layer_model("Conv")
    next(n for n in plain.graph.node if n.op_type == "Conv").input[0] = "x"
    assert per_tensor_weights(plain) == []
    # a layer writing float (a head writing the logits): no QuantizeLinear after it
    head = _layer_model("Gemm")
    nodes = [n for n in head.graph.node if n.name not in ("y_q", "out_dq")]
    del head.graph.node[:]
    head.graph.node.extend(nodes)
    head.graph.output[0].name = "y"
    assert per_tensor_weights(head) == []
    # a second pass finds nothing left to do
    again = _layer_model("Conv")
    assert len(per_tensor_weights(again)) == 1 and per_tensor_weights(again) == []


def test_a_layer_writing_float_is_left_float_by_onnxruntime_too(tmp_path):
    """The rule above mirrors onnxruntime's: it does not quantize a layer whose output is not quantized."""
    head = _layer_model("Gemm")
    nodes = [n for n in head.graph.node if n.name not in ("y_q", "out_dq")]
    del head.graph.node[:]
    head.graph.node.extend(nodes)
    head.graph.output[0].name = "y"
    _, graph = _run(head, np.ones((2, 64), np.float32), tmp_path, "head")
    assert not _weight_is_quantized(graph, "/kept/Gemm")


def test_a_nameless_layer_gets_names_from_its_output_and_the_model_stays_valid():
    model = _layer_model("Conv")
    next(n for n in model.graph.node if n.op_type == "Conv").name = ""
    assert per_tensor_weights(model) == ["y"]
    onnx.checker.check_model(model)
    assert [n.name for n in model.graph.node].count("y/weight_dq") == 1


def test_the_float_fallback_benchmark_exports_each_run_three_ways(run_ckpt, tiny_root, tmp_path, monkeypatch, capsys):
    """benchmarks/float_fallback.py re-exports a run whose export kept a layer in float with that export's settings:
    per-tensor int8 weights there (this code), a per-axis input instead (float), no fallback (all-int8); it scores
    the files on the whole test split."""
    import synthetic

    import distill.export.int8_step as int8_step
    from distill.export import ExportConfig, export_checkpoint
    from distill.export.fallback import FallbackResult
    from tests.test_benchmarks import _script

    def keep_one(quantize_excluding, ranked, measure, baseline, max_drop, max_layers, **kw):
        node = next(c["node"] for c in ranked if c["op_type"] == "Conv" and "/layer" in c["node"])  # reads int8
        path = quantize_excluding([node])
        return FallbackResult(kept_float=[node], satisfied=True, disagreement_pts=measure(path)), path

    monkeypatch.setattr(int8_step, "greedy_fallback", keep_one)
    edge, tag = synthetic.edge_out(run_ckpt, tmp_path / "edge")
    export_checkpoint(run_ckpt, edge / "export" / tag, ExportConfig(
        precisions=("int8",), data_root=str(tiny_root), int8_flavour="ort-cpu", max_drop=-100.0,
        max_fallback_layers=1, exporter="torchscript", eval_count=12, calib_count=32, latency_iters=3,
        sensitivity_count=16, threads=1), log=lambda s: None)
    bench = _script("float_fallback")
    monkeypatch.setattr("sys.argv", ["float_fallback.py", str(edge), "--out", str(tmp_path / "ff")])
    bench.main()
    printed = capsys.readouterr().out
    for arm, per_axis, per_tensor in (("per-tensor", 0, 1), ("float", 1, 0), ("all-int8", 0, 0)):
        graph = onnx.load(str(tmp_path / "ff" / arm / tag / "model.int8-ort-cpu.onnx")).graph
        assert sum(n.name.endswith("/float_input_dq") for n in graph.node) == per_axis, arm
        assert sum(n.name.endswith("/weight_dq") for n in graph.node) == per_tensor, arm
    assert f"| {tag} | " in printed and "paired t-test" in printed
