"""distill qad: the fake-quant student, its QDQ ONNX, the tuned checkpoint, the config and the CLI."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from distill.cli import main
from distill.data.folder import DomainFolder
from distill.errors import DistillError
from distill.export.fakequant import conv_bn_pairs, export_qdq, fake_quant_model, tuned_student
from distill.export.fq_state import calibrate_ranges, fake_quants
from distill.export.images import load_images
from distill.export.qad import qad
from distill.export.qad_config import QADConfig, QADRecord
from distill.export.quantize import FLAVOURS, qdq_report, tensorrt_qdq_problems
from distill.records import EXPORT_CHECKPOINT
from distill.student.model import Student, default_spec, load_student


def _images(root: Path, spec, count: int = 48) -> np.ndarray:
    folder = DomainFolder(root)
    samples = folder.select(["clean", "dark", "noisy"], "train")
    imgs = load_images(folder, samples[:: max(1, len(samples) // count)][:count], spec)
    return imgs.normalize(imgs.images)


def _calibrated(student: Student, flavour: str, x: np.ndarray) -> torch.nn.Module:
    return calibrate_ranges(fake_quant_model(student, FLAVOURS[flavour]), [torch.from_numpy(x)]).eval()


def _ort(path: Path, x: np.ndarray, level: str = "ORT_ENABLE_ALL") -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


@pytest.mark.parametrize("flavour", ["ort-cpu", "tensorrt"])
def test_qdq_export_is_int8_runs_in_onnxruntime_and_matches_the_fake_quant_model(run_ckpt, tiny_root, tmp_path,
                                                                                 flavour):
    student = load_student(run_ckpt)
    x = _images(tiny_root, student.spec)
    model = _calibrated(student, flavour, x)
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(x)).numpy()
    path = export_qdq(model, tmp_path / "q.onnx", student.spec.input_size, FLAVOURS[flavour])

    rows = qdq_report(path)
    assert rows and all(inp["dequantized"] for r in rows for inp in r["inputs"]), rows
    weights = [r["inputs"][1] for r in rows]
    assert all(w["zero_point_dtype"] == "int8" and -127 <= w["int_range"][0] <= w["int_range"][1] <= 127
               for w in weights), weights
    activation_zp = {r["inputs"][0]["zero_point_dtype"] for r in rows}
    assert activation_zp == ({"uint8"} if flavour == "ort-cpu" else {"int8"})
    if flavour == "tensorrt":
        assert tensorrt_qdq_problems(path) == []  # includes: no int32 (quantized) bias
    else:  # biases int32 with scale = input scale x weight scale, as onnxruntime's PTQ writes them
        proto = onnx.load(str(path))
        int32 = {t.name for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT32}
        assert sum(n.op_type == "DequantizeLinear" and n.input[0] in int32 for n in proto.graph.node) == len(rows)

    # the QDQ graph run as written (float Q/DQ, no integer kernels) is the fake-quant model: only
    # accumulation order differs, which can move a value across a rounding boundary by one step
    plain = _ort(path, x, "ORT_DISABLE_ALL")
    scale = max(1.0, float(np.abs(torch_logits).max()))
    assert np.abs(plain - torch_logits).max() <= 0.05 * scale
    assert (plain.argmax(1) == torch_logits.argmax(1)).mean() >= 0.9
    # onnxruntime's fused int8 kernels (QLinearConv...) round differently, never by more than a loose bound
    fused = _ort(path, x)
    assert np.abs(fused - torch_logits).max() <= 0.25 * scale
    assert (fused.argmax(1) == torch_logits.argmax(1)).mean() >= 0.9


def test_the_onnx_file_holds_the_trained_activation_scales(run_ckpt, tiny_root, tmp_path):
    """Each activation DequantizeLinear's scale is one of the fake-quant model's (not recomputed by onnxruntime)."""
    student = load_student(run_ckpt)
    model = _calibrated(student, "ort-cpu", _images(tiny_root, student.spec))
    for fq in fake_quants(model):  # scales no calibration would produce: only a copy of the model's can match
        if not fq.is_per_channel:
            fq.scale.mul_(1.37)
    torch_scales = {round(float(fq.scale), 7) for fq in fake_quants(model) if not fq.is_per_channel}
    proto = onnx.load(str(export_qdq(model, tmp_path / "q.onnx", student.spec.input_size, FLAVOURS["ort-cpu"])))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    onnx_scales = {round(float(inits[n.input[1]]), 7) for n in proto.graph.node
                   if n.op_type == "QuantizeLinear" and inits[n.input[1]].size == 1}
    assert onnx_scales and onnx_scales <= torch_scales


@pytest.mark.parametrize("arch", ["test_resnet", "mobilenetv3_small_050"])
def test_tuned_student_is_the_fake_quant_models_float_twin(arch):
    """BN folded for fake-quant, written back as conv weight + identity BN: same logits, same module names."""
    torch.manual_seed(0)
    student = Student(default_spec(arch, ["a", "b", "c"], 32)).eval()
    for m in student.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial statistics to fold
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)
    model = fake_quant_model(student, FLAVOURS["ort-cpu"]).eval()
    model.apply(torch.ao.quantization.disable_fake_quant)
    with torch.no_grad():
        for p in model.parameters():  # "training" moved every weight
            p.add_(0.01 * torch.randn_like(p))
        x = torch.randn(4, 3, 32, 32)
        twin = tuned_student(model, student, conv_bn_pairs(student))
        assert torch.allclose(twin(x), model(x), atol=1e-4, rtol=1e-4)
        assert not torch.allclose(twin(x), student(x), atol=1e-4)
    assert twin.state_dict().keys() == student.state_dict().keys()


def test_qad_writes_the_int8_file_the_tuned_checkpoint_and_the_record(run_ckpt, tmp_path, capsys):
    out = tmp_path / "qad"
    assert main(["qad", str(run_ckpt), "--out", str(out), "--epochs", "1", "--calib-count", "32",
                 "--eval-count", "8", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "int8/ort-cpu (QAD)" in printed and "PTQ" in printed
    record = QADRecord.read(out)
    # the no-harm rule decided on hold-out images and the CLI names the file to ship
    assert record.ship in ("qad", "ptq") and record.holdout_images > 0 and (out / record.ship_file).is_file()
    assert f"int8 file: {out}/{record.ship_file} ({record.ship.upper()} int8): {record.ship_reason}" in printed
    assert record.teacher == "fp32" and record.flavour == "ort-cpu" and len(record.losses) == 1
    assert set(record.ptq.calibration) == set(record.qad.calibration) == {"clean", "dark"}  # the run's sources
    assert set(record.qad.test) == {"clean", "dark", "noisy"}
    assert all(0.0 <= v <= 100.0 for v in [*record.ptq.calibration.values(), *record.qad.test.values()])
    assert record.torch_vs_onnx["top1_agreement"] >= 0.9
    acc = record.accuracy  # test accuracy per domain of fp32, PTQ and QAD, scored on the same held-out images
    assert acc is not None and set(acc.fp32) == set(acc.ptq) == set(acc.qad) == set(acc.count) == set(record.qad.test)
    assert sum(acc.count.values()) == record.test_images
    for d in acc.fp32:  # |acc - acc_fp32| <= top-1 disagreement with fp32 on the same images
        assert 0.0 <= acc.fp32[d] <= 1.0
        assert abs(100 * (acc.ptq[d] - acc.fp32[d])) <= record.ptq.test[d] + 1e-6
        assert abs(100 * (acc.qad[d] - acc.fp32[d])) <= record.qad.test[d] + 1e-6
    assert record.qdq_check["int8_weight_nodes"] == record.qdq_check["compute_nodes"] > 0
    tuned = load_student(out / EXPORT_CHECKPOINT)
    assert tuned.spec.provenance["qad"]["flavour"] == "ort-cpu"
    session = ort.InferenceSession(str(out / record.qad_file), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["distill.precision"] == "int8" and '"qad": true' in meta["distill.quantization"]
    assert session.run(None, {"input": np.zeros((2, 3, 32, 32), np.float32)})[0].shape == (2, 4)


def test_the_log_ends_training_with_the_end_state_disagreement(run_ckpt, tmp_path, monkeypatch):
    """The epoch line counts flips while the weights still move; the line after it is the model as trained, which
    the file written scores (qad.json). Injected: the weights perturbed after the last step, an end state far from
    the epoch's (QA: '15.62 pts (during the epoch)', then a file at 78-90 with nothing in the log to say so)."""
    import re

    import distill.export.qad as qad_module
    from tests.export.test_qad_ship import _damaging

    monkeypatch.setattr(qad_module, "train_qad", _damaging(qad_module.train_qad))
    lines: list[str] = []
    record = qad(QADConfig(checkpoint=str(run_ckpt), out_dir=str(tmp_path / "q"), epochs=1, calib_domains="clean",
                           calib_count=32, eval_count=4, holdout_count=8), log=lines.append)
    points = [(i, float(m.group(1))) for i, line in enumerate(lines)
              if (m := re.search(r"fake-quant top-1 disagreement with fp32 ([0-9.]+) pts", line))]
    (during,) = [i for i, line in enumerate(lines) if "(during the epoch)" in line]
    last, logged = points[-1]
    assert last > during and lines[last].startswith("QAD: after training, fake-quant top-1 disagreement with fp32 ")
    # one calibration domain: the file's figure is over the same 32 images; torch and onnxruntime may part on a
    # near-tie, each such image moving the count by one (the log rounds to 0.01)
    agreement = record.torch_vs_onnx["top1_agreement"]
    assert set(record.qad.calibration) == {"clean"} and record.calibration_images == 32
    assert abs(logged - record.qad.calibration["clean"]) <= 100 * (1 - agreement) + 0.005 + 1e-9
    assert logged > dict(points)[during] + 10  # the damage shows in the last number, not in the epoch's


@pytest.mark.parametrize("options,message", [
    ({"epochs": 0}, "--epochs: Input should be greater than or equal to 1 (got 0)"),
    ({"flavour": "int4"}, "--flavour: Input should be 'ort-cpu' or 'tensorrt' (got 'int4')"),
    ({"device": "gpu"}, "--device: must be cpu, cuda or cuda:N (got 'gpu')"),
    ({"lr": -1}, "--lr: Input should be greater than 0"),
    ({"cache_weight": 2}, "--cache-weight: Input should be less than or equal to 1"),
    ({"epochs": 2, "observer_epochs": 3, "ranges": "observed"}, "--observer-epochs 3 must be <= --epochs 2"),
    ({"observer_epochs": 1}, "--observer-epochs 1 applies to observed ranges: pass ranges=observed"),
    ({"quantize_all": True}, "--quantize-all applies with --export only"),
    ({"ranges": "minmax"}, "--ranges: Input should be 'learned' or 'observed' (got 'minmax')"),
    ({"bogus": 1}, "qad config: unknown key 'bogus'"),
    ({"optimizer": "adam"}, "--optimizer: Input should be 'sgd' or 'adamw' (got 'adam')"),
])
def test_config_refuses_bad_values_in_one_line(options, message):
    from distill.cli.qad import FLAGS

    with pytest.raises(DistillError) as e:
        QADConfig.from_options({"checkpoint": "ck", "out_dir": "out", **options}, names=FLAGS)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert "{" not in str(e.value) and "(top level)" not in str(e.value)  # not the whole config


def test_cross_field_errors_are_one_short_line_naming_the_flags(tmp_path, capsys):
    """A problem of two options (a model validator's) used to print the whole config dict and the keys."""
    assert main(["qad", "ck", "--out", str(tmp_path / "x"), "--observer-epochs", "5", "--epochs", "2",
                 "--ranges", "observed"]) == 1
    assert capsys.readouterr().err.strip() == "error: --observer-epochs 5 must be <= --epochs 2"
    assert main(["qad", "ck", "--out", str(tmp_path / "x"), "--quantize-all"]) == 1  # was silently ignored
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --quantize-all applies with --export only") and "\n" not in err
    with pytest.raises(DistillError) as e:  # Python callers get the keys
        QADConfig.from_options({"checkpoint": "ck", "out_dir": "o", "observer_epochs": 5, "epochs": 2,
                                "ranges": "observed"})
    assert str(e.value) == "observer_epochs (5) must be <= epochs (2)"
    assert not (tmp_path / "x").exists()


def test_a_bad_cache_is_refused_before_the_data_is_read_or_the_out_folder_made(run_ckpt, tmp_path, monkeypatch):
    import distill.export.qad as qad_module

    def no_data(*args, **kwargs):
        raise AssertionError("the data was scanned before --cache was checked")

    monkeypatch.setattr(qad_module, "load_export_data", no_data)
    out = tmp_path / "q"
    with pytest.raises(DistillError, match="nonexistent: not a teacher cache"):
        qad(QADConfig(checkpoint=str(run_ckpt), out_dir=str(out), cache=str(tmp_path / "nonexistent"), epochs=1),
            log=lambda s: None)
    assert not out.exists()


@pytest.mark.parametrize("into", ["checkpoint", "run"])
def test_qad_into_a_checkpoint_or_run_folder_is_refused_as_export_refuses_it(run_ckpt, tmp_path, capsys, into):
    """`distill qad RUN/checkpoints/best --out RUN/checkpoints/best` (or `--out RUN`) wrote its int8 files and its
    checkpoint/ among the checkpoint's or the run's; `distill export` refused such an --out already."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_ckpt.parents[1], run)  # a copy: the session's run must stay as it is
    checkpoint = run / "checkpoints" / "best"
    out = checkpoint if into == "checkpoint" else run
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    rc = main(["qad", str(checkpoint), "--out", str(out), "--epochs", "1", "--calib-count", "8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    what = "a checkpoint folder (student.json)" if into == "checkpoint" else "a training run's folder (config.yaml"
    assert err[0].startswith(f"error: {out}: is {what}") and "distill qad's files would mix" in err[0], err
    assert err[0].endswith("give --out a folder of its own, e.g. qad/run"), err
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before  # nothing written


def test_the_epoch_loss_is_logged_without_a_rounding_minus_sign():
    from distill.export.qad_train import loss_text

    assert [loss_text(x) for x in (-0.0, -3e-9, 0.0, 3.14e-5, 0.01234, 1.5)] == \
        ["0.0000", "0.0000", "0.0000", "3.1e-05", "0.0123", "1.5000"]


def test_cli_eval_count_zero_means_every_test_image_as_in_export():
    from distill.cli import build_parser
    from distill.cli.qad import FLAGS, config_options

    def parsed(*flags):
        args = build_parser().parse_args(["qad", "ck", "--out", "out", *flags])
        return QADConfig.from_options(config_options(args), names=FLAGS)

    assert parsed("--eval-count", "0").eval_count is None and parsed().eval_count == 200
    assert parsed("--eval-count", "7").eval_count == 7


def test_cli_bad_flag_is_one_error_line(tmp_path, capsys):
    assert main(["qad", str(tmp_path), "--out", str(tmp_path / "o"), "--epochs", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--epochs" in err


def test_not_a_checkpoint_is_one_line(tmp_path):
    with pytest.raises(DistillError, match="not a student checkpoint"):
        qad(QADConfig(checkpoint=str(tmp_path), out_dir=str(tmp_path / "o")))


def test_an_untraceable_student_is_named():
    student = Student(default_spec("test_resnet", ["a", "b"], 16)).eval()
    student.features = lambda x: x.flatten(1)[:, :1] if bool(x.sum() > 0) else x  # data-dependent branch
    with pytest.raises(DistillError, match="torch.fx cannot trace it"):
        fake_quant_model(student, FLAVOURS["ort-cpu"])
    with pytest.raises(DistillError, match="torch.fx cannot trace it"):  # qad traces it first for the BN pairs
        conv_bn_pairs(student)


def test_qad_with_a_teacher_cache_mixes_in_its_soft_labels(run_ckpt, tiny_cache, tmp_path, monkeypatch):
    import distill.export.qad as qad_module

    seen = {}
    real = qad_module.train_qad

    def spy(cfg, student, flavour, calib, teacher_logits, device, say, keep):
        seen["teacher"], seen["images"] = teacher_logits, len(calib)
        return real(cfg, student, flavour, calib, teacher_logits, device, say, keep)

    monkeypatch.setattr(qad_module, "train_qad", spy)
    record = qad(QADConfig(checkpoint=str(run_ckpt), out_dir=str(tmp_path / "q"), cache=str(tiny_cache), epochs=1,
                           calib_count=16, eval_count=4), log=lambda s: None)
    assert record.teacher == "fp32+cache"
    assert seen["teacher"].shape == (seen["images"], 4) and torch.isfinite(seen["teacher"]).all()


def test_a_cache_of_other_data_is_refused(run_ckpt, tiny_cache, tmp_path, tiny_root):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(tiny_root, other)
    for p in list((other / "clean" / "checker").iterdir())[:3]:  # another file list: another fingerprint
        p.unlink()
    with pytest.raises(DistillError, match="built from other data"):
        qad(QADConfig(checkpoint=str(run_ckpt), out_dir=str(tmp_path / "q"), cache=str(tiny_cache),
                      data_root=str(other), epochs=1, calib_count=8, eval_count=4), log=lambda s: None)


def _random_bn_student(arch: str) -> Student:
    torch.manual_seed(0)
    student = Student(default_spec(arch, ["a", "b", "c", "d"], 32)).eval()
    for m in student.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial statistics: folded biases far from any grid
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)
    return student


def test_the_fake_quant_biases_are_the_int32_biases_the_file_holds(tmp_path):
    """ort-cpu: each Conv/Gemm bias in torch is exactly the file's int32 bias x (input scale x weight scale),
    the value onnxruntime adds; a float bias in torch left every biased output a fraction of a step off."""
    student = _random_bn_student("mobilenetv3_small_050")
    model = _calibrated(student, "ort-cpu", torch.randn(32, 3, 32, 32).numpy())
    torch_biases = np.sort(np.concatenate([m.bias.detach().numpy().ravel() for m in model.modules()
                                           if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
                                           and m.bias is not None]))
    proto = onnx.load(str(export_qdq(model, tmp_path / "q.onnx", student.spec.input_size, FLAVOURS["ort-cpu"])))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    file_biases = np.sort(np.concatenate([  # DequantizeLinear(int32) in float32, as onnxruntime computes it
        (inits[n.input[0]].astype(np.float32) * inits[n.input[1]]).ravel() for n in proto.graph.node
        if n.op_type == "DequantizeLinear" and inits.get(n.input[0], np.zeros(0, np.int8)).dtype == np.int32]))
    assert file_biases.size == torch_biases.size > 0
    assert np.array_equal(torch_biases, file_biases)
    # and the trained (float) values are what the tuned checkpoint and the next export start from
    with torch.no_grad():
        twin = tuned_student(model, student, conv_bn_pairs(student))
    assert not np.array_equal(np.sort(np.concatenate([p.detach().numpy().ravel() for n, p in twin.named_parameters()
                                                      if n.endswith("bias")])), file_biases)


def test_squeeze_excite_means_stay_float_as_in_onnxruntimes_ptq():
    """A mean's output is not re-quantized on its input's grid (torch.ao's default for mean: the input's
    own fake-quant, "shared qparams"): the next conv's input gets a range of its own, as in onnxruntime's
    PTQ graph, where the mean's output is quantized with its own range (QLinearGlobalAveragePool)."""
    student = _random_bn_student("mobilenetv3_small_050")
    model = fake_quant_model(student, FLAVOURS["ort-cpu"])
    means = [n for n in model.graph.nodes if n.op == "call_method" and n.target == "mean"]
    assert means  # squeeze-excite blocks
    for mean in means:
        before = model.get_submodule(mean.args[0].target)
        after = [model.get_submodule(u.target) for u in mean.users if u.op == "call_module"]
        assert after and all(isinstance(a, torch.ao.quantization.FakeQuantize) and a is not before for a in after), \
            mean.name


@pytest.mark.parametrize("options,kind,lr", [({}, torch.optim.SGD, 1e-4), ({"optimizer": "adamw"}, torch.optim.AdamW, 1e-4),
                                             ({"lr": 5e-3}, torch.optim.SGD, 5e-3)])
def test_qad_steps_with_sgd_and_momentum_unless_asked(options, kind, lr):
    """SGD's steps shrink with the gradient; AdamW's do not (a student PTQ already quantizes well drifts: RESULTS.md,
    "Trained edge students", resnet18), so SGD + momentum is the default, AdamW an option."""
    from distill.export.qad_train import make_optimizer

    cfg = QADConfig(checkpoint="ck", out_dir="o", **options)
    opt = make_optimizer(cfg, [torch.nn.Parameter(torch.zeros(3))])
    assert type(opt) is kind and opt.param_groups[0]["lr"] == lr and opt.param_groups[0]["weight_decay"] == 0.0
    if kind is torch.optim.SGD:
        assert opt.param_groups[0]["momentum"] == 0.9


def test_a_zero_gradient_step_leaves_the_weights_where_they_are():
    """The reason for the default: with the loss at its minimum (fake-quant = fp32 on a batch) SGD does not move
    the student, AdamW moves every weight by ~lr (its update is normalized)."""
    from distill.export.qad_train import make_optimizer

    moved = {}
    for name in ("sgd", "adamw"):
        w = torch.nn.Parameter(torch.ones(4))
        opt = make_optimizer(QADConfig(checkpoint="ck", out_dir="o", optimizer=name), [w])
        for _ in range(3):
            opt.zero_grad()
            (1e-8 * w.sum()).backward()  # a nearly flat loss
            opt.step()
        moved[name] = float((w.detach() - 1).abs().max())
    assert moved["sgd"] < 1e-9 < 1e-4 < moved["adamw"]


# ----------------------------------------------------------------------------- the no-harm rule (issue 21)
