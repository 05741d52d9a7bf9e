"""A layer the int8 file keeps in float runs in float on ONNX Runtime CPU too.

onnxruntime's ``WeightBiasQuantization`` graph transformer (onnxruntime 1.32; basic optimization level and up)
quantizes, when the session is created, the float weight of every Conv/Gemm whose input comes from a
``DequantizeLinear`` with a **scalar** scale (per tensor, int8, and the bias to int32). The float fallback's layers
between int8 layers are exactly that (``quantize_static``'s ``nodes_to_exclude`` leaves their weights float but
dequantizes their int8 input), so they ran with a per-tensor int8 weight grid, coarser than the per-channel one
they were taken out of, not in float (benchmarks/RESULTS.md, "What onnxruntime makes of a float fallback layer").

:func:`float_inputs_per_axis` gives each such layer its own copy of that ``DequantizeLinear`` whose scale (and zero
point) is the same value repeated per input channel (``axis=1``). Dequantization is elementwise, so the tensor is
bit for bit the same, but the scale is no longer a scalar and the transformer leaves the layer alone: onnxruntime
runs it as a float Conv/Gemm on the dequantized input, as "kept in float" says (tests/export/test_float_layers.py
checks the graph onnxruntime optimizes). The producer's own ``DequantizeLinear`` stays as it was for its other
consumers. TensorRT runs such a layer in float anyway; only the ort-cpu flavour's files are rewritten.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

LAYERS = ("Conv", "Gemm", "ConvTranspose")  # the ops WeightBiasQuantization quantizes


def _input_channels(node: onnx.NodeProto, weight: np.ndarray) -> int:
    """Channels (axis 1) of ``node``'s input: Conv ``C_in = W.shape[1] * group``, Gemm ``K``."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv":
        return int(weight.shape[1]) * int(attrs.get("group", 1))
    if node.op_type == "ConvTranspose":
        return int(weight.shape[0])
    return int(weight.shape[1] if attrs.get("transB", 0) else weight.shape[0])


def float_inputs_per_axis(model: onnx.ModelProto) -> list[str]:
    """Rewrite ``model`` in place (see the module doc); returns the names of the layers whose input now has its own
    per-axis ``DequantizeLinear`` (float-weight Conv/Gemm/ConvTranspose fed by a scalar-scale one whose scale and
    zero point are initializers, as ``quantize_static`` and :func:`distill.export.qdq_graph.tidy_qdq` write them)."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    added: list[tuple[onnx.NodeProto, onnx.NodeProto]] = []  # (the DQ copied, its per-axis copy)
    for node in graph.node:
        weight = inits.get(node.input[1]) if node.op_type in LAYERS and len(node.input) > 1 else None
        dq = producer.get(node.input[0]) if weight is not None else None
        if weight is None or weight.data_type != onnx.TensorProto.FLOAT or dq is None or \
                dq.op_type != "DequantizeLinear" or not all(name in inits for name in dq.input[1:] if name):
            continue  # an int8 layer, a layer on a float input, or qparams that are not initializers
        scale = numpy_helper.to_array(inits[dq.input[1]])
        if scale.size != 1:
            continue
        channels = _input_channels(node, numpy_helper.to_array(weight))
        base = node.name or node.output[0]  # output names are unique; node names may be empty
        names = [f"{base}/float_input_scale"]
        tensors = [numpy_helper.from_array(np.full(channels, scale.item(), dtype=scale.dtype), names[0])]
        if len(dq.input) > 2 and dq.input[2]:
            zero = numpy_helper.to_array(inits[dq.input[2]])
            names.append(f"{base}/float_input_zero_point")
            tensors.append(numpy_helper.from_array(np.full(channels, zero.item(), dtype=zero.dtype), names[1]))
        graph.initializer.extend(tensors)
        added.append((dq, helper.make_node("DequantizeLinear", [dq.input[0], *names], [f"{base}/float_input"],
                                           name=f"{base}/float_input_dq", axis=1)))
        node.input[0] = f"{base}/float_input"
    for dq, copy in added:  # right after the DQ it copies: the graph stays in topological order
        graph.node.insert(list(graph.node).index(dq) + 1, copy)
    return [copy.name.removesuffix("/float_input_dq") for _, copy in added]
