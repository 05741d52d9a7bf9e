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

    def scrambled(folder, samples, spec, *args, **kwargs):
        images = real(folder, samples, spec, *args, **kwargs)
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


def _skewed(src: Path, dst: Path) -> Path:
    """``src`` with +1000 added to class 0's logit: a model that predicts class 0 on every image."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    out = graph.output[0]
    skew = np.zeros(out.type.tensor_type.shape.dim[-1].dim_value, np.float32)
    skew[0] = 1000.0
    graph.initializer.append(numpy_helper.from_array(skew, "skew"))
    for node in graph.node:  # the node writing the output now writes a renamed tensor
        node.output[:] = ["pre_skew" if o == out.name else o for o in node.output]
    graph.node.append(helper.make_node("Add", ["pre_skew", "skew"], [out.name], name="skew_add"))
    onnx.save(model, str(dst))
    return dst


def test_the_fallback_holdout_benchmark_checks_the_search_on_holdout_images(
        run_ckpt: Path, tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """benchmarks/fallback_holdout.py re-exports a run three ways: the product's rule, and the search followed by
    a check on hold-out images (argmin, or QAD's no-harm rule against all-int8). The search is made to accept one
    layer, then a broken model (class 0 everywhere): the product ships the broken one, both checks do not, and the
    table shows the broken file's disagreement."""
    import json

    import synthetic

    import distill.export.int8_step as int8_step
    from distill.export.fallback import FallbackResult
    from tests.test_benchmarks import _script

    def accept_two(quantize_excluding, ranked, measure, baseline, max_drop, max_layers, **kw):
        nodes = [c["node"] for c in ranked[:2]]
        broken = _skewed(quantize_excluding(nodes), tmp_path / f"broken-{len(list(tmp_path.glob('broken-*')))}.onnx")
        steps = [{"tried": n, "kept_float": nodes[:i + 1], "float_outputs": [], "excluded": nodes[:i + 1], "accepted": True,
                  "disagreement_pts": measure(quantize_excluding(nodes[:i + 1]) if i == 0 else broken)}
                 for i, n in enumerate(nodes)]
        return FallbackResult(kept_float=nodes, steps=steps, disagreement_pts=steps[-1]["disagreement_pts"]), broken

    monkeypatch.setattr(int8_step, "greedy_fallback", accept_two)
    edge, tag = synthetic.edge_out(run_ckpt, tmp_path / "edge")
    export_checkpoint(run_ckpt, edge / "export" / tag, _forced_config(tiny_root), log=lambda s: None)
    bench = _script("fallback_holdout")
    monkeypatch.setattr("sys.argv", ["fallback_holdout.py", str(edge), "--out", str(tmp_path / "fh"),
                                     "--holdout-count", "24"])
    bench.main()
    printed = capsys.readouterr().out
    kept = {arm: next(m for m in ExportReport.read(tmp_path / "fh" / arm / tag).models
                      if m.precision == "int8").fallback["kept_float"] for arm in bench.ARMS}
    assert len(kept["calibration"]) == 2 and len(kept["holdout"]) < 2 and kept["no-harm"] == []
    held = json.loads((tmp_path / "fh" / "holdout" / tag / bench.HOLDOUT_FILE).read_text())
    assert held["images"] == 24 and [len(c["kept_float"]) for c in held["candidates"]] == [0, 1, 2]
    assert held["candidates"][2]["mean_pts"] > 50.0  # the broken model, on images it was not picked on
    row = next(line for line in printed.splitlines() if line.startswith(f"| {tag} | "))
    cells = row.split(" | ")
    assert cells[3].startswith("2, ") and float(cells[3].split(", ")[1].split(" / ")[0]) > 50.0  # calibration arm
    assert cells[4].startswith(f"{len(kept['holdout'])}, ") and cells[5].startswith("0, ")
    assert "holdout minus calibration" in printed and "no-harm minus calibration" in printed


def test_the_benchmark_rules_pick_the_lowest_or_all_int8() -> None:
    from tests.test_benchmarks import _script

    pick = _script("fallback_holdout").pick
    assert pick("holdout", [3.0, 1.0, 1.0, 5.0]) == 1 and pick("holdout", [2.0, 2.0 - 1e-12]) == 0
    assert pick("no-harm", [3.0, 1.0, 2.0]) == 2 and pick("no-harm", [2.0, 1.0, 2.0]) == 0


def test_the_export_arms_benchmark_exports_each_arm_with_its_settings(
        run_ckpt: Path, tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """benchmarks/export_arms.py re-exports a run per arm over its own export's settings: ``@targets`` adds the
    run's target domains to the calibration images, and the table scores each arm's int8 file on the test split.
    An arm whose int8 file is broken (class 0 everywhere) must show it, against the same fp32 reference."""
    import synthetic

    import distill.export.int8_step as int8_step
    from tests.test_benchmarks import _script

    edge, tag = synthetic.edge_out(run_ckpt, tmp_path / "edge", targets=("noisy",))
    export_checkpoint(run_ckpt, edge / "export" / tag, _forced_config(tiny_root).with_updates(max_fallback_layers=0),
                      log=lambda s: None)
    bench = _script("export_arms")
    real = int8_step.Int8Step.run

    def broken_with_targets(self, *a, **kw):  # the arm that calibrates on target domains too ships a broken file
        rec = real(self, *a, **kw)
        if self.ctx.cfg.target_domains:
            _skewed(self.ctx.out_dir / rec.file, self.ctx.out_dir / rec.file)
        return rec

    monkeypatch.setattr(int8_step.Int8Step, "run", broken_with_targets)
    monkeypatch.setattr("sys.argv", ["export_arms.py", str(edge), "--out", str(tmp_path / "arms"), "--arm", "source:",
                                     "--arm", "targets:target_domains=@targets", "--iters", "3", "--repeats", "1"])
    bench.main()
    printed = capsys.readouterr().out
    calib = {a: next(m for m in ExportReport.read(tmp_path / "arms" / a / tag).models if m.precision == "int8")
             .quantization["calibration"] for a in ("source", "targets")}
    assert calib["source"]["target_domains"] == [] and calib["targets"]["target_domains"] == ["noisy"]
    row = next(line for line in printed.splitlines() if line.startswith(f"| {tag} | "))
    source, targets = (float(c.split(", ")[1].split(" / ")[0]) for c in row.split(" | ")[2:4])
    assert source < 50.0 < targets, row
    assert "targets vs source, paired" in printed and "McNemar p = " in printed
