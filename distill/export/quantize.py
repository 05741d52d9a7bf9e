"""Static int8 post-training quantization (QDQ) with onnxruntime.quantization, one flavour per runtime.

Which int8 graph is fast depends on who runs it:

- ``ort-cpu``: uint8 activations (asymmetric) x int8 weights (symmetric, per channel). This is
  the operand pair onnxruntime's CPU kernels (MLAS) are built for: on an AVX-512-VNNI CPU a
  resnet18 ran at 0.36x fp32 this way, but 1.2x *slower* than fp32 with int8 activations.
  On x86 CPUs without VNNI (AVX2) pairs of u8 x s8 products saturate int16 (VPMADDUBSW) and the
  file computes another model there; ``reduce_range`` (7-bit weights, ``distill export``'s default)
  avoids it, for ~0.9 points of disagreement with fp32 (:func:`saturation_risk`).
- ``tensorrt``: int8 activations and weights, both symmetric (zero point 0), per-channel
  weights, no quantized bias: TensorRT's explicit-quantization rules (activations in
  [-128, 127], weights in [-127, 127], zero point 0; it fuses bias itself in higher precision).

Both are calibrated from the same tensor ranges (:func:`calibrate` writes onnxruntime's
calibration cache once; every flavour and fallback variant reads it, so each extra variant
costs a quantization pass, not a calibration).
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from onnxruntime.quantization import (
    CalibrationMethod,
    QuantFormat,
    QuantType,
    TensorData,
    TensorsData,
    create_calibrator,
    quantize_static,
    save_tensors_data,
)
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
from onnxruntime.quantization.shape_inference import quant_pre_process

from distill.errors import DistillError
from distill.export.int8_graph import int8_friendly
from distill.export.ort_weights import per_tensor_weights
from distill.export.qdq_graph import REDUCED_WEIGHTS

COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class Int8Flavour:
    """How to quantize for one target runtime."""

    name: str
    target_runtime: str
    activation_type: str  # onnxruntime.quantization.QuantType member name
    weight_type: str
    extra_options: dict[str, Any] = field(default_factory=dict)
    reduce_range: bool = False
    note: str = ""

    @property
    def activation_symmetric(self) -> bool:
        return bool(self.extra_options.get("ActivationSymmetric", False))

    def describe(self) -> dict[str, Any]:
        return {"flavour": self.name, "target_runtime": self.target_runtime, "format": "QDQ",
                "activation_type": self.activation_type, "weight_type": self.weight_type,
                "activation_symmetric": self.activation_symmetric,
                "weight_symmetric": bool(self.extra_options.get("WeightSymmetric", True)),
                "per_channel": True, "reduce_range": self.reduce_range,
                "quantize_bias": bool(self.extra_options.get("QuantizeBias", True)), "note": self.note}


FLAVOURS: dict[str, Int8Flavour] = {
    # 7-bit weights, as `distill export` writes by default, so that code taking the flavour from here (QAD, the tests,
    # the benchmarks) computes alike on x86 CPUs with and without VNNI; with_weight_range(..., False) for 8-bit
    "ort-cpu": Int8Flavour(
        "ort-cpu", "onnxruntime-cpu", "QUInt8", "QInt8", {"WeightSymmetric": True}, reduce_range=True,
        note="u8 activations x s8 weights: the operand pair onnxruntime's CPU int8 kernels are fast at"),
    "tensorrt": Int8Flavour(
        "tensorrt", "tensorrt", "QInt8", "QInt8",
        {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        note="symmetric s8 activations and weights, zero point 0, float bias: TensorRT explicit quantization; "
             "slow on onnxruntime CPU, build an engine on the device"),
}
INT8_FLAVOUR_CHOICES = (*FLAVOURS, "both")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def with_weight_range(flavour: Int8Flavour, reduce_range: bool) -> Int8Flavour:
    """``flavour`` with 7-bit weights (``reduce_range``) or 8-bit ones; ort-cpu only (TensorRT's int8 is exact)."""
    return replace(flavour, reduce_range=reduce_range) if flavour.name == "ort-cpu" else flavour


def flavours_for(choice: str) -> list[Int8Flavour]:
    """``ort-cpu`` | ``tensorrt`` | ``both`` -> flavours."""
    if choice == "both":
        return [FLAVOURS["ort-cpu"], FLAVOURS["tensorrt"]]
    if choice not in FLAVOURS:
        raise DistillError(f"int8 flavour must be one of {', '.join(INT8_FLAVOUR_CHOICES)}; got '{choice}'")
    return [FLAVOURS[choice]]


def calibration_method(name: str) -> CalibrationMethod:
    table = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}
    if name not in table:
        raise DistillError(f"calibration method must be one of {', '.join(table)}; got '{name}'")
    return table[name]


def prepare(fp32_path: str | Path, out_path: str | Path, int8_rewrites: bool = True) -> Path:
    """onnxruntime's ``quant_pre_process`` (shape inference + graph optimization), with every
    node given a unique name so layers can be excluded by name, then (``int8_rewrites``) the same function
    rewritten so that onnxruntime runs more of it in int8 (:func:`distill.export.int8_graph.int8_friendly`:
    squeeze-excite's mean and gate; off only to measure what they change, benchmarks/int8_islands.py)."""
    out_path = Path(out_path)
    quant_pre_process(str(fp32_path), str(out_path))
    model = onnx.load(str(out_path))
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)
    if int8_rewrites:
        int8_friendly(model)
    onnx.save(model, str(out_path))
    return out_path


def compute_nodes(model: str | Path | onnx.ModelProto) -> list[dict[str, str]]:
    """Conv/Gemm/MatMul nodes (the layers int8 speeds up, and the fallback candidates), in graph order."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    return [{"node": n.name, "op_type": n.op_type} for n in model.graph.node if n.op_type in COMPUTE_OPS]


# onnxruntime's own defaults for entropy (128 histogram bins, 128 quantized bins) leave the KL
# search a single candidate, the full range: "entropy" would silently equal minmax.
_CALIBRATOR_OPTIONS: dict[str, dict[str, Any]] = {
    "minmax": {},
    "entropy": {"num_bins": 512, "num_quantized_bins": 128},
    "percentile": {"num_bins": 2048, "percentile": 99.99},
}


def calibrate(prepared: str | Path, reader: Any, method: str, cache_path: str | Path) -> Path:
    """Collect activation ranges with ``method`` once; write them as onnxruntime's calibration cache.

    Every :func:`quantize` call (each flavour, each fallback variant) then reads this cache.
    entropy and percentile ranges are clipped to the observed min/max (a MinMax pass over the
    same images): onnxruntime's entropy thresholds are symmetric around 0, which for a ReLU
    output would spend half of the uint8 range on values that never occur.
    """
    ops = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))  # what quantize_static calibrates

    def run(name: str) -> Any:
        with tempfile.TemporaryDirectory(prefix="calib-") as tmp, contextlib.redirect_stdout(io.StringIO()):
            cal = create_calibrator(Path(prepared), ops, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                    calibrate_method=calibration_method(name), extra_options=_CALIBRATOR_OPTIONS[name])
            reader.rewind()
            cal.collect_data(reader)
            return cal.compute_data()

    data = run("minmax")
    if method != "minmax":
        observed, ranges = data, run(method)
        clipped = {}
        for name, td in ranges.items():
            lo, hi = td.range_value
            if name in observed:
                o_lo, o_hi = observed[name].range_value
                lo, hi = np.maximum(lo, o_lo).astype(np.float32), np.minimum(hi, o_hi).astype(np.float32)
            clipped[name] = TensorData(lowest=np.asarray(lo, np.float32), highest=np.asarray(hi, np.float32))
        data = TensorsData(calibration_method(method), clipped)
    cache_path = Path(cache_path)
    save_tensors_data(data, cache_path)
    return cache_path


def quantize(prepared: str | Path, out_path: str | Path, flavour: Int8Flavour, cache_path: str | Path,
             method: str = "minmax", nodes_to_exclude: list[str] | None = None) -> Path:
    """``quantize_static`` in QDQ format, per-channel weights, for ``flavour``.

    Args:
        prepared: output of :func:`prepare`.
        out_path: the int8 ``.onnx`` to write.
        flavour: target-runtime recipe (see :data:`FLAVOURS`).
        cache_path: the ranges written by :func:`calibrate` for this ``prepared`` model.
        method: the calibration method the cache was made with.
        nodes_to_exclude: layers kept in float (fallback). ort-cpu: those between int8 layers get the per-tensor
            int8 weights onnxruntime would give them at load (:mod:`distill.export.ort_weights`).
    """
    out_path = Path(out_path)
    # quantize_static logs a warning per skipped tensor through the root logger; keep the CLI quiet
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_static(
            str(prepared), str(out_path), None, quant_format=QuantFormat.QDQ, per_channel=True,
            reduce_range=flavour.reduce_range, activation_type=QuantType[flavour.activation_type],
            weight_type=QuantType[flavour.weight_type], nodes_to_exclude=list(nodes_to_exclude or []),
            calibrate_method=calibration_method(method), extra_options=dict(flavour.extra_options),
            calibration_cache_path=str(cache_path))
    finally:
        root.setLevel(level)
    if nodes_to_exclude and flavour.name == "ort-cpu":
        model = onnx.load(str(out_path))
        if per_tensor_weights(model, flavour.reduce_range):
            onnx.save(model, str(out_path))
    return out_path


# --------------------------------------------------------------------------- inspection
def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def qdq_report(model: str | Path | onnx.ModelProto) -> list[dict[str, Any]]:
    """For each Conv/Gemm/MatMul: is each of its inputs (activation, weight) fed by a
    DequantizeLinear, and with what zero-point type and values? (used to check flavours)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    inits = _initializers(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    rows = []
    for n in model.graph.node:
        if n.op_type not in COMPUTE_OPS:
            continue
        row: dict[str, Any] = {"node": n.name, "op_type": n.op_type, "inputs": []}
        for idx, name in enumerate(n.input[:2]):
            dq = producer.get(name)
            info: dict[str, Any] = {"role": "activation" if idx == 0 else "weight", "dequantized": False}
            if dq is not None and dq.op_type == "DequantizeLinear":
                info["dequantized"] = True
                zp_name = dq.input[2] if len(dq.input) > 2 else ""
                q_input = dq.input[0]
                dtype = None
                zero_points: list[int] = []
                if zp_name in inits:
                    zp = numpy_helper.to_array(inits[zp_name])
                    dtype, zero_points = str(zp.dtype), sorted(set(int(v) for v in zp.ravel()))
                elif q_input in inits:
                    dtype = str(numpy_helper.to_array(inits[q_input]).dtype)
                info.update({"zero_point_dtype": dtype, "zero_points": zero_points})
                if q_input in inits:  # a weight stored quantized: its integer range
                    q = numpy_helper.to_array(inits[q_input])
                    info["int_range"] = [int(q.min()), int(q.max())] if q.size else [0, 0]
            row["inputs"].append(info)
        rows.append(row)
    return rows


SATURATION_FREE_WEIGHT = REDUCED_WEIGHTS[1]  # |w| beyond it saturates on x86 without VNNI (qdq_graph.REDUCED_WEIGHTS)


def saturation_risk(model: str | Path | onnx.ModelProto) -> list[str]:
    """Layers of an int8 file whose u8 x s8 products can saturate on x86 CPUs without VNNI: a uint8 activation and
    int8 weights beyond [-64, 64]. There onnxruntime computes another model than on a VNNI CPU (the demo student:
    16.9 % of test images flip against fp32 instead of 6.9 %; benchmarks/RESULTS.md, "int8 on x86 CPUs without
    VNNI"); ``reduce_range`` writes weights that cannot. Empty: every x86 CPU computes the file alike."""
    risky = []
    for row in qdq_report(model):
        if len(row["inputs"]) < 2:
            continue
        act, weight = row["inputs"]
        if act.get("zero_point_dtype") == "uint8" and weight.get("zero_point_dtype") == "int8" and \
                max(abs(v) for v in weight.get("int_range", [0, 0])) > SATURATION_FREE_WEIGHT:
            risky.append(row["node"])
    return risky


def tensorrt_qdq_problems(model: str | Path | onnx.ModelProto, kept_float: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Where a graph breaks TensorRT's explicit-quantization rules (empty list = fine):
    every Conv/Gemm/MatMul activation and weight input (except layers deliberately ``kept_float``)
    must come from a DequantizeLinear with int8 zero point 0, and no DequantizeLinear may take
    int32 (quantized bias)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    problems = []
    for row in qdq_report(model):
        if row["node"] in kept_float:
            continue
        for inp in row["inputs"]:
            where = f"{row['op_type']} '{row['node']}' {inp['role']}"
            if not inp["dequantized"]:
                problems.append(f"{where}: not fed by DequantizeLinear")
            elif inp["zero_point_dtype"] != "int8":
                problems.append(f"{where}: zero point type {inp['zero_point_dtype']}, want int8")
            elif any(z != 0 for z in inp["zero_points"]):
                problems.append(f"{where}: zero point {inp['zero_points']}, want 0")
            elif inp["role"] == "weight" and inp.get("int_range", [0, 0])[0] < -127:
                problems.append(f"{where}: int8 weights reach {inp['int_range'][0]}, TensorRT wants [-127, 127]")
    inits = _initializers(model)
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].data_type == onnx.TensorProto.INT32:
            problems.append(f"DequantizeLinear '{n.name}': int32 input (quantized bias), unsupported by TensorRT")
    return problems


# op types onnxruntime runs on int8 data or only moves/reshapes: everything else in the optimized graph computes in float
_INT8_OR_LAYOUT = {"QuantizeLinear", "DequantizeLinear", "QGemm", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
                   "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Shape", "Gather", "Concat", "Identity",
                   "ReorderInput", "ReorderOutput", "Constant", "MaxPool", "NhwcMaxPool"}


def float_ops_as_run(model: str | Path, work_dir: str | Path) -> dict[str, int]:
    """Op types (with counts) that onnxruntime CPU still computes in float in an int8 model, read
    from the graph it actually runs (all optimizations on: QDQ pairs fused into QLinear* kernels).
    ``QLinear*``, Q/DQ and layout ops are int8 or free; what remains (e.g. hardswish's HardSigmoid,
    squeeze-excite's ReduceMean) is a float island with a Q/DQ pair around it."""
    optimized = Path(work_dir) / f"{Path(model).stem}.as-run.onnx"
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(optimized)
    opts.log_severity_level = 3  # its warning that the NCHWc graph is machine-specific: we only count op types
    ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    counts: dict[str, int] = {}
    for n in onnx.load(str(optimized)).graph.node:
        if n.op_type.startswith("QLinear") or n.op_type in _INT8_OR_LAYOUT:
            continue
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return dict(sorted(counts.items()))
