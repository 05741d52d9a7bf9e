"""Post-processing of torch's QDQ ONNX export into the layout onnxruntime's own PTQ writes.

torch's exporter turns each fake-quant into QuantizeLinear -> DequantizeLinear, weights included
(float weight -> Q -> DQ), with per-tensor scales of shape [1] and shared constants routed through
Identity nodes. :func:`tidy_qdq` bypasses the Identities, makes per-tensor scales and zero points
scalars, stores each weight as its int8 tensor feeding a DequantizeLinear and, when asked, each
Conv/Gemm bias as int32 with scale = input scale x weight scale (onnxruntime's QLinearConv fusion
expects both), and writes each spatial ReduceMean (squeeze-excite's pooling) as GlobalAveragePool, which
onnxruntime runs in int8, as :func:`distill.export.quantize.prepare` does for the PTQ files. No value changes:
the integers are what the QuantizeLinear would compute, the mean is the same mean.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from distill.errors import DistillError
from distill.export.int8_graph import means_to_global_pool

# onnxruntime's reduce_range int8 weights (quant_utils.ONNX_INT_TYPE_REDUCED_RANGE), the one home of the 7-bit range:
# x86 CPUs without VNNI add two u8 x s8 products into a saturating int16 (VPMADDUBSW), and 255 x 64 x 2 = 32,640 fits
REDUCED_WEIGHTS = (-64, 64)


def tidy_qdq(proto: onnx.ModelProto, quantize_bias: bool) -> onnx.ModelProto:
    """All the steps below, in place; returns ``proto``."""
    skip_identities(proto)
    scalar_qparams(proto)
    fold_weight_quantization(proto)
    if quantize_bias:
        quantize_biases(proto)
    means_to_global_pool(proto)
    _name_nodes(proto)
    return proto


def _consts(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs by name."""
    out = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type == "Constant" and n.attribute:
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def quantize_linear(x: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int) -> np.ndarray:
    """ONNX QuantizeLinear on constants (round half to even, saturate to the zero point's type)."""
    shape = [1] * x.ndim
    if scale.ndim == 1 and scale.size > 1:
        shape[axis] = -1
    info = np.iinfo(zp.dtype)
    q = np.rint(x / scale.reshape(shape)) + zp.reshape(shape).astype(np.int64)
    return np.clip(q, info.min, info.max).astype(zp.dtype)


def skip_identities(proto: onnx.ModelProto) -> None:
    """Bypass Identity nodes (torch's exporter routes shared constants such as zero points through them)."""
    graph = proto.graph
    outputs = {o.name for o in graph.output}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity" and n.output[0] not in outputs}

    def source(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    nodes = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for n in nodes:
        for k, name in enumerate(n.input):
            n.input[k] = source(name)
    del graph.node[:]
    graph.node.extend(nodes)


def scalar_qparams(proto: onnx.ModelProto) -> None:
    """Per-tensor scales and zero points as scalars (torch exports them as [1]; onnxruntime's QLinear
    fusions, e.g. QLinearAveragePool, require scalars)."""
    consts, graph = _consts(proto), proto.graph
    made: set[str] = set()
    for n in graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for k in (1, 2):
            name = n.input[k] if len(n.input) > k else ""
            if name in consts and consts[name].size == 1 and consts[name].ndim > 0:
                scalar = f"{name}_scalar"
                if scalar not in made:
                    graph.initializer.append(numpy_helper.from_array(consts[name].reshape(()), scalar))
                    made.add(scalar)
                n.input[k] = scalar
    _drop_unused(proto)


def fold_weight_quantization(proto: onnx.ModelProto) -> int:
    """Replace QuantizeLinear(constant) -> DequantizeLinear by an integer initializer -> DequantizeLinear.

    Returns how many constants were folded (the weights: the graph input's Q nodes are kept).
    """
    consts, graph = _consts(proto), proto.graph
    keep, folded = [], 0
    for n in graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] in consts and all(i in consts for i in n.input[1:]):
            scale, zp = consts[n.input[1]], consts[n.input[2]]
            q = quantize_linear(consts[n.input[0]].astype(np.float32), scale, zp, _axis(n))
            graph.initializer.append(numpy_helper.from_array(q, n.output[0]))
            folded += 1
            continue
        keep.append(n)
    del graph.node[:]
    graph.node.extend(keep)
    _drop_unused(proto)
    return folded


def quantize_biases(proto: onnx.ModelProto) -> int:
    """Conv/Gemm float bias initializers -> int32 (scale = input scale x weight scale) -> DequantizeLinear,
    the layout onnxruntime's PTQ writes and its QLinearConv/QGemm fusion expects. Returns how many."""
    consts, graph = _consts(proto), proto.graph
    producer = {o: n for n in graph.node for o in n.output}
    inits = {t.name for t in graph.initializer}
    added, count = [], 0
    for n in graph.node:
        if n.op_type not in ("Conv", "Gemm") or len(n.input) < 3 or n.input[2] not in inits:
            continue
        dq_x, dq_w = producer.get(n.input[0]), producer.get(n.input[1])
        if not dq_x or not dq_w or dq_x.op_type != dq_w.op_type or dq_x.op_type != "DequantizeLinear":
            continue
        if dq_x.input[1] not in consts or dq_w.input[1] not in consts or consts[dq_x.input[1]].size != 1:
            continue
        bias = consts[n.input[2]].astype(np.float64)
        scale = (float(consts[dq_x.input[1]].reshape(-1)[0]) * consts[dq_w.input[1]].astype(np.float64)).astype(np.float32)
        scale = np.broadcast_to(scale, bias.shape).copy()
        q = np.clip(np.rint(bias / scale), -2**31, 2**31 - 1).astype(np.int32)
        base = f"{n.output[0]}_bias"  # per node: the exporter shares equal constants between layers
        graph.initializer.extend([numpy_helper.from_array(q, f"{base}_quantized"),
                                  numpy_helper.from_array(scale, f"{base}_scale"),
                                  numpy_helper.from_array(np.zeros_like(q), f"{base}_zero_point")])
        added.append(helper.make_node("DequantizeLinear", [f"{base}_quantized", f"{base}_scale", f"{base}_zero_point"],
                                      [f"{base}_dequantized"], name=f"{base}_DequantizeLinear", axis=0))
        n.input[2] = f"{base}_dequantized"
        count += 1
    graph.node.extend(added)
    _topological(proto)
    _drop_unused(proto)
    return count


def _topological(proto: onnx.ModelProto) -> None:
    """Re-order nodes so each comes after its inputs' producers (new DQ nodes were appended)."""
    graph = proto.graph
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise DistillError("QDQ export: the graph has a cycle or a dangling input")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def _drop_unused(proto: onnx.ModelProto) -> None:
    graph = proto.graph
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = [n for n in graph.node if n.op_type != "Constant" or n.output[0] in used]
    del graph.node[:]
    graph.node.extend(nodes)


def _name_nodes(proto: onnx.ModelProto) -> None:
    """Every node a unique name (the fallback and the reports name layers)."""
    seen: set[str] = set()
    for i, n in enumerate(proto.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{i}"
        seen.add(n.name)
