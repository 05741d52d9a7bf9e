"""int8 fallback: a threshold no int8 model can meet forces it; the decisions are recorded."""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper

from distill.errors import DistillError
from distill.export import ExportConfig, export_checkpoint
from distill.export import quantize as q
from distill.export.evaluate import predict_onnx
from distill.export.fallback import greedy_fallback
from distill.export.images import load_images, pick_per_domain
from distill.student.model import load_student


@pytest.fixture(scope="module")
def forced(run_ckpt: Path, tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, list[str]]:
    out = tmp_path_factory.mktemp("fallback") / "exp"
    lines: list[str] = []
    rep = export_checkpoint(run_ckpt, out, _forced_config(tiny_root), log=lines.append)
    return rep, out, lines


def test_forced_fallback_records_decisions(forced: tuple[dict, Path, list[str]]) -> None:
    rep, out, lines = forced
    assert rep["exporter"]["exporter"] == "torchscript"
    m = next(m for m in rep["models"] if m["precision"] == "int8")
    fb = m["fallback"]
    assert fb["triggered"] is True and fb["satisfied"] is False and fb["max_drop_pts"] == -100.0
    ranked = [c["node"] for c in fb["sensitivity"]]
    assert len(ranked) == len(set(ranked)) >= 10
    assert set(ranked) == {c["node"] for c in q.compute_nodes(out / m["file"])}  # every Conv/Gemm was tried
    assert all({"node", "op_type", "kl", "gain"} <= set(c) for c in fb["sensitivity"])
    gains = [c["gain"] for c in fb["sensitivity"]]
    assert gains == sorted(gains, reverse=True)
    steps = fb["steps"]
    assert 1 <= len(steps) <= 6 and [s["tried"] for s in steps] == ranked[:len(steps)]  # <= 3 x max layers tries
    assert all({"kept_float", "disagreement_pts", "worst_disagreement_pts", "accepted"} <= set(s) for s in steps)
    assert not any("accuracy" in s or "drops_pts" in s for s in steps), "a fallback step looked at labels"
    assert fb["kept_float"] == [s["tried"] for s in steps if s["accepted"]] and len(fb["kept_float"]) <= 2
    # kept layers really are float in the shipped file; the others are quantized
    rows = {r["node"]: r for r in q.qdq_report(out / m["file"])}
    for node in fb["kept_float"]:
        assert not rows[node]["inputs"][1]["dequantized"]
    assert any(r["inputs"][1]["dequantized"] for n, r in rows.items() if n not in fb["kept_float"])
    assert m["quantization"]["kept_float"] == fb["kept_float"]
    assert ("fallback_cost_ratio" in m["latency_check"]) == bool(fb["kept_float"])
    assert any("still" in w and "float" in w for w in rep["warnings"])
    assert any(line.startswith("warning: int8 (ort-cpu): still") for line in lines)
    assert json.loads((out / "export.json").read_text())["models"][1]["fallback"]["steps"] == steps


def _forced_config(tiny_root: Path) -> ExportConfig:
    return ExportConfig(precisions=("int8",), data_root=str(tiny_root), int8_flavour="ort-cpu", max_drop=-100.0,
                        max_fallback_layers=2, exporter="torchscript", eval_count=12, calib_count=32, latency_iters=3,
                        sensitivity_count=16, threads=1)


def test_fallback_decisions_never_read_test_labels(forced: tuple[dict, Path, list[str]], run_ckpt: Path,
                                                   tiny_root: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test label wrong: the reported test accuracy changes, not one fallback decision or measurement."""
    import distill.export.pipeline as pipeline

    real = pipeline.load_images

    def scrambled(folder, samples, spec):
        images = real(folder, samples, spec)
        if samples and all(s.split == "test" for s in samples):
            images.labels = (images.labels + 1) % len(folder.classes)
        return images

    monkeypatch.setattr(pipeline, "load_images", scrambled)
    rep = export_checkpoint(run_ckpt, tmp_path / "exp", _forced_config(tiny_root), log=lambda s: None)
    a = next(m for m in forced[0]["models"] if m["precision"] == "int8")
    b = next(m for m in rep["models"] if m["precision"] == "int8")
    assert a["accuracy"] != b["accuracy"], "the scrambled labels did not reach the test images"
    fa, fb = a["fallback"], b["fallback"]
    for key in ("triggered", "satisfied", "kept_float", "steps"):
        assert fa[key] == fb[key], f"fallback '{key}' depends on test labels"
    assert fa["before"]["disagreement_pts"] == fb["before"]["disagreement_pts"]
    assert a["disagreement_pts"] == b["disagreement_pts"] and a["within_max_drop"] == b["within_max_drop"]


@pytest.fixture(scope="module")
def broken_fp32(export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fp32 model with its head biased to class 0: a stand-in for a badly quantized variant."""
    model = onnx.load(str(export_dir / "model.fp32.onnx"))
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    bias = next(t for t in model.graph.initializer if t.name == gemm.input[2])
    b = numpy_helper.to_array(bias).copy()
    b[0] += 1000.0
    bias.CopyFrom(numpy_helper.from_array(b, bias.name))
    path = tmp_path_factory.mktemp("broken") / "broken.onnx"
    onnx.save(model, str(path))
    return path


def test_greedy_keeps_only_layers_that_help(export_dir: Path, broken_fp32: Path, run_ckpt: Path,
                                            tiny_root: Path) -> None:
    """Layer 'b' fixes the model, 'a' and 'c' do not: only 'b' is kept, and the search stops there.
    The measure is the pipeline's: top-1 disagreement with fp32, which needs no label."""
    from distill.export.evaluate import disagreement_by_domain

    from distill.data.folder import DomainFolder

    folder = DomainFolder(tiny_root)
    imgs = load_images(folder, pick_per_domain(folder, folder.domains, "test", 10), load_student(run_ckpt).spec)
    fp32 = export_dir / "model.fp32.onnx"
    calls: list[list[str]] = []
    fp32_logits = predict_onnx(fp32, imgs)

    def measure(path: Path) -> dict[str, float]:
        return disagreement_by_domain(fp32_logits, predict_onnx(path, imgs), imgs)

    broken = measure(broken_fp32)
    assert max(broken.values()) > 10

    def quantize_excluding(nodes: list[str]) -> Path:
        calls.append(list(nodes))
        return fp32 if "b" in nodes else broken_fp32

    ranked = [{"node": n, "op_type": "Conv"} for n in ("a", "b", "c")]
    res, path = greedy_fallback(quantize_excluding, ranked, measure, broken, max_drop=0.0, max_layers=5)
    assert calls == [["a"], ["b"]] and [s["accepted"] for s in res.steps] == [False, True]
    assert res.satisfied and res.kept_float == ["b"] and path == fp32 and max(res.disagreement_pts.values()) == 0.0
    # nothing helps: nothing is kept, the all-int8 model stays
    res, path = greedy_fallback(lambda nodes: broken_fp32, ranked, measure, broken, 0.0, 5)
    assert path is None and res.kept_float == [] and not res.satisfied and len(res.steps) == 3


def test_int8_needs_data() -> None:
    with pytest.raises(DistillError, match="needs calibration images"):
        ExportConfig(precisions=("int8",)).check_data()


def test_bad_config_values() -> None:
    with pytest.raises(DistillError, match="unknown precision"):
        ExportConfig(precisions=("fp32", "int4"))
    with pytest.raises(DistillError, match="calib-method"):
        ExportConfig(calib_method="kl")
    with pytest.raises(DistillError, match="int8-flavour"):
        ExportConfig(int8_flavour="arm")


def test_fp32_parity_failure_is_loud(run_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    lone = tmp_path / "lone"  # outside the run: parity on random images, no data needed
    import shutil

    shutil.copytree(run_ckpt, lone)
    with pytest.raises(DistillError, match="differs from PyTorch"):
        export_checkpoint(lone, out, ExportConfig(exporter="torchscript", fp32_rtol=1e-12), log=lambda s: None)
    rep = json.loads((out / "export.json").read_text())
    assert rep["status"] == "failed" and rep["models"][0]["parity"]["passed"] is False


def test_data_defaults_from_the_run(run_ckpt: Path, tiny_root: Path, tmp_path: Path) -> None:
    """Inside a training run, the data root, split and source domains come from RUN_DIR/config.yaml."""
    rep = export_checkpoint(run_ckpt, tmp_path / "exp", ExportConfig(exporter="torchscript", eval_count=4),
                            log=lambda s: None)
    assert rep["data"]["root"] == str(tiny_root) and rep["data"]["labeled"]
    assert rep["data"]["calib_domains"] == ["clean", "dark"] and rep["config"]["test_fraction"] == 0.3
    assert set(rep["models"][0]["accuracy"]) == {"clean", "dark", "noisy"}
    assert rep["files"] == ["model.fp32.onnx", "build_engine.sh", "export.json"]
