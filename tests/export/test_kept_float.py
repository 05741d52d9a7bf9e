"""QAD keeps the layers the export's float fallback keeps in float (distill/export/kept_float.py and
fakequant.keep_in_float): ONNX node names traced back to student layers for both exporters, and a fake-quant
student whose QDQ file has float weights exactly there."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from distill.errors import DistillError
from distill.export.fakequant import conv_bn_pairs, export_qdq, fake_quant_model
from distill.export.fq_state import calibrate_ranges
from distill.export.kept_float import kept_modules, module_of_node
from distill.export.onnx import export_onnx
from distill.export.quantize import FLAVOURS, qdq_report
from distill.records import ExportReport, QADRecord
from distill.student.model import Student, default_spec, load_student


def _student(arch: str = "test_resnet") -> Student:
    torch.manual_seed(0)
    return Student(default_spec(arch, ["a", "b", "c"], input_size=32)).eval()


def _layers(student: Student) -> set[str]:
    return {n for n, m in student.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}


def test_torchscript_scope_names_become_module_paths():
    assert module_of_node("/backbone/blocks/blocks.1/blocks.1.0/conv_pw/Conv") == "backbone.blocks.1.0.conv_pw"
    assert module_of_node("/backbone/conv_stem/Conv") == "backbone.conv_stem"
    assert module_of_node("/head/Gemm") == "head"
    assert module_of_node("/backbone/layer1/layer1.0/downsample/downsample.0/Conv") == \
        "backbone.layer1.0.downsample.0"
    assert module_of_node("node_Conv_12") == ""


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("arch", ["test_resnet", "mobilenetv3_small_050"])
def test_every_conv_and_gemm_node_traces_back_to_its_student_layer(exporter, arch, tmp_path):
    """Each Conv / Gemm of the fp32 ONNX names one conv or linear layer of the student, all layers are named once,
    whichever exporter wrote it (dynamo: node metadata, the BatchNorm scope of a folded conv led back to the conv)."""
    student = _student(arch)
    path = tmp_path / "m.onnx"
    export_onnx(student, path, exporter=exporter)
    nodes = [n.name for n in onnx.load(str(path)).graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    conv_of_bn = {bn: conv for conv, bn in conv_bn_pairs(student).items()}
    found, missing = kept_modules(nodes, student, conv_of_bn, [path])
    assert missing == []
    assert sorted(found) == sorted(_layers(student)) and len(found) == len(nodes)
    # the same names without the file: dynamo's are opaque and are returned as not found, never guessed
    if exporter == "dynamo":
        assert kept_modules(nodes[:2], student, conv_of_bn, [])[1] == nodes[:2]


def _float_weights(path: Path) -> list[str]:
    return [r["node"] for r in qdq_report(path) if len(r["inputs"]) > 1 and not r["inputs"][1]["dequantized"]]


def _weight_scale(graph: onnx.GraphProto, node: onnx.NodeProto) -> np.ndarray:
    """The scale of the DequantizeLinear feeding ``node``'s weight."""
    producer = {o: n for n in graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    return inits[producer[node.input[1]].input[1]]


@pytest.mark.parametrize("flavour", ["ort-cpu", "tensorrt"])
def test_kept_layers_leave_the_int8_recipe_in_the_fake_quant_student_and_its_qdq_file(tmp_path, flavour):
    """Kept: no per-channel weights. The first conv reads the float image (no Q/DQ on the input) and keeps float
    weights and bias; a kept head writes float logits and keeps float weights too, on both flavours (onnxruntime
    quantizes only a layer between int8 layers: the next test). Every other layer: per-channel."""
    student = _student()
    fl = FLAVOURS[flavour]
    first = next(n for n in ("backbone.conv1", "backbone.conv1.0") if n in _layers(student))
    model = fake_quant_model(student, fl, [first, "head"])
    calibrate_ranges(model, (torch.randn(8, 3, 32, 32) for _ in range(2)))
    path = export_qdq(model, tmp_path / "q.onnx", (32, 32), fl)
    graph = onnx.load(str(path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    floats = _float_weights(path)
    stem = next(n for n in graph.node if n.op_type == "Conv" and n.input[0] == graph.input[0].name)
    gemm = next(n for n in graph.node if n.op_type == "Gemm")
    assert stem.name in floats and producer.get(stem.input[2]) is None  # float weight and bias on the float image
    assert graph.output[0].name == gemm.output[0]  # float logits
    assert sorted(floats) == sorted([stem.name, gemm.name])
    convs = [n for n in graph.node if n.op_type == "Conv" and n is not stem]
    assert convs and all(_weight_scale(graph, n).size > 1 for n in convs)  # the rest: per output channel
    # without keep_float: every layer int8 (the names above did change something)
    plain = fake_quant_model(student, fl)
    calibrate_ranges(plain, (torch.randn(8, 3, 32, 32) for _ in range(2)))
    assert _float_weights(export_qdq(plain, tmp_path / "all.onnx", (32, 32), fl)) == []


def test_onnxruntime_quantizes_a_float_layer_between_int8_layers_per_tensor(tmp_path):
    """Why ort-cpu's kept layers are fake-quantized per tensor: onnxruntime (1.32 here) quantizes the float weight of a
    Conv whose input is dequantized when the session is created. If a later onnxruntime stops doing it, this fails
    and the fake-quant recipe for kept layers should follow."""
    import onnxruntime as ort

    student = _student()
    fl = FLAVOURS["ort-cpu"]
    mid = "backbone.layer2.0.downsample.1"
    with torch.no_grad():  # one output channel 30x the others: a per-tensor grid crushes the rest
        student.get_submodule(mid).weight[0].mul_(30.0)
    x = torch.randn(64, 3, 32, 32)

    def mismatch(keep: list[str], float_weights: bool = False) -> float:
        """Mean |torch fake-quant - onnxruntime| logits of the fake-quant student with ``keep`` kept."""
        import distill.export.fakequant as fakequant

        real = fakequant.ort_requantized_weight
        if float_weights:  # what QAD did before: a kept layer's weights float in torch
            fakequant.ort_requantized_weight = torch.nn.Identity
        try:
            model = fake_quant_model(student, fl, keep)
        finally:
            fakequant.ort_requantized_weight = real
        calibrate_ranges(model, (x[i:i + 16] for i in range(0, 64, 16)))
        with torch.no_grad():
            mine = model.eval()(x).numpy()
        path = export_qdq(model, tmp_path / f"m{len(keep)}{float_weights}.onnx", (32, 32), fl)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return float(np.abs(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0] - mine).mean())

    every, kept, as_float = mismatch([]), mismatch([mid]), mismatch([mid], float_weights=True)
    assert kept < 2 * every  # the kept layer adds no mismatch of its own
    assert as_float > 5 * kept  # float weights in torch: onnxruntime ran something else
    # and the float file, optimized by onnxruntime at its basic level, has a quantized weight there
    path = tmp_path / "m1True.onnx"
    float_node = _float_weights(path)
    assert len(float_node) == 1
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(tmp_path / "basic.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(tmp_path / "basic.onnx")).graph
    producer = {o: n for n in graph.node for o in n.output}
    node = next(n for n in graph.node if n.name == float_node[0])
    assert producer[node.input[1]].op_type == "DequantizeLinear"
    # the export's rule picks the same layer to write per tensor (distill/export/ort_weights.py), and only it
    from distill.export.ort_weights import per_tensor_weights

    assert per_tensor_weights(onnx.load(str(path))) == float_node


def test_a_name_that_is_no_layer_is_refused_in_one_line():
    with pytest.raises(DistillError, match=r"'backbone\.nope' is not a conv or linear layer") as e:
        fake_quant_model(_student(), FLAVOURS["ort-cpu"], ["backbone.nope"])
    assert "\n" not in str(e.value)


def _with_fallback(export_dir: Path, dest: Path, nodes: list[str], flavour: str = "ort-cpu") -> Path:
    """A copy of ``export_dir`` whose int8 file of ``flavour`` is said to keep ``nodes`` in float (export.json's
    fallback), as an export whose int8 missed --max-drop says it."""
    shutil.copytree(export_dir, dest)
    report = json.loads((dest / "export.json").read_text())
    for m in report["models"]:
        if m["precision"] == "int8" and m.get("flavour") == flavour:
            m["fallback"] = {**(m.get("fallback") or {}), "kept_float": nodes}
    (dest / "export.json").write_text(json.dumps(report))
    assert ExportReport.read(dest)  # still a valid record
    return dest


@pytest.mark.parametrize("flavour", ["ort-cpu", "tensorrt"])
def test_qad_keeps_the_exports_float_layers_unless_told_to_quantize_all(run_ckpt, export_dir, tmp_path, flavour):
    """The kept layers are float in QAD's file and named in qad.json; the tensorrt flavour's Q/DQ check excuses
    exactly them (a float layer is otherwise a problem there); --quantize-all makes every layer int8 again."""
    from distill.export.qad import qad
    from distill.export.qad_config import QADConfig

    int8 = export_dir / f"model.int8-{flavour}.onnx"
    convs = [n.name for n in onnx.load(str(int8)).graph.node if n.op_type in ("Conv", "Gemm")]
    student = load_student(run_ckpt)
    conv_of_bn = {bn: conv for conv, bn in conv_bn_pairs(student).items()}
    picked = [convs[0], convs[-1]]  # the first conv and the head
    layers, _ = kept_modules(picked, student, conv_of_bn, [int8, export_dir / "model.fp32.onnx"])
    assert len(layers) == 2
    exp = _with_fallback(export_dir, tmp_path / "exp", picked + ["/no/such/Conv"], flavour)
    common = {"checkpoint": str(run_ckpt), "export_dir": str(exp), "epochs": 1, "eval_count": 8,
              "holdout_count": 16, "flavour": flavour}
    lines: list[str] = []
    record = qad(QADConfig(out_dir=str(tmp_path / "keep"), **common), log=lines.append)
    assert record.kept_float == layers
    # float weights, both flavours: the first conv reads the image, the head writes the logits
    assert len(record.qdq_check["float_weight_nodes"]) == 2
    assert record.qdq_check["tensorrt_problems"] == []  # tensorrt: the two float layers are excused, nothing else
    if flavour == "tensorrt":  # without the excuse they are problems: the check above could fail
        from distill.export.quantize import tensorrt_qdq_problems

        assert len(tensorrt_qdq_problems(tmp_path / "keep" / record.qad_file)) >= 2
    assert QADRecord.read(tmp_path / "keep").kept_float == layers
    assert any("quantizes 1 layer(s) the export kept in float" in line and "/no/such/Conv" in line for line in lines)
    every = qad(QADConfig(out_dir=str(tmp_path / "all"), quantize_all=True, **common), log=lambda s: None)
    assert every.kept_float == [] and every.qdq_check["float_weight_nodes"] == []


def test_the_arms_benchmark_runs_qad_per_arm_on_an_edge_students_folder(run_ckpt, export_dir, tmp_path,
                                                                         monkeypatch, capsys):
    """benchmarks/qad_arms.py: one `distill qad --export` per run and arm (the arm's settings over the defaults),
    each file scored on the whole test split; a bad arm is refused before anything runs."""
    from tests.test_benchmarks import _script

    bench = _script("qad_arms")
    assert bench.parse_arms(["a:", "b:lr=1e-4,quantize_all=true,epochs=2"]) == {
        "a": {}, "b": {"lr": 1e-4, "quantize_all": True, "epochs": 2}}
    with pytest.raises(DistillError, match="lr_typo") as e:
        bench.parse_arms(["a:lr_typo=1"])
    assert "\n" not in str(e.value)
    with pytest.raises(SystemExit, match="a name of its own"):
        bench.parse_arms(["a:", "a:lr=1e-4"])

    edge = tmp_path / "edge"  # what benchmarks/edge_students.py leaves: runs/TAG, export/TAG, records/TAG.json
    tag = "test_resnet-e1-s0"
    for sub, src in (("runs", run_ckpt.parents[1]), ("export", export_dir)):
        (edge / sub).mkdir(parents=True)
        (edge / sub / tag).symlink_to(src)
    (edge / "records").mkdir()
    (edge / "records" / f"{tag}.json").write_text(json.dumps({"targets": ["noisy"]}))  # the export's, as edge_students
    small = "epochs=1,eval_count=8,holdout_count=16"  # calibration: the export's 64 images
    monkeypatch.setattr("sys.argv", ["qad_arms.py", str(edge), "--out", str(tmp_path / "arms"),
                                     "--arm", f"keep:{small}", "--arm", f"all:{small},quantize_all=true"])
    bench.main()
    printed = capsys.readouterr().out
    for arm in ("keep", "all"):
        assert QADRecord.read(tmp_path / "arms" / arm / tag).config["export_dir"] == str(edge / "export" / tag)
    assert QADRecord.read(tmp_path / "arms" / "all" / tag).config["quantize_all"] is True
    assert f"| {tag} | " in printed and "keep vs all, paired" in printed and "paired t-test" in printed
    row = next(line for line in printed.splitlines() if line.startswith(f"| {tag} | "))
    moved = [float(cell.rsplit(", ", 1)[1].rstrip(" %")) for cell in row.strip(" |").split(" | ")[3:5]]
    assert len(moved) == 2 and all(0.0 <= m <= 100.0 for m in moved)  # per arm: the int8 weights QAD changed


def test_the_arms_benchmark_counts_a_domains_accuracy_loss_only_beyond_chance():
    """qad_arms.figures: 20 of 100 images lost on domain a is beyond chance (McNemar), 2 lost on b is not."""
    from tests.test_benchmarks import _script

    bench = _script("qad_arms")
    domains = np.repeat(np.array(["a", "b"]), 100)
    fp32 = np.ones(200, bool)
    correct = fp32.copy()
    correct[:20] = False        # domain a: 20 points lost
    correct[100:102] = False    # domain b: 2 points lost
    s = bench.figures(~correct, correct, fp32, domains, ["a", "b"])
    assert s.drops_beyond_chance == 1 and (s.acc_drop_worst, s.disagree_mean) == pytest.approx((20.0, 11.0))
    correct[100:120] = False
    assert bench.figures(~correct, correct, fp32, domains, ["a", "b"]).drops_beyond_chance == 2


def test_qad_and_the_export_give_per_tensor_weights_to_the_same_kept_layers(tmp_path, monkeypatch):
    """mobilenetv3: a squeeze-excite gate conv (its hard-sigmoid folded in), a pointwise conv and the head kept. QAD's
    fake-quant rule (a fake-quantized input and one fake-quantized consumer) and the export's
    (distill/export/ort_weights.py, onnxruntime's: a dequantized input, a path to a QuantizeLinear) pick the same
    layers for per-tensor weights: the two convs, not the head writing the logits."""
    import distill.export.fakequant as fakequant
    from distill.export.ort_weights import per_tensor_weights

    student = _student("mobilenetv3_small_050")
    layers = _layers(student)
    keep = [next(n for n in sorted(layers) if n.endswith("se.conv_expand")),
            next(n for n in sorted(layers) if n.endswith("conv_pw")), "head"]
    fl = FLAVOURS["ort-cpu"]
    model = fake_quant_model(student, fl, keep)
    per_tensor = sorted(n for n in keep if isinstance(model.get_submodule(f"student.{n}").weight_fake_quant,
                                                      torch.ao.quantization.FakeQuantize))
    assert per_tensor == sorted(keep[:2])
    monkeypatch.setattr(fakequant, "ort_requantized_weight", torch.nn.Identity)  # every kept layer float in the file
    floats = fake_quant_model(student, fl, keep)
    calibrate_ranges(floats, (torch.randn(8, 3, 32, 32) for _ in range(2)))
    path = export_qdq(floats, tmp_path / "float.onnx", (32, 32), fl)
    # the file's node names end in the layer's own name (torch.fx flattens the path)
    assert sorted(n.split("/")[-2] for n in per_tensor_weights(onnx.load(str(path)))) == sorted(
        n.rsplit(".", 1)[-1] for n in per_tensor)
