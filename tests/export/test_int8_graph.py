"""distill/export/int8_graph.py and se_gate.py: squeeze-excite's mean and gate rewritten so onnxruntime runs them in
int8, with the function unchanged; the export's and QAD's int8 files of a mobilenetv3 lose those float islands."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from distill.export.evaluate import ort_session
from distill.export.fakequant import export_qdq, fake_quant_model
from distill.export.fq_state import calibrate_ranges
from distill.export.int8_graph import int8_friendly
from distill.export.quantize import FLAVOURS, calibrate, float_ops_as_run, prepare, quantize
from distill.export.se_gate import QATConvGate2d, gate_params
from distill.student.model import Student, default_spec


def _block(opset: int) -> onnx.ModelProto:
    """x [1, 4, 6, 6] -> squeeze-excite (mean over H, W; conv; HardSigmoid gate; Mul) -> conv -> hardswish
    (HardSigmoid + Mul: not foldable) -> means over {H, W} with negative axes (rewritten), over C (not), and
    over {H, W} without keepdims (not)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name) for name, shape in
             (("w_gate", (4, 4, 1, 1)), ("b_gate", (4,)), ("w_conv", (4, 4, 3, 3)), ("b_conv", (4,)))]

    def mean(x: str, out: str, axes: list[int], keep: int) -> onnx.NodeProto:
        if opset >= 18:
            inits.append(numpy_helper.from_array(np.array(axes, np.int64), f"{out}_axes"))
            return helper.make_node("ReduceMean", [x, f"{out}_axes"], [out], keepdims=keep)
        return helper.make_node("ReduceMean", [x], [out], axes=axes, keepdims=keep)

    nodes = [
        mean("x", "pooled", [2, 3], 1),
        helper.make_node("Conv", ["pooled", "w_gate", "b_gate"], ["gate_in"]),
        helper.make_node("HardSigmoid", ["gate_in"], ["gate"], alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["x", "gate"], ["se"]),
        helper.make_node("Conv", ["se", "w_conv", "b_conv"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("HardSigmoid", ["h"], ["hs"], alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["h", "hs"], ["act"]),
        mean("act", "spatial", [-1, -2], 1),
        mean("act", "channels", [1], 1),
        mean("act", "flat", [2, 3], 0),
    ]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in
            (("spatial", [1, 4, 1, 1]), ("channels", [1, 1, 6, 6]), ("flat", [1, 4]))]
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
                              outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


@pytest.mark.parametrize("opset", [17, 18])
def test_the_se_mean_and_gate_are_rewritten_and_the_function_is_unchanged(opset):
    model = _block(opset)
    x = np.random.default_rng(1).standard_normal((1, 4, 6, 6)).astype(np.float32) * 3
    before = _run(model, x)
    done = int8_friendly(model)
    onnx.checker.check_model(model)
    assert done == {"ReduceMean -> GlobalAveragePool": 2, "HardSigmoid folded into its Conv": 1}
    ops = [n.op_type for n in model.graph.node]
    # the SE mean and the {-1, -2} mean are pools; the channel mean and the keepdims=0 mean stay
    assert ops.count("GlobalAveragePool") == 2 and ops.count("ReduceMean") == 2
    # the gate is a Clip after its conv; hardswish's HardSigmoid (its input also feeds the Mul) stays
    assert ops.count("Clip") == 1 and ops.count("HardSigmoid") == 1
    used = {name for n in model.graph.node for name in n.input}
    assert all(t.name in used for t in model.graph.initializer)  # no axes or gate constant left behind
    for a, b in zip(before, _run(model, x)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_gates_whose_convs_share_constants_get_constants_of_their_own():
    """onnxruntime's optimizer shares equal constants between convs (zero biases at init): folding one gate must not
    change the other conv, and a constant nothing uses any more is dropped."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.zeros(4, np.float32), "b_shared")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b_shared"], ["g1_in"]),
             helper.make_node("HardSigmoid", ["g1_in"], ["g1"], alpha=1 / 6, beta=0.5),
             helper.make_node("Conv", ["x", "w2", "b_shared"], ["c2"]),
             helper.make_node("Mul", ["g1", "c2"], ["y"])]
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((1, 4, 3, 3)).astype(np.float32) * 4
    before = _run(model, x)
    assert int8_friendly(model)["HardSigmoid folded into its Conv"] == 1
    np.testing.assert_allclose(_run(model, x)[0], before[0], rtol=1e-5, atol=1e-5)
    names = {t.name for t in model.graph.initializer}
    assert "b_shared" in names and "w1" not in names  # still used by the other conv / replaced by the folded weight


def _student() -> Student:
    torch.manual_seed(0)
    student = Student(default_spec("mobilenetv3_small_050", [str(i) for i in range(10)], 32)).eval()
    for m in student.modules():  # trained-like BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return student


def test_a_mobilenetv3s_int8_files_run_squeeze_excite_in_int8(tmp_path):
    """The export's PTQ file: no ReduceMean in float and 9 fewer HardSigmoid (the SE gates; hardswish's 19 stay);
    QAD's file: no ReduceMean in float. Before, both ran 9 SE means in float (RESULTS.md "int8 per student")."""
    from distill.export.images import ImageCalibrationReader, random_images
    from distill.export.onnx import INPUT_NAME, export_onnx

    student = _student()
    fp32 = tmp_path / "fp32.onnx"
    export_onnx(student, fp32, opset=18, exporter="torchscript")
    prepared = prepare(fp32, tmp_path / "prepared.onnx")
    images = random_images(student.spec, 8, 0)
    x = images.normalize(images.images)
    ranges = calibrate(prepared, ImageCalibrationReader(images, INPUT_NAME), "minmax", tmp_path / "ranges.json")
    ptq = quantize(prepared, tmp_path / "ptq.onnx", FLAVOURS["ort-cpu"], ranges)
    assert float_ops_as_run(ptq, tmp_path) == {"HardSigmoid": 19}
    assert np.isfinite(ort_session(ptq).run(None, {INPUT_NAME: x})[0]).all()

    model = fake_quant_model(student, FLAVOURS["ort-cpu"])
    # QAD's fake-quant student folds the same 9 gates (distill/export/se_gate.py), each clamped to [0, 1] inside
    # its fused conv, with one range after the clamp
    gates = [m for m in model.modules() if isinstance(m, QATConvGate2d)]
    assert len(gates) == 9 and all(g.folded_gate for g in gates)
    assert len(gate_params(model)) == 18  # weight and bias of each: QAD trains them in their own optimizer group
    calibrate_ranges(model, [torch.from_numpy(x)])
    qad_file = export_qdq(model.eval(), tmp_path / "qad.onnx", (32, 32), FLAVOURS["ort-cpu"], 18)
    islands = float_ops_as_run(qad_file, tmp_path)
    assert "ReduceMean" not in islands and islands.get("HardSigmoid") == 19  # hardswish's only
    # the rewritten means' axes constants are gone (onnxruntime logs a warning for each unused one it loads)
    proto = onnx.load(str(qad_file))
    used = {name for n in proto.graph.node for name in n.input}
    assert all(t.name in used for t in proto.graph.initializer)
    assert all(n.output[0] in used for n in proto.graph.node if n.op_type == "Constant")


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_folded_gate_trains_as_the_unfolded_one_at_its_lr_factor(optimizer):
    """QAD trains the folded gate conv (weights x 1/6) in its own group (distill.export.qad_train.make_optimizer): a step
    there, unfolded, is the step the student's own conv would have taken; at the plain lr it was 36x (SGD)."""
    import copy

    from distill.export.qad_config import QADConfig
    from distill.export.qad_train import make_optimizer
    from distill.export.se_gate import gates_as_clamps, unfold

    torch.manual_seed(0)
    original = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.Hardsigmoid())
    folded = torch.fx.symbolic_trace(copy.deepcopy(original))
    assert gates_as_clamps(folded) == ["0"]
    x, r = torch.randn(2, 3, 5, 5), torch.randn(2, 4, 5, 5)
    cfg = QADConfig(checkpoint="ck", out_dir="o", optimizer=optimizer, lr=0.05)
    start = original(x).detach()
    for model, opt in ((original, make_optimizer(cfg, list(original.parameters()))),
                       (folded, make_optimizer(cfg, [], list(folded.parameters())))):
        assert torch.allclose(model(x), start, atol=1e-6)  # the same function before training
        for _ in range(3):
            opt.zero_grad()
            (model(x) * r).sum().backward()
            opt.step()
    for name, p in folded.named_parameters():
        assert torch.allclose(unfold(name, p.detach()), dict(original.named_parameters())[name].detach(), atol=1e-5)
