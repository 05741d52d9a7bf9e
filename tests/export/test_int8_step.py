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
    # no hold-out check: it could send the forced layer back to int8 (this test is about the file, not the choice)
    cfg = _forced_config(tiny_root).model_copy(update={"holdout_count": 0})
    rep = export_checkpoint(run_ckpt, out, cfg, log=lines.append)
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
    classes = out.type.tensor_type.shape.dim[-1].dim_value
    skew = np.zeros(classes, np.float32)
    skew[0] = 1000.0
    graph.initializer.append(numpy_helper.from_array(skew, "skew"))
    for node in graph.node:  # the node writing the output now writes a renamed tensor
        node.output[:] = ["pre_skew" if o == out.name else o for o in node.output]
    graph.node.append(helper.make_node("Add", ["pre_skew", "skew"], [out.name], name="skew_add"))
    onnx.save(model, str(dst))
    return dst


def _greedy_accepting(variant_files: list, monkeypatch: pytest.MonkeyPatch) -> None:
    """The greedy search replaced by one that 'accepts' one layer, then two, whose files are
    ``variant_files(quantize_excluding, nodes, work)`` (the models the hold-out check then chooses among)."""
    import distill.export.int8_step as int8_step
    from distill.export.fallback import FallbackResult, Variant

    def accept(quantize_excluding, ranked, measure, baseline, max_drop, max_layers, **kw):
        nodes = [c["node"] for c in ranked[:2]]
        paths = variant_files(quantize_excluding, nodes)
        accepted = [Variant(nodes[:i + 1], p, measure(p)) for i, p in enumerate(paths)]
        last = accepted[-1]
        return FallbackResult(kept_float=last.kept_float, satisfied=False, disagreement_pts=last.disagreement_pts,
                              accepted=accepted), last.path

    monkeypatch.setattr(int8_step, "greedy_fallback", accept)


def test_the_holdout_check_does_not_ship_the_greedy_pick_that_disagrees_on_holdout_images(
        run_ckpt: Path, tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The greedy's last model is broken (class 0 everywhere), the one before it is the fp32 model itself: the
    hold-out images send the broken one back, and the fp32-equal one ships unless all-int8 already agrees with fp32
    on every hold-out image (a tie: fewer layers in float). The record says why, with every variant's figures."""
    out = tmp_path / "exp"
    _greedy_accepting(lambda qx, nodes: [out / "model.fp32.onnx", _skewed(qx(nodes), tmp_path / "broken.onnx")],
                      monkeypatch)
    lines: list[str] = []
    rep = export_checkpoint(run_ckpt, out, _forced_config(tiny_root), log=lines.append)
    m = next(m for m in rep.models if m.precision == "int8")
    held = m.fallback["holdout"]
    assert held["images"] == rep.data["holdout_count"] > 0
    variants = held["variants"]
    assert [len(v["kept_float"]) for v in variants] == [0, 1, 2]
    means = [v["mean_pts"] for v in variants]
    assert means[1] == 0.0 and means[2] > 50.0  # the fp32 file agrees with itself; the broken one does not
    expected = 0 if means[0] == 0.0 else 1
    assert held["shipped"] == expected and held["greedy"] == 2
    assert m.fallback["kept_float"] == variants[expected]["kept_float"] == m.quantization["kept_float"]
    assert m.disagreement_pts == m.fallback["after"]["disagreement_pts"]
    assert any(line.startswith("int8 (ort-cpu): on ") and f"ships {expected} layer(s)" in line for line in lines)


def test_without_a_holdout_the_greedy_pick_ships_and_the_log_says_it_was_not_checked(
        run_ckpt: Path, tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--holdout-count 0: the old rule (the greedy's last accepted model ships, even a broken one here)."""
    _greedy_accepting(lambda qx, nodes: [qx(nodes[:1]), _skewed(qx(nodes), tmp_path / "broken.onnx")], monkeypatch)
    lines: list[str] = []
    cfg = _forced_config(tiny_root).model_copy(update={"holdout_count": 0})
    rep = export_checkpoint(run_ckpt, tmp_path / "exp", cfg, log=lines.append)
    m = next(m for m in rep.models if m.precision == "int8")
    assert "holdout" not in m.fallback and rep.data["holdout_count"] == 0
    assert len(m.fallback["kept_float"]) == 2
    assert any("no hold-out images (--holdout-count 0" in line for line in lines)


def test_holdout_images_are_train_images_that_are_not_calibration_images(run_ckpt: Path, tiny_root: Path) -> None:
    from distill.data.folder import DomainFolder
    from distill.export.data import calibration_samples, holdout_samples, load_export_data
    from distill.export.log import ExportLog
    from distill.student.model import load_student

    spec = load_student(run_ckpt).spec
    cfg = _forced_config(tiny_root).model_copy(update={"holdout_count": 20, "calib_domains": ("clean", "dark")})
    data = load_export_data(cfg, spec, [], ExportLog(lambda s: None))
    folder = DomainFolder(str(tiny_root), cfg.split_rule(where="test"))
    calib = calibration_samples(cfg, folder, ["clean", "dark"])
    held = holdout_samples(cfg, folder, ["clean", "dark"], 20, calib)
    assert data.holdout_images is not None and len(data.holdout_images) == len(held) == 20
    assert {s.split for s in held} == {"train"}
    assert not {s.index for s in held} & {s.index for picks in calib.values() for s in picks}
    assert sorted(set(data.holdout_images.domains.tolist())) == ["clean", "dark"]
    for off in ({"holdout_count": 0}, {"max_fallback_layers": 0}, {"precisions": ("fp32",)}):
        assert load_export_data(cfg.model_copy(update=off), spec, [], ExportLog(lambda s: None)).holdout_images is None


def test_the_fallback_holdout_benchmark_exports_each_run_with_and_without_the_check(
        run_ckpt: Path, tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """benchmarks/fallback_holdout.py re-exports a run with its export's settings, with the hold-out check and
    without (--holdout-count 0), and scores both on the whole test split: here the search's pick is broken, so
    the check ships fewer layers than the old rule, and the broken file's disagreement shows in the table."""
    import json

    from tests.test_benchmarks import _script

    _greedy_accepting(lambda qx, nodes: [qx([]), _skewed(qx(nodes), tmp_path / "broken.onnx")], monkeypatch)
    edge, tag = tmp_path / "edge", "test_resnet-e1-s0"
    (edge / "runs").mkdir(parents=True)
    (edge / "runs" / tag).symlink_to(run_ckpt.parents[1])
    (edge / "records").mkdir()
    (edge / "records" / f"{tag}.json").write_text(json.dumps({"targets": []}))
    export_checkpoint(run_ckpt, edge / "export" / tag, _forced_config(tiny_root), log=lambda s: None)
    bench = _script("fallback_holdout")
    monkeypatch.setattr("sys.argv", ["fallback_holdout.py", str(edge), "--out", str(tmp_path / "fh")])
    bench.main()
    printed = capsys.readouterr().out
    reps = {arm: ExportReport.read(tmp_path / "fh" / arm / tag) for arm in ("holdout", "calibration")}
    kept = {arm: next(m for m in r.models if m.precision == "int8").fallback["kept_float"] for arm, r in reps.items()}
    assert len(kept["calibration"]) == 2 and len(kept["holdout"]) < 2  # the broken pick is not shipped
    row = next(line for line in printed.splitlines() if line.startswith(f"| {tag} | "))
    cells = row.split(" | ")
    assert cells[4].startswith(f"{len(kept['calibration'])}, ") and cells[3].startswith(f"{len(kept['holdout'])}, ")
    assert float(cells[4].split(", ")[1].split(" / ")[0]) > 50.0  # the broken file disagrees with fp32 on most images
    assert "holdout minus calibration" in printed and "paired t-test" in printed
