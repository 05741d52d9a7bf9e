"""The float fallback's candidates: a layer alone, or a layer together with the activation it feeds.

Keeping a Conv/Gemm out of ``quantize_static`` (``nodes_to_exclude``) leaves its *output* quantized whenever the
node reading it is quantized. In mobilenetv3 that node is hardswish: onnxruntime inlines ``HardSwish`` as
``Mul(x, HardSigmoid(x))`` and quantizes the ``Mul`` (``QLinearMul``), so the conv's output keeps its uint8
Q/DQ pair even with the conv in float, and that pair is where int8's error is (benchmarks/RESULTS.md, "What QAD
moves, and where int8's error comes from": mobilenetv3_large_100's conv_head output, a pre-hardswish tensor of range
~120-160, flips 4-10 % of the images on its own). A *float-output* candidate excludes the layer and the nodes of its
activation: the layer's output then goes to the activation in float, and the activation's output is quantized for
the next int8 layer. The activation runs in float on onnxruntime CPU anyway (``HardSigmoid`` has no int8 kernel), so
this trades the Mul's int8 kernel and one Q/DQ pair for the accuracy. Both variants of a layer are ranked; the greedy
search tries the layer once, as the variant ranked higher, and keeps it only when it lowers the disagreement, like any
candidate (:func:`distill.export.fallback.best_variants`).

Recognized activations (each alone reading the layer's output): ``HardSwish``, and ``x * g(x)`` with ``g`` one of
``HardSigmoid`` / ``Sigmoid`` (hardswish inlined, SiLU). A ReLU/Clip after a layer is fused into onnxruntime's
QLinearConv and needs no candidate of its own.
"""
from __future__ import annotations

import onnx

from distill.export.quantize import compute_nodes

UNARY = ("HardSwish",)
GATES = ("HardSigmoid", "Sigmoid")


def readers_of(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the nodes reading it, in graph order (one pass over the graph)."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for name in dict.fromkeys(n.input):
            readers.setdefault(name, []).append(n)
    return readers


def activation_after(model: onnx.ModelProto, node: str,
                     readers: dict[str, list[onnx.NodeProto]] | None = None) -> list[str]:
    """The nodes of the activation that alone reads ``node``'s (first) output, in graph order; [] when it is
    none of the recognized ones (module doc) or when anything else reads that output too. ``readers``:
    :func:`readers_of` of ``model``, when the caller asks about many nodes."""
    readers = readers_of(model) if readers is None else readers
    out = next(n for n in model.graph.node if n.name == node).output[0]
    mine = readers.get(out, [])
    if len(mine) == 1 and mine[0].op_type in UNARY:
        return [mine[0].name]
    gates = [n for n in mine if n.op_type in GATES]
    muls = [n for n in mine if n.op_type == "Mul"]
    if len(mine) != 2 or len(gates) != 1 or len(muls) != 1:
        return []
    gate, mul = gates[0], muls[0]
    if sorted(mul.input) != sorted([out, gate.output[0]]):
        return []
    if readers.get(gate.output[0], []) != [mul]:
        return []  # the gate's value is used elsewhere too: not an activation of this layer alone
    return [gate.name, mul.name]


def fallback_candidates(model: onnx.ModelProto, float_outputs: bool = False) -> list[dict]:
    """Every Conv/Gemm/MatMul (``{"node", "op_type"}``, :func:`distill.export.quantize.compute_nodes`), then
    (``float_outputs``) each one feeding a recognized activation once more with its output kept float:
    ``{"node", "op_type", "float_output": [activation nodes]}``."""
    plain = compute_nodes(model)
    if not float_outputs:
        return plain
    readers = readers_of(model)
    grouped = []
    for c in plain:
        act = activation_after(model, c["node"], readers)
        if act:
            grouped.append({**c, "float_output": act})
    return plain + grouped


def excluded_nodes(candidate: dict) -> list[str]:
    """The nodes ``quantize_static`` leaves in float for a candidate: the layer, and its activation when its output
    is kept float."""
    return [candidate["node"], *candidate.get("float_output", [])]


def label(candidate: dict) -> str:
    """How the log and the report name a candidate: the layer, ``+ float output`` for a float-output one."""
    return candidate["node"] + (" + float output" if candidate.get("float_output") else "")
