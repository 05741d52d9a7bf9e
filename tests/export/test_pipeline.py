"""distill.export.pipeline end to end on a trained tiny student: parity, metadata, fp16 I/O, int8, export.json."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from distill.errors import DistillError
from distill.export import ExportConfig, export_checkpoint, read_metadata
from distill.export.evaluate import drop_p_values, parity
from distill.export.images import ImageSet, load_images, pick_per_domain
from distill.records import ExportReport
from distill.student.model import load_student


def _report(export_dir: Path) -> dict:
    """export.json, validated by its record on the way in."""
    return ExportReport.read(export_dir).to_dict()


def _model(report: dict, precision: str, flavour: str | None = None) -> dict:
    return next(m for m in report["models"] if m["precision"] == precision and m.get("flavour") == flavour)


def _accuracy_from_file(onnx_path: Path, root: Path, ckpt: Path, domains) -> dict[str, float]:
    """Per-domain test accuracy of an ONNX file, computed here with onnxruntime (not from export.json):
    every test image of each domain, decoded and cropped as the student's eval transform does."""
    from distill.data.folder import DomainFolder

    folder = DomainFolder(root)
    spec = load_student(ckpt).spec
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = {}
    for d in domains:
        imgs = load_images(folder, folder.select([d], "test"), spec)
        x = imgs.normalize(imgs.images)
        pred = np.concatenate([sess.run(None, {name: x[i:i + 16]})[0].argmax(-1) for i in range(0, len(x), 16)])
        out[d] = float((pred == imgs.labels).mean())
    return out


def test_files_and_report(export_dir: Path) -> None:
    rep = _report(export_dir)
    assert rep["status"] == "ok" and rep["format"] == "distill.export/1"
    files = {m["file"] for m in rep["models"]}
    assert files == {"model.fp32.onnx", "model.fp16.onnx", "model.int8-ort-cpu.onnx", "model.int8-tensorrt.onnx"}
    for f in files:
        onnx.checker.check_model(str(export_dir / f), full_check=True)
    assert rep["exporter"]["exporter"] in ("dynamo", "torchscript") and rep["exporter"]["opset"] >= 17
    assert rep["data"]["calib_domains"] == ["clean", "dark"]  # the run's source domains (summary.json)
    assert rep["data"]["target_domains"] == ["noisy"]
    assert set(rep["data"]["eval_domains"]) == {"clean", "dark", "noisy"}
    assert rep["tensorrt"]["build_script"] == "build_engine.sh" and not rep["tensorrt"]["built_here"]
    assert rep["preprocess"]["input_size"] == [32, 32] and rep["input"]["shape"] == ["batch", 3, 32, 32]
    assert rep["files"] == [*sorted(files, key=[m["file"] for m in rep["models"]].index), "build_engine.sh",
                            "tensorrt_check.py", "tensorrt_check_images.npz", "export.json"]
    assert rep["tensorrt"]["check_files"] == ["tensorrt_check.py", "tensorrt_check_images.npz"]
    engines = {e["engine"]: (e["onnx"], e["onnx_strongly_typed"]) for e in rep["tensorrt"]["engines"]}
    assert engines == {"model.fp32.engine": ("model.fp32.onnx", "model.fp32.onnx"),  # TensorRT 10's, 11's source
                       "model.fp16.engine": ("model.fp32.onnx", "model.fp16.onnx"),
                       "model.int8.engine": ("model.int8-tensorrt.onnx", "model.int8-tensorrt.onnx")}


def test_fp32_parity_on_real_images(export_dir: Path, run_ckpt: Path, tiny_root: Path) -> None:
    par = _model(_report(export_dir), "fp32")["parity"]
    assert par["passed"] and par["max_abs_logit_diff"] <= par["tolerance"] <= 1e-2
    assert par["top1_agreement"] == 1.0 and par["n"] > 50
    # independently: ORT vs torch on a few test images, at two batch sizes (dynamic batch axis)
    from distill.data.folder import DomainFolder

    student = load_student(run_ckpt)
    folder = DomainFolder(tiny_root)
    imgs = load_images(folder, pick_per_domain(folder, ["noisy"], "test", 5), student.spec)
    x = imgs.normalize(imgs.images)
    sess = ort.InferenceSession(str(export_dir / "model.fp32.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = student(torch.from_numpy(x)).numpy()
    for b in (1, len(x)):
        out = np.concatenate([sess.run(["logits"], {"input": x[i:i + b]})[0] for i in range(0, len(x), b)])
        assert np.abs(out - ref).max() < 1e-3


def test_preprocessing_matches_student(run_ckpt: Path, tiny_root: Path) -> None:
    from distill.data.folder import DomainFolder
    from distill.data.images import load_rgb

    student = load_student(run_ckpt)
    folder = DomainFolder(tiny_root)
    samples = folder.select(["dark"], "test")[:3]
    imgs = load_images(folder, samples, student.spec)
    ref = torch.stack([student.preprocess()(load_rgb(folder.path(s))) for s in samples]).numpy()
    np.testing.assert_allclose(imgs.normalize(imgs.images), ref, atol=1e-6)


def test_metadata_round_trip(export_dir: Path, run_ckpt: Path) -> None:
    spec = load_student(run_ckpt).spec
    for f, precision in [("model.fp32.onnx", "fp32"), ("model.fp16.onnx", "fp16"),
                         ("model.int8-ort-cpu.onnx", "int8"), ("model.int8-tensorrt.onnx", "int8")]:
        meta = read_metadata(export_dir / f)
        assert meta["precision"] == precision and meta["arch"] == spec.arch
        assert meta["class_names"] == list(spec.class_names)
        pre = meta["preprocess"]
        assert pre["input_size"] == list(spec.input_size) and pre["mean"] == list(spec.mean)
        assert pre["std"] == list(spec.std) and pre["interpolation"] == spec.interpolation
        assert meta["provenance"]["strategy"] == "erm" and meta["provenance"]["teacher"] == {"arch": "none (test)"}
        assert meta["provenance"]["checkpoint_sha256"]
        assert meta["outputs"] == ["logits"]
    cpu = read_metadata(export_dir / "model.int8-ort-cpu.onnx")
    trt = read_metadata(export_dir / "model.int8-tensorrt.onnx")
    assert (cpu["int8_flavour"], cpu["target_runtime"]) == ("ort-cpu", "onnxruntime-cpu")
    assert (trt["int8_flavour"], trt["target_runtime"]) == ("tensorrt", "tensorrt")
    assert cpu["quantization"]["activation_type"] == "QUInt8" and trt["quantization"]["activation_symmetric"]
    # onnxruntime sees the same properties (this is how the edge runner reads them)
    sess = ort.InferenceSession(str(export_dir / "model.fp32.onnx"), providers=["CPUExecutionProvider"])
    assert json.loads(sess.get_modelmeta().custom_metadata_map["distill.class_names"]) == list(spec.class_names)


def test_fp16_has_fp32_io_and_fp16_weights(export_dir: Path) -> None:
    m = onnx.load(str(export_dir / "model.fp16.onnx"))
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert [i.type.tensor_type.elem_type for i in m.graph.input] == [f32]
    assert [o.type.tensor_type.elem_type for o in m.graph.output] == [f32]
    weights = [t for t in m.graph.initializer if len(t.dims) == 4]  # conv kernels
    assert weights and all(t.data_type == f16 for t in weights)
    sess = ort.InferenceSession(str(export_dir / "model.fp16.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": np.zeros((3, 3, 32, 32), np.float32)})[0]
    assert y.dtype == np.float32 and y.shape == (3, 4)
    entry = _model(_report(export_dir), "fp16")
    assert entry["parity"]["top1_agreement"] >= 0.95 and entry["parity"]["max_abs_logit_diff"] < 0.5
    assert set(entry["accuracy"]) == {"clean", "dark", "noisy"}


def test_int8_accuracy_and_latency_check_reported(export_dir: Path, tiny_root: Path, run_ckpt: Path) -> None:
    rep = _report(export_dir)
    fp32 = _model(rep, "fp32")
    for flavour in ("ort-cpu", "tensorrt"):
        m = _model(rep, "int8", flavour)
        assert set(m["accuracy"]) == set(fp32["accuracy"]) == {"clean", "dark", "noisy"}
        for d, drop in m["drops_pts"].items():
            assert drop == pytest.approx(100 * (fp32["accuracy"][d] - m["accuracy"][d]))
        # each domain's drop comes with McNemar's p (paired: fp32 and int8 scored the same test images)
        assert set(m["drops_p"]) == set(m["drops_pts"]) and all(0.0 < p <= 1.0 for p in m["drops_p"].values())
        assert m["fallback"]["triggered"] is False and m["within_max_drop"] is True
        assert 0.0 <= m["parity"]["top1_agreement"] <= 1.0
        lc = m["latency_check"]
        assert lc["p50_ms"]["fp32"] > 0 and lc["p50_ms"]["int8"] > 0
        assert lc["slower_than_fp32"] == (lc["ratio_vs_fp32"] >= 1.0)
        assert m["quantization"]["calibration"]["target_domains"] == ["noisy"]
    assert _model(rep, "int8", "ort-cpu")["latency_check"]["representative"] is True
    # test_resnet is ReLU-only, SE-free, and its head's pooling (the dynamo exporter's ReduceMean) is written as
    # GlobalAveragePool before quantizing (distill/export/int8_graph.py): onnxruntime runs nothing in float
    assert _model(rep, "int8", "ort-cpu")["float_op_types"] == {}
    # the recommendation is typed in export.json and follows from the facts above (not re-derived here)
    rec = ExportReport.read(export_dir).recommendation
    assert rec is not None and rec.precision in ("int8", "fp16", "fp32") and rec.reason
    if rec.precision == "int8" and rec.flavour == "ort-cpu":
        assert rec.speedup_measured and rec.latency_ratio == _model(rep, "int8", "ort-cpu")["latency_check"]["ratio_vs_fp32"]
    assert _model(rep, "int8", "tensorrt")["latency_check"]["representative"] is False
    # the accuracy numbers are real: recomputed from each shipped file with onnxruntime
    for m in (fp32, _model(rep, "int8", "ort-cpu")):
        assert m["accuracy"] == pytest.approx(_accuracy_from_file(export_dir / m["file"], tiny_root, run_ckpt,
                                                                  m["accuracy"]))


def test_an_export_with_its_test_images_memory_mapped_reports_the_same(run_ckpt: Path, tiny_root: Path,
                                                                       tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The spill path end to end (--eval-count 0 past SPILL_BYTES): the export's work folder holds the test
    pixels and every model's logits as unlinked files, every check reads them, the folder is gone afterwards, and the accuracy is what
    onnxruntime gives on the files."""
    from distill.export import images as images_mod

    monkeypatch.setattr(images_mod, "SPILL_BYTES", 0)
    mapped, where = [], []
    real = images_mod.pixel_array

    def spy(*args):
        mapped.append(real(*args))
        where.append(args[3])
        return mapped[-1]

    monkeypatch.setattr(images_mod, "pixel_array", spy)
    from distill.export import evaluate as evaluate_mod

    logits_at: list[Path] = []
    real_backed = evaluate_mod.disk_backed

    def spy_logits(shape, dtype, spill_dir, what):
        logits_at.append(Path(spill_dir))
        return real_backed(shape, dtype, spill_dir, what)

    monkeypatch.setattr(evaluate_mod, "disk_backed", spy_logits)
    out = tmp_path / "exp"
    export_checkpoint(run_ckpt, out, ExportConfig(precisions=("fp32", "int8"), data_root=str(tiny_root),
                                                  eval_count=None, exporter="torchscript", latency_iters=2),
                      log=lambda s: None)
    assert mapped and all(isinstance(a, np.memmap) for a in mapped)
    assert all(Path(w).parent == out and Path(w).name.startswith(".work-") for w in where), where  # its own disk
    assert logits_at and set(logits_at) <= {Path(w) for w in where}, logits_at  # each model's logits beside them
    rep = _report(out)
    for m in (_model(rep, "fp32"), _model(rep, "int8", "ort-cpu")):
        assert m["accuracy"] == pytest.approx(_accuracy_from_file(out / m["file"], tiny_root, run_ckpt,
                                                                  m["accuracy"]))


def test_drop_p_values_by_hand() -> None:
    """McNemar's exact test per domain: only images exactly one model gets right count."""
    labels = np.zeros(20, np.int64)
    domains = np.array(["a"] * 10 + ["b"] * 10)
    images = ImageSet(np.zeros((20, 1, 1, 3), np.uint8), labels, domains, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), [])
    right, wrong = np.array([1.0, 0.0]), np.array([0.0, 1.0])  # class 0 is the label
    ref = np.stack([right] * 20)
    other = ref.copy()
    other[:6] = wrong  # a: 6 images fp32 got right and the other model not, none the other way
    other[10], ref[11] = wrong, wrong  # b: one discordant image each way
    p = drop_p_values(ref, other, images)
    assert p["a"] == pytest.approx(2 * 0.5 ** 6)  # two-sided binomial, 6 of 6 discordant one way: 0.03125
    assert p["b"] == pytest.approx(1.0)
    assert drop_p_values(ref, ref, images) == {"a": 1.0, "b": 1.0}


def test_parity_helper_detects_differences() -> None:
    a = np.array([[1.0, 2.0], [3.0, 0.0]], np.float32)
    b = np.array([[1.0, 2.5], [3.0, 4.0]], np.float32)
    p = parity(a, b)
    assert p["max_abs_logit_diff"] == pytest.approx(4.0) and p["top1_agreement"] == 0.5


def test_builtin_digits_suite(builtin_quick_root: Path, tmp_path: Path) -> None:
    """Real data: the built-in digits (4 domains), a 60-step student, fp32 + int8 with per-domain checks."""
    import synthetic

    ckpt = synthetic.train_student(builtin_quick_root, tmp_path / "ckpt", steps=60, domains=["mnist", "optdigits"])
    rep = export_checkpoint(ckpt, tmp_path / "exp", ExportConfig(
        precisions=("fp32", "int8"), data_root=str(builtin_quick_root), calib_domains=("mnist", "optdigits"),
        target_domains=("mnist_m",), exporter="torchscript", eval_count=None, calib_count=64, latency_iters=3,
        max_drop=5.0, max_fallback_layers=3, sensitivity_count=32), log=lambda s: None).to_dict()
    fp32, int8 = rep["models"]
    # a realistic budget (top-1 disagreement with fp32 on at most 5% of each domain's calibration
    # images, about one of mnist_m's 21; at most 3 layers kept float) is met on this trained student:
    # on the AVX2 machine this was written on, all-int8 disagreed on 14.3% of mnist_m's calibration
    # images and the fallback kept 1 layer (4.8% left)
    assert int8["within_max_drop"] is True and max(int8["disagreement_pts"].values()) <= 5.0
    assert max(int8["drops_pts"].values()) <= 5.0  # test accuracy: reported, never decided on
    fb = int8["fallback"]
    if fb["triggered"]:
        assert fb["satisfied"] is True and 1 <= len(fb["kept_float"]) <= 3
    # and the shipped int8 file really scores what the report says
    assert int8["accuracy"] == pytest.approx(_accuracy_from_file(tmp_path / "exp" / int8["file"], builtin_quick_root,
                                                                 ckpt, int8["accuracy"]))
    assert set(fp32["accuracy"]) == {"mnist", "optdigits", "mnist_m", "mnist_c"}
    assert fp32["parity"]["passed"] and fp32["parity"]["n"] == sum(rep["data"]["eval_count"].values()) > 40
    # learned something: 10 classes, chance is 0.1. The margin is wide on purpose: the 60-step student lands
    # at 0.29 on an AVX-512-bf16 EPYC and a little above 0.3 on AVX2 (0.3 here failed on the former)
    assert fp32["accuracy"]["mnist"] > 2 * 0.1
    assert int8["parity"]["top1_agreement"] > 0.8 and set(int8["drops_pts"]) == set(fp32["accuracy"])
    assert rep["data"]["calib_per_domain"] == {"mnist": 22, "optdigits": 21, "mnist_m": 21}
    assert rep["class_names"][:3] == ["eight", "five", "four"]  # classnames.yaml names, sorted


def test_fp32_parity_failure_is_loud(run_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    lone = tmp_path / "lone"  # outside the run: parity on random images, no data needed
    shutil.copytree(run_ckpt, lone)
    with pytest.raises(DistillError, match="differs from PyTorch"):
        export_checkpoint(lone, out, ExportConfig(exporter="torchscript", fp32_rtol=1e-12), log=lambda s: None)
    rep = ExportReport.read(out)  # written anyway, for inspection
    assert rep.status == "failed" and rep.models[0].parity["passed"] is False
    assert rep.tensorrt is None and rep.files == [] and rep.data["labeled"] is False
