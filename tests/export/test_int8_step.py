"""distill.export.int8_step: a threshold no int8 model can meet forces the fallback; the decisions are recorded
and never read a test label."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import distill.export.data as export_data
from distill.export import ExportConfig, export_checkpoint
from distill.export import quantize as q
from distill.records import ExportReport


@pytest.fixture(scope="module")
def forced(run_ckpt: Path, tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, list[str]]:
    out = tmp_path_factory.mktemp("fallback") / "exp"
    lines: list[str] = []
    rep = export_checkpoint(run_ckpt, out, _forced_config(tiny_root), log=lines.append)
    return rep.to_dict(), out, lines


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
    # what the ort-cpu file does with them, said where the kept layers are named (docs/qad.md)
    assert any("per-tensor int8 weights" in w for w in rep["warnings"]) == bool(fb["kept_float"])
    assert ExportReport.read(out).models[1].fallback["steps"] == steps  # what was returned is what was written


def _forced_config(tiny_root: Path) -> ExportConfig:
    return ExportConfig(precisions=("int8",), data_root=str(tiny_root), int8_flavour="ort-cpu", max_drop=-100.0,
                        max_fallback_layers=2, exporter="torchscript", eval_count=12, calib_count=32, latency_iters=3,
                        sensitivity_count=16, threads=1)


def test_fallback_decisions_never_read_test_labels(forced: tuple[dict, Path, list[str]], run_ckpt: Path,
                                                   tiny_root: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test label wrong: the reported test accuracy changes, not one fallback decision or measurement."""
    real = export_data.load_images

    def scrambled(folder, samples, spec):
        images = real(folder, samples, spec)
        if samples and all(s.split == "test" for s in samples):
            images.labels = (images.labels + 1) % len(folder.classes)
        return images

    monkeypatch.setattr(export_data, "load_images", scrambled)
    rep = export_checkpoint(run_ckpt, tmp_path / "exp", _forced_config(tiny_root), log=lambda s: None).to_dict()
    a = next(m for m in forced[0]["models"] if m["precision"] == "int8")
    b = next(m for m in rep["models"] if m["precision"] == "int8")
    assert a["accuracy"] != b["accuracy"], "the scrambled labels did not reach the test images"
    fa, fb = a["fallback"], b["fallback"]
    for key in ("triggered", "satisfied", "kept_float", "steps"):
        assert fa[key] == fb[key], f"fallback '{key}' depends on test labels"
    assert fa["before"]["disagreement_pts"] == fb["before"]["disagreement_pts"]
    assert a["disagreement_pts"] == b["disagreement_pts"] and a["within_max_drop"] == b["within_max_drop"]


def test_no_fallback_layers_skips_the_ranking(run_ckpt: Path, tiny_root: Path, tmp_path: Path) -> None:
    """--max-fallback-layers 0 over budget: no layer ranking (it could keep none), a warning, the budget not met."""
    cfg = _forced_config(tiny_root).model_copy(update={"max_fallback_layers": 0})
    lines: list[str] = []
    rep = export_checkpoint(run_ckpt, tmp_path / "exp", cfg, log=lines.append)
    m = next(m for m in rep.models if m.precision == "int8")
    assert m.fallback["disabled"] is True and m.fallback["triggered"] is False and "sensitivity" not in m.fallback
    assert m.within_max_drop is False and m.fallback["kept_float"] == []
    assert not any("sensitivity" in line for line in lines)
    assert any("fallback is off (--max-fallback-layers 0)" in w for w in rep.warnings)
    assert rep.recommendation is not None and rep.recommendation.precision == "fp32"
    assert "> --max-drop -100" in rep.recommendation.reason


def test_an_ort_cpu_layer_kept_between_int8_layers_has_per_tensor_weights_in_the_file_and_the_log_says_so(
        run_ckpt: Path, tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The export keeps a layer "in float" (the fallback's choice is forced here: the most sensitive layer that
    reads int8); its file holds the per-tensor int8 weights onnxruntime would give that layer at load
    (distill/export/ort_weights.py), so onnxruntime at its basic level changes nothing there, and the log line naming
    the kept layer says so."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    import distill.export.int8_step as int8_step
    from distill.export.fallback import FallbackResult

    def keep_one(quantize_excluding, ranked, measure, baseline, max_drop, max_layers, **kw):
        node = next(c["node"] for c in ranked if c["op_type"] == "Conv" and "/layer" in c["node"])  # not the stem
        path = quantize_excluding([node])
        return FallbackResult(kept_float=[node], satisfied=True, disagreement_pts=measure(path)), path

    monkeypatch.setattr(int8_step, "greedy_fallback", keep_one)
    lines: list[str] = []
    out = tmp_path / "exp"
    rep = export_checkpoint(run_ckpt, out, _forced_config(tiny_root), log=lines.append)
    m = next(m for m in rep.models if m.precision == "int8")
    node = m.fallback["kept_float"][0]
    assert any(f"kept 1 layer(s) in float: {node}; those between int8 layers have per-tensor int8 weights" in line
               for line in lines)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(tmp_path / "basic.onnx")
    ort.InferenceSession(str(out / m.file), opts, providers=["CPUExecutionProvider"])
    for path in (out / m.file, tmp_path / "basic.onnx"):
        graph = onnx.load(str(path)).graph
        producer = {o: n for n in graph.node for o in n.output}
        conv = next(n for n in graph.node if n.name == node)
        assert producer[conv.input[0]].op_type == "DequantizeLinear"  # fed by int8
        weight = producer[conv.input[1]]
        assert weight.op_type == "DequantizeLinear", path
    graph = onnx.load(str(out / m.file)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    weight = {o: n for n in graph.node for o in n.output}[next(n for n in graph.node if n.name == node).input[1]]
    assert inits[weight.input[0]].dtype == np.int8 and inits[weight.input[1]].size == 1  # int8, per tensor
