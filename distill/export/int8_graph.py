"""Rewrites of a graph about to be quantized that let onnxruntime run more of it in int8; the function is unchanged.

onnxruntime's QDQ fusion turns ``DequantizeLinear -> op -> QuantizeLinear`` into an int8 kernel only for the ops it
has int8 kernels for. Two patterns of timm's students miss that and run in float between a Q/DQ pair ("float
islands", benchmarks/RESULTS.md "int8 per student"):

- **ReduceMean over H and W, keepdims** (squeeze-excite's pooling; the dynamo exporter's head pooling) becomes
  **GlobalAveragePool**, the same mean, which onnxruntime runs as ``QLinearGlobalAveragePool``. The rounding is the
  same too: the mean was quantized for the conv after it anyway.
- **HardSigmoid whose only input is a Conv's output used by nothing else** (mobilenetv3's squeeze-excite gate):
  ``alpha * conv(x) + beta`` is folded into that Conv's weights and bias, leaving ``Clip(0, 1)``, which
  onnxruntime's quantizer absorbs into the conv's output range, so the gate runs inside the ``QLinearConv``.

Hardswish's HardSigmoid (``x * HardSigmoid(x)``: its input also feeds the Mul, so there is no conv to fold into)
is left as it is: written as Mul + Add + Clip it ran in int8 but slower at 32 px in a throwaway probe (not in the
repo, so no figure is claimed).
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper

SPATIAL = {2, 3}  # the H and W axes of an NCHW tensor


def int8_friendly(model: onnx.ModelProto) -> dict[str, int]:
    """Rewrite ``model`` in place (see the module doc); returns how many of each rewrite were made."""
    return {"ReduceMean -> GlobalAveragePool": means_to_global_pool(model),
            "HardSigmoid folded into its Conv": fold_gates_into_convs(model)}


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> rank, from the graph's shapes (ONNX shape inference fills in what is missing)."""
    graph = onnx.shape_inference.infer_shapes(model).graph
    infos = [*graph.input, *graph.value_info, *graph.output]
    return {v.name: len(v.type.tensor_type.shape.dim) for v in infos if v.type.tensor_type.HasField("shape")}


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Initializers and Constant nodes' values, by name."""
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            values[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return values


def _axes(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> list[int] | None:
    """A ReduceMean's axes: the attribute (opset < 18) or the constant second input (opset 18); None when unknown."""
    for a in node.attribute:
        if a.name == "axes":
            return list(a.ints)
    if len(node.input) > 1 and node.input[1] in constants:
        return [int(v) for v in constants[node.input[1]].ravel()]
    return None


def means_to_global_pool(model: onnx.ModelProto) -> int:
    """Each ``ReduceMean(x, axes={H, W}, keepdims=1)`` of a rank-4 ``x`` becomes ``GlobalAveragePool(x)``."""
    graph = model.graph
    constants = _constants(graph)
    ranks = _ranks(model)
    done, orphans = 0, set()
    for i, node in enumerate(graph.node):
        if node.op_type != "ReduceMean" or ranks.get(node.input[0]) != 4:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = _axes(node, constants)
        if attrs.get("keepdims", 1) != 1 or axes is None or {a % 4 for a in axes} != SPATIAL or len(axes) != 2:
            continue
        orphans.update(node.input[1:])
        graph.node[i].CopyFrom(helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output),
                                                name=node.name))
        done += 1
    _drop_unused(graph, orphans)  # the axes constants (onnxruntime warns about each unused one on loading)
    return done


def fold_gates_into_convs(model: onnx.ModelProto) -> int:
    """Each ``HardSigmoid(Conv(x))`` whose conv output has no other use: ``alpha``, ``beta`` go into the conv's
    weight and bias (constants), the HardSigmoid becomes ``Clip(0, 1)``."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    producer = {out: n for n in graph.node for out in n.output}
    uses = Counter(name for n in graph.node for name in n.input)
    outputs = {o.name for o in graph.output}
    done, replaced = 0, set()
    for i, node in enumerate(graph.node):
        if node.op_type != "HardSigmoid":
            continue
        x = node.input[0]
        conv = producer.get(x)
        if (conv is None or conv.op_type != "Conv" or uses[x] != 1 or x in outputs or len(conv.input) < 2
                or any(name not in initializers for name in conv.input[1:3])):
            continue  # hardswish's (x also feeds the Mul), or a conv whose weights are computed
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        alpha, beta = np.float32(attrs.get("alpha", 0.2)), np.float32(attrs.get("beta", 0.5))
        weight = numpy_helper.to_array(initializers[conv.input[1]])
        bias = (numpy_helper.to_array(initializers[conv.input[2]]) if len(conv.input) > 2
                else np.zeros(weight.shape[0], weight.dtype))
        # the folded constants are this conv's own (the optimizer may share equal constants between convs)
        tag = node.name or node.output[0]
        for slot, value in ((1, weight * alpha), (2, bias * alpha + beta)):
            name = f"{tag}_folded_{'weight' if slot == 1 else 'bias'}"
            graph.initializer.append(numpy_helper.from_array(value.astype(weight.dtype), name))
            if slot < len(conv.input):
                replaced.add(conv.input[slot])
                conv.input[slot] = name
            else:
                conv.input.append(name)
        graph.initializer.extend([numpy_helper.from_array(np.array(0.0, np.float32), f"{tag}_lo"),
                                  numpy_helper.from_array(np.array(1.0, np.float32), f"{tag}_hi")])
        graph.node[i].CopyFrom(helper.make_node("Clip", [x, f"{tag}_lo", f"{tag}_hi"], list(node.output),
                                                name=node.name))
        done += 1
    _drop_unused(graph, replaced)
    return done


def _drop_unused(graph: onnx.GraphProto, names: set[str]) -> None:
    """The initializers and Constant nodes among ``names`` that nothing uses any more (another node may still
    share one)."""
    used = {n for node in graph.node for n in node.input} | {o.name for o in graph.output} | {
        i.name for i in graph.input}
    keep = [t for t in graph.initializer if t.name not in names or t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = [n for n in graph.node if not (n.op_type == "Constant" and n.output[0] in names
                                           and n.output[0] not in used)]
    del graph.node[:]
    graph.node.extend(nodes)
