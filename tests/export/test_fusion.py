"""QAD's fake-quant fuses each conv with its activation as onnxruntime's PTQ does, so the QAD file runs as fused
int8 kernels with no float activation between Q/DQ pairs: Conv(+BN)+ReLU6 (efficientnet_lite, mobilenetv2;
distill/export/relu6.py) and Conv+BN+ReLU with a timm placeholder (nn.Identity) between BN and ReLU (resnets)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from distill.export.fakequant import conv_bn_pairs, export_qdq, fake_quant_model, plain_biases, tuned_student
from distill.export.fq_state import calibrate_ranges, set_observers
from distill.export.kept_float import KeptFloat
from distill.export.quantize import FLAVOURS, tensorrt_qdq_problems
from distill.export.relu6 import QATConvReLU62d
from distill.student.model import Student, default_spec

ARCH = "mobilenetv2_035"  # the smallest timm ReLU6 student (35 Conv+BN+ReLU6)


def _student() -> Student:
    """A random student whose BatchNorm statistics are those of random images (non-trivial ones to fold)."""
    torch.manual_seed(0)
    student = Student(default_spec(ARCH, ["a", "b", "c"], 32))
    for bn in (m for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.momentum = None  # a cumulative average over the passes below
    with torch.no_grad():
        for _ in range(4):
            student(torch.randn(16, 3, 32, 32))
    return student.eval()


def _calibrated(student: Student, flavour: str, x: torch.Tensor) -> torch.nn.Module:
    return calibrate_ranges(fake_quant_model(student, FLAVOURS[flavour]), [x]).eval()


def _optimized_ops(path: Path, x: np.ndarray, tmp_path: Path) -> tuple[Counter, np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    out = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    return Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node), out


def test_relu6_is_fused_into_its_conv_and_onnxruntime_runs_no_float_clip(tmp_path):
    student = _student()
    relu6 = sum(isinstance(m, torch.nn.ReLU6) for m in student.modules())
    x = torch.randn(16, 3, 32, 32)
    model = _calibrated(student, "ort-cpu", x)
    assert sum(isinstance(m, QATConvReLU62d) for m in model.modules()) == relu6 > 0
    with torch.no_grad():
        torch_logits = model(x).numpy()
    path = export_qdq(model, tmp_path / "q.onnx", student.spec.input_size, FLAVOURS["ort-cpu"])

    proto = onnx.load(str(path))
    producer = {o: n for n in proto.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    clips = [n for n in proto.graph.node if n.op_type == "Clip"]
    assert len(clips) == relu6
    # Conv -> Clip -> QuantizeLinear: no Q/DQ pair between a conv and its ReLU6, and the range after it is the
    # ReLU6 output's (zero point 0: no uint8 step spent on negative values)
    assert all(producer[c.input[0]].op_type == "Conv" for c in clips)
    after = [n for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in {c.output[0] for c in clips}]
    assert len(after) == relu6 and all(int(inits[q.input[2]]) == 0 for q in after)

    ops, fused = _optimized_ops(path, x.numpy(), tmp_path)
    assert ops["Clip"] == 0 and ops["QLinearConv"] == Counter(n.op_type for n in proto.graph.node)["Conv"]
    scale = max(1.0, float(np.abs(torch_logits).max()))
    assert np.abs(fused - torch_logits).max() <= 0.25 * scale
    assert (fused.argmax(1) == torch_logits.argmax(1)).mean() >= 0.9


@pytest.mark.parametrize("flavour", ["ort-cpu", "tensorrt"])
def test_the_fused_relu6_student_has_a_float_twin_and_exports_for_both_flavours(flavour, tmp_path):
    student = _student()
    x = torch.randn(8, 3, 32, 32)
    model = _calibrated(student, flavour, x)
    model.apply(torch.ao.quantization.disable_fake_quant)
    with torch.no_grad():
        twin = tuned_student(model, student, conv_bn_pairs(student))  # BN folded back as identity BNs
        with plain_biases(model):  # the float biases (not rounded to the int32 grid), as the twin holds them
            assert torch.allclose(twin(x), model(x), atol=1e-4, rtol=1e-4)
        assert torch.allclose(twin(x), student(x), atol=1e-4, rtol=1e-4)  # nothing trained yet: the same function
    assert twin.state_dict().keys() == student.state_dict().keys()
    model.apply(torch.ao.quantization.enable_fake_quant)
    path = export_qdq(model, tmp_path / "q.onnx", student.spec.input_size, FLAVOURS[flavour])
    proto = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    zero_points = [inits[n.input[2]] for n in proto.graph.node if n.op_type == "QuantizeLinear"]  # activations
    dtypes = {z.dtype for z in zero_points}
    assert dtypes == ({np.dtype("uint8")} if flavour == "ort-cpu" else {np.dtype("int8")})
    assert flavour == "ort-cpu" or all(int(z) == 0 for z in zero_points)  # tensorrt: symmetric int8
    assert flavour == "ort-cpu" or tensorrt_qdq_problems(path) == []  # Conv -> Clip -> Q passes TensorRT's rules


def test_a_relu_behind_an_identity_placeholder_is_fused_into_its_conv(tmp_path):
    """timm's resnet blocks run conv1 -> bn1 -> drop_block (nn.Identity) -> act1: without the placeholder taken
    out, the ReLU shared the conv's range and onnxruntime ran it in float between a DequantizeLinear and a
    QuantizeLinear (4 such islands in test_resnet)."""
    torch.manual_seed(0)
    student = Student(default_spec("test_resnet", ["a", "b"], 32)).eval()
    assert any(isinstance(m, torch.nn.Identity) for m in student.modules())  # the placeholders are there
    x = torch.randn(8, 3, 32, 32)
    model = _calibrated(student, "ort-cpu", x)
    with torch.no_grad():
        torch_logits = model(x).numpy()
    path = export_qdq(model, tmp_path / "q.onnx", student.spec.input_size, FLAVOURS["ort-cpu"])
    ops, fused = _optimized_ops(path, x.numpy(), tmp_path)
    assert ops["Relu"] == 0 and ops["QuantizeLinear"] == ops["DequantizeLinear"] == 1  # only the graph's edges
    assert ops["QLinearConv"] == Counter(n.op_type for n in onnx.load(str(path)).graph.node)["Conv"]
    scale = max(1.0, float(np.abs(torch_logits).max()))
    assert np.abs(fused - torch_logits).max() <= 0.25 * scale


def test_qads_measurement_after_calibration_leaves_the_calibrated_ranges(monkeypatch):
    """train_qad measures the fake-quant disagreement right after calibrating; with the observers still on, that
    pass fed each range its own fake-quantized output (rounded up to the grid: ranges crept by up to half a step
    where an observer is shared, e.g. a placeholder's). The ranges at the first step are the calibration's."""
    import distill.export.qad_train as qad_train
    from distill.export.fq_state import fake_quants
    from distill.export.images import ImageSet
    from distill.export.qad_config import QADConfig

    torch.manual_seed(0)
    student = Student(default_spec("test_resnet", ["a", "b"], 32)).eval()
    rng = np.random.default_rng(0)
    calib = ImageSet(images=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), labels=np.zeros(40, np.int64),
                     domains=np.array(["d"] * 40), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), skipped=[])
    built = []
    monkeypatch.setattr(qad_train, "fake_quant_model", lambda *a: built.append(fake_quant_model(*a)) or built[-1])

    class Stop(Exception):
        pass

    seen = {}

    def first_step(cfg, params, gates=None, scales=None):  # the optimizer is made right after the measurement
        seen["ranges"] = [(float(f.activation_post_process.min_val), float(f.activation_post_process.max_val))
                          for f in fake_quants(built[0]) if not f.is_per_channel]
        raise Stop

    monkeypatch.setattr(qad_train, "make_optimizer", first_step)
    cfg = QADConfig(checkpoint="ck", out_dir="out", batch_size=16)
    with pytest.raises(Stop):
        qad_train.train_qad(cfg, student, FLAVOURS["ort-cpu"], calib, None, torch.device("cpu"), lambda m: None, KeptFloat())
    reference = fake_quant_model(student, FLAVOURS["ort-cpu"])  # calibration alone, as train_qad does it
    reference.apply(torch.ao.quantization.disable_fake_quant)
    set_observers(reference, True)
    with torch.no_grad():
        for _, x in qad_train.batches(calib, 16, torch.device("cpu")):
            reference(x)
    expected = [(float(f.activation_post_process.min_val), float(f.activation_post_process.max_val))
                for f in fake_quants(reference) if not f.is_per_channel]
    assert seen["ranges"] == expected


def test_the_relu6_table_builds_in_a_fresh_process():
    """torch 2.13's BackendConfig setters need a submodule nothing imported yet in a fresh process."""
    import subprocess
    import sys

    code = ("from distill.export.relu6 import with_relu6_fusion\n"
            "from torch.ao.quantization.backend_config import get_native_backend_config\n"
            "print(len(with_relu6_fusion(get_native_backend_config()).configs))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]
