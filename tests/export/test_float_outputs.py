"""distill.export.float_outputs: the fallback's float-output candidates, what the export writes for them, and QAD's
fake-quant student mirroring it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from distill.errors import DistillError
from distill.export import quantize as q
from distill.export.fakequant import conv_bn_pairs, export_qdq, fake_quant_model
from distill.export.fallback import greedy_fallback
from distill.export.float_outputs import activation_after, excluded_nodes, fallback_candidates
from distill.export.fq_state import calibrate_ranges
from distill.export.images import ImageCalibrationReader, ImageSet
from distill.export.kept_float import ExportedInt8, kept_layers
from distill.export.log import ExportLog
from distill.export.onnx import export_onnx
from distill.student.model import Student, default_spec


def _student(arch: str) -> Student:
    torch.manual_seed(0)
    return Student(default_spec(arch, ["a", "b", "c"], input_size=32)).eval()


@pytest.fixture(scope="module")
def mnv3(tmp_path_factory: pytest.TempPathFactory) -> tuple[Student, Path, Path, Path]:
    """A mobilenetv3 student (hardswish after conv_head and in its blocks), its fp32 file, the prepared graph and
    a MinMax calibration cache over random images."""
    tmp = tmp_path_factory.mktemp("mnv3")
    student = _student("mobilenetv3_small_050")
    fp32 = tmp / "fp32.onnx"
    export_onnx(student, fp32, exporter="torchscript")
    prepared = q.prepare(fp32, tmp / "prepared.onnx")
    rng = np.random.default_rng(0)
    imgs = ImageSet(rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), np.zeros(16, np.int64),
                    np.array(["a"] * 16), student.spec.mean, student.spec.std, [])
    cache = q.calibrate(prepared, ImageCalibrationReader(imgs, "input", 8), "minmax", tmp / "ranges.json")
    return student, fp32, prepared, cache


def _head(model: onnx.ModelProto) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type == "Conv" and "conv_head" in n.name)


def test_layers_feeding_hardswish_are_candidates_once_more_with_their_activation(mnv3):
    _, _, prepared, _ = mnv3
    model = onnx.load(str(prepared))
    by_name = {n.name: n for n in model.graph.node}
    candidates = fallback_candidates(model, float_outputs=True)
    plain = [c for c in candidates if "float_output" not in c]
    grouped = [c for c in candidates if "float_output" in c]
    assert plain == q.compute_nodes(model) and fallback_candidates(model) == plain
    assert _head(model).name in {c["node"] for c in grouped}
    for c in grouped:  # each activation: onnxruntime's inlined hardswish, reading the layer's output alone
        ops = sorted(by_name[n].op_type for n in c["float_output"])
        assert ops in (["HardSigmoid", "Mul"], ["HardSwish"]), ops
        assert excluded_nodes(c) == [c["node"], *c["float_output"]]
    # a ReLU network has none: its activations fuse into onnxruntime's QLinearConv
    resnet = mnv3[1].parent / "resnet.onnx"
    export_onnx(_student("test_resnet"), resnet, exporter="torchscript")
    assert all("float_output" not in c for c in fallback_candidates(onnx.load(str(resnet)), True))


def _graph(nodes: list[onnx.NodeProto]) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "z")]
    return helper.make_model(helper.make_graph(nodes, "g", [x], outs))


def test_only_an_activation_that_alone_reads_the_layer_counts():
    conv = helper.make_node("Conv", ["x", "w"], ["c"], name="conv")
    gate = helper.make_node("HardSigmoid", ["c"], ["g"], name="gate")
    swish = helper.make_node("Mul", ["c", "g"], ["y"], name="mul")
    assert activation_after(_graph([conv, gate, swish]), "conv") == ["gate", "mul"]
    silu = helper.make_node("Sigmoid", ["c"], ["g"], name="gate")
    assert activation_after(_graph([conv, silu, swish]), "conv") == ["gate", "mul"]
    assert activation_after(_graph([conv, helper.make_node("HardSwish", ["c"], ["y"], name="hs")]), "conv") == ["hs"]
    # the layer's output read by something else too (a residual add): its Q/DQ stays, no candidate
    add = helper.make_node("Add", ["c", "x"], ["z"], name="add")
    assert activation_after(_graph([conv, gate, swish, add]), "conv") == []
    # a gate over another tensor (squeeze-excite's x * gate(se)) is no activation of this layer
    other = helper.make_node("Mul", ["x", "g"], ["y"], name="mul")
    assert activation_after(_graph([conv, gate, other]), "conv") == []
    # the gate's value used elsewhere too
    reuse = helper.make_node("Add", ["g", "x"], ["z"], name="add")
    assert activation_after(_graph([conv, gate, swish, reuse]), "conv") == []
    assert activation_after(_graph([conv, helper.make_node("Relu", ["c"], ["y"], name="r")]), "conv") == []


def _readers(model: onnx.ModelProto, tensor: str) -> list[str]:
    return sorted(n.op_type for n in model.graph.node if tensor in n.input)


def test_a_float_output_candidate_leaves_the_layers_output_float_and_quantizes_its_activations(mnv3, tmp_path):
    """Excluding conv_head alone (the fallback before) leaves its output quantized for the int8 Mul of hardswish;
    excluding it with its activation: float weights, its output goes to the activation in float, and the
    activation's output is quantized for the next int8 layer."""
    _, _, prepared, cache = mnv3
    model = onnx.load(str(prepared))
    head = next(c for c in fallback_candidates(model, True) if c.get("float_output") and c["node"] == _head(model).name)
    fl = q.FLAVOURS["ort-cpu"]
    alone = onnx.load(str(q.quantize(prepared, tmp_path / "alone.onnx", fl, cache, nodes_to_exclude=[head["node"]])))
    assert _readers(alone, _head(alone).output[0]) == ["QuantizeLinear"]
    grouped = onnx.load(str(q.quantize(prepared, tmp_path / "group.onnx", fl, cache,
                                       nodes_to_exclude=excluded_nodes(head))))
    out = _head(grouped).output[0]
    assert _readers(grouped, out) == ["HardSigmoid", "Mul"]
    tensor = next(n for n in grouped.graph.node if n.name == head["float_output"][-1]).output[0]
    while _readers(grouped, tensor) in (["Flatten"], ["Reshape"]):  # layout ops move float or int8 alike
        tensor = next(n for n in grouped.graph.node if tensor in n.input).output[0]
    assert _readers(grouped, tensor) == ["QuantizeLinear"]  # quantized for the int8 head
    inits = {t.name for t in grouped.graph.initializer}
    assert _head(grouped).input[1] in inits  # a float weight, stored float (no DequantizeLinear before it)


def test_the_greedy_search_tries_each_layer_once_as_its_better_ranked_variant():
    """Each layer is tried once, as the variant the ranking put first: 'b' with its output float (it fixes the
    model), not 'b' alone ranked below it; the result names the layer, its float output and every node left out of
    quantization. Ranked the other way round, only 'b' alone is tried."""
    calls: list[list[str]] = []
    good, bad = Path("good.onnx"), Path("bad.onnx")

    def quantize_excluding(nodes: list[str]) -> Path:
        calls.append(list(nodes))
        return good if "b_act" in nodes else bad

    def measure(path: Path) -> dict[str, float]:
        return {"d": 0.5 if path == good else 10.0}

    ranked = [{"node": "b", "op_type": "Conv", "float_output": ["b_gate", "b_act"]},
              {"node": "b", "op_type": "Conv"}, {"node": "a", "op_type": "Conv"}]
    res, path = greedy_fallback(quantize_excluding, ranked, measure, {"d": 10.0}, max_drop=0.0, max_layers=5)
    assert calls == [["b", "b_gate", "b_act"], ["b", "b_gate", "b_act", "a"]]
    assert path == good and not res.satisfied
    assert (res.kept_float, res.float_outputs, res.excluded) == (["b"], ["b"], ["b", "b_gate", "b_act"])
    assert [s["float_output"] for s in res.steps] == [True, False] and res.steps[0]["excluded"] == calls[0]
    calls.clear()
    res, path = greedy_fallback(quantize_excluding, [ranked[1], ranked[0], ranked[2]], measure, {"d": 10.0},
                                max_drop=0.0, max_layers=5)
    assert calls == [["b"], ["a"]] and path is None and res.kept_float == []


def test_qads_fake_quant_student_keeps_the_same_output_float(mnv3, tmp_path):
    """The export's record (float_outputs) reaches QAD's fake-quant student: no fake-quant between conv_head and its
    hardswish, the hardswish's output still fake-quantized, conv_head's weight float; its QDQ file has the export's
    structure (conv_head's output read by the float activation, no QuantizeLinear)."""
    student, fp32, _, _ = mnv3
    node = _head(onnx.load(str(fp32))).name
    lines: list[str] = []
    keep = kept_layers(ExportedInt8(fp32, "test", [node], None, [node]), student, conv_bn_pairs(student),
                       ExportLog(lines.append))
    assert keep.layers == keep.float_outputs == ["backbone.conv_head"]
    fl = q.FLAVOURS["ort-cpu"]
    model = fake_quant_model(student, fl, keep.layers, keep.float_outputs)
    graph = {n.name: n for n in model.graph.nodes}
    head = graph["student_backbone_conv_head"]
    after = next(iter(head.users))
    assert isinstance(model.get_submodule(str(after.target)), torch.nn.Identity)
    act = next(iter(after.users))
    assert isinstance(model.get_submodule(str(next(iter(act.users)).target)), torch.ao.quantization.FakeQuantize)
    assert isinstance(model.get_submodule("student.backbone.conv_head").weight_fake_quant, torch.nn.Identity)
    calibrate_ranges(model, (torch.randn(8, 3, 32, 32) for _ in range(2)))
    path = export_qdq(model, tmp_path / "qad.onnx", (32, 32), fl)
    written = onnx.load(str(path))
    conv = next(n for n in written.graph.node if n.op_type == "Conv" and "conv_head" in n.name)
    assert "QuantizeLinear" not in _readers(written, conv.output[0])
    # kept without its output: the fake-quant after conv_head stays (the check above could fail)
    alone = fake_quant_model(student, fl, keep.layers)
    after = next(iter({n.name: n for n in alone.graph.nodes}["student_backbone_conv_head"].users))
    assert isinstance(alone.get_submodule(str(after.target)), torch.ao.quantization.FakeQuantize)
    with pytest.raises(DistillError, match="conv_head', a layer not kept in float"):
        fake_quant_model(student, fl, [], keep.float_outputs)


def test_an_export_with_float_outputs_on_ranks_both_variants_and_writes_what_it_kept(tiny_root, tmp_path):
    """``fallback_outputs``: export.json's sensitivity holds both variants of each layer that feeds hardswish;
    every search step records the nodes it excluded, its layers plus their activations, and so does the result.
    (Off, the default, ranks layers alone: fallback_candidates' test; the file a float output makes: the
    quantize test above.)"""
    from distill.data.folder import DomainFolder
    from distill.export import ExportConfig, export_checkpoint
    from distill.student.model import save_student

    torch.manual_seed(0)
    student = Student(default_spec("mobilenetv3_small_050", DomainFolder(tiny_root).classes, input_size=32)).eval()
    ckpt = save_student(student, tmp_path / "ckpt")
    rep = export_checkpoint(ckpt, tmp_path / "exp", ExportConfig(
        precisions=("int8",), data_root=str(tiny_root), int8_flavour="ort-cpu", max_drop=-100.0,
        max_fallback_layers=3, exporter="torchscript", eval_count=12, calib_count=32, latency_iters=3,
        sensitivity_count=16, threads=1, fallback_outputs=True), log=lambda s: None)
    fb = next(m for m in rep.models if m.precision == "int8").model_extra["fallback"]
    grouped = [c for c in fb["sensitivity"] if c.get("float_output")]
    plain = {c["node"] for c in fb["sensitivity"] if not c.get("float_output")}
    assert grouped and {c["node"] for c in grouped} < plain
    assert fb["steps"] and len({s["tried"] for s in fb["steps"]}) == len(fb["steps"])  # each layer tried once
    acts = {c["node"]: c["float_output"] for c in grouped}
    for s in fb["steps"]:
        assert set(s["float_outputs"]) <= set(s["kept_float"])
        assert sorted(s["excluded"]) == sorted(s["kept_float"] + [n for k in s["float_outputs"] for n in acts[k]])
    assert sorted(fb["excluded"]) == sorted(fb["kept_float"] + [n for k in fb["float_outputs"] for n in acts[k]])
