"""What onnxruntime runs a "kept in float" layer between int8 layers as, written into the file.

onnxruntime's ``WeightBiasQuantization`` graph transformer (onnxruntime 1.32; basic optimization level and up)
quantizes, when the session is created, the float weight of a Conv/Gemm/ConvTranspose whose input comes from a
``DequantizeLinear`` with a scalar scale and whose output leads, through nothing but Relu/Clip and without branching,
to a ``QuantizeLinear``: int8 per tensor, asymmetric over [min(w, 0), max(w, 0)], and its float bias to int32 at input
scale x weight scale. The float fallback's layers between int8 layers (``quantize_static``'s ``nodes_to_exclude``)
are exactly that, so on ONNX Runtime CPU they run with a per-tensor int8 weight grid, not in float.

That is a good deal, measured (benchmarks/RESULTS.md, "The float fallback in float"): on 9 trained students the
per-tensor layers were as accurate as truly float ones and faster (int8/fp32 latency 0.87x against float's 0.92x).
But it is the runtime's choice, made at load time, and onnxruntime's choice changed: the transformer came in 1.21
(microsoft/onnxruntime#22969), 1.22 stopped it for layers whose output is not quantized (#24537), and an older
onnxruntime (an older Jetson build, say) runs such a file in float.
:func:`per_tensor_weights` makes the choice in the file instead: it writes those layers' weights and biases as the
transformer would (the same integers, checked against onnxruntime's own result in
tests/export/test_ort_weights.py), so every onnxruntime runs the same model and the file says what it runs. Layers
that read the float image or write float (a head writing the logits) stay float, as onnxruntime leaves them.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from distill.export.qdq_graph import REDUCED_WEIGHTS, quantize_linear

LAYERS = ("Conv", "Gemm", "ConvTranspose")  # the ops the transformer quantizes
PASS_THROUGH = ("Relu", "Clip")  # allowed between such a layer and the QuantizeLinear after it


def ort_weight_grid(weight: np.ndarray, reduce_range: bool = False) -> tuple[np.ndarray, np.float32, np.int8]:
    """(int8 weights, scale, zero point) as onnxruntime's ``GetQuantizationParameter`` + ``QuantizeLinear`` compute
    them: scale = (max(w, 0) - min(w, 0)) / 255 (1 when that is 0), zero point = round(-128 - min / scale),
    q = clip(round(w / scale) + zero point, -128, 127), float32 arithmetic, rounding half to even.

    ``reduce_range``: the same on [-64, 64] (scale = range / 128), the 7-bit weights of an ``--reduce-range`` export:
    onnxruntime would quantize the layer at load on the full range, which saturates on x86 CPUs without VNNI
    (:mod:`distill.export.quantize`), so the file fixes the grid instead."""
    qmin, qmax = (float(v) for v in (REDUCED_WEIGHTS if reduce_range else (-128, 127)))
    w = weight.astype(np.float32)
    lo, hi = np.float32(min(float(w.min()), 0.0)), np.float32(max(float(w.max()), 0.0))
    scale = np.float32(1.0) if hi == lo else np.float32((hi - lo) / np.float32(qmax - qmin))
    zero = np.int8(np.rint(np.clip(np.float32(qmin) - lo / scale, qmin, qmax)))
    q = quantize_linear(w, np.array(scale), np.array(zero), axis=0)
    return np.clip(q, int(qmin), int(qmax)).astype(np.int8), scale, zero


def _leads_to_quantize(node: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]]) -> bool:
    """The transformer's path rule: one output, one consumer at each step, only Relu/Clip until a QuantizeLinear."""
    current = node
    while len(current.output) == 1:
        users = consumers.get(current.output[0], [])
        if len(users) != 1:
            return False
        if users[0].op_type == "QuantizeLinear":
            return True
        if users[0].op_type not in PASS_THROUGH:
            return False
        current = users[0]
    return False


def per_tensor_weights(model: onnx.ModelProto, reduce_range: bool = False) -> list[str]:
    """Rewrite ``model`` in place (see the module doc); returns the names of the layers given per-tensor int8 weights
    (``reduce_range``: on [-64, 64], :func:`ort_weight_grid`).

    A layer qualifies as it does for onnxruntime: a float weight initializer, input from a DequantizeLinear with a
    one-element scale (an initializer), output leading to a QuantizeLinear (:func:`_leads_to_quantize`); a float
    bias initializer of one dimension becomes int32 at input scale x weight scale (another bias is left as it is).
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    done: list[str] = []
    added: list[tuple[onnx.NodeProto, list[onnx.NodeProto]]] = []  # (layer, the DequantizeLinear nodes before it)
    for node in graph.node:
        weight = inits.get(node.input[1]) if node.op_type in LAYERS and len(node.input) > 1 else None
        dq = producer.get(node.input[0]) if weight is not None else None
        if weight is None or weight.data_type != onnx.TensorProto.FLOAT or dq is None \
                or dq.op_type != "DequantizeLinear" or dq.input[1] not in inits:
            continue
        input_scale = numpy_helper.to_array(inits[dq.input[1]])
        if input_scale.size != 1 or not _leads_to_quantize(node, consumers):
            continue
        base = node.name or node.output[0]  # output names are unique; node names may be empty
        q, scale, zero = ort_weight_grid(numpy_helper.to_array(weight), reduce_range)
        tensors = [numpy_helper.from_array(q, f"{base}/weight_int8"),
                   numpy_helper.from_array(np.array(scale, dtype=np.float32), f"{base}/weight_scale"),
                   numpy_helper.from_array(np.array(zero, dtype=np.int8), f"{base}/weight_zero_point")]
        nodes = [helper.make_node("DequantizeLinear", [t.name for t in tensors], [f"{base}/weight"],
                                  name=f"{base}/weight_dq")]
        node.input[1] = f"{base}/weight"
        bias = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if bias is not None and bias.data_type == onnx.TensorProto.FLOAT and len(bias.dims) == 1:
            # float32 Mul, Div, Round as the transformer's subgraph (qdq_graph.quantize_biases divides in float64,
            # as onnxruntime's PTQ does, and writes a per-channel layout: not the same integers on every tie)
            bias_scale = np.float32(input_scale.reshape(()) * scale)
            b = np.rint(numpy_helper.to_array(bias).astype(np.float32) / bias_scale).astype(np.int32)
            tensors += [numpy_helper.from_array(b, f"{base}/bias_int32"),
                        numpy_helper.from_array(np.array(bias_scale, dtype=np.float32), f"{base}/bias_scale")]
            nodes.append(helper.make_node("DequantizeLinear", [f"{base}/bias_int32", f"{base}/bias_scale"],
                                          [f"{base}/bias"], name=f"{base}/bias_dq"))
            node.input[2] = f"{base}/bias"
        graph.initializer.extend(tensors)
        added.append((node, nodes))
        done.append(base)
    for node, nodes in added:  # right before the layer: the graph stays in topological order
        at = list(graph.node).index(node)
        for i, new in enumerate(nodes):
            graph.node.insert(at + i, new)
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in used]  # the float weights and biases replaced above
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return done
