"""`distill demo --quick`: the main job end to end at test size, and its idempotent rerun."""
from __future__ import annotations

import time

import pytest

from distill.cli import main as cli
from distill.config import load_train_config
from distill.demo import ADVERSARIAL, DISTILLED, QUICK_OPTIM
from distill.data import DomainFolder
from distill.recipes import load_recipe, recipe_path
from distill.records import (DEMO_RESULTS, RUN_CONFIG, BenchRecord, CacheManifest, ExportReport, RobustReport,
                             RunSummary, TeacherManifest, pct)


def _without(cfg: dict, dotted_keys) -> dict:
    for key in dotted_keys:
        *path, last = key.split(".")
        section = cfg
        for part in path:
            section = section[part]
        section.pop(last, None)
    return cfg


@pytest.mark.slow
def test_quick_demo_end_to_end_and_rerun(quick_demo, capsys):
    out, printed = quick_demo  # the session's one quick demo (tests/conftest.py)
    root = out / "data" / "digits-quick-seed0"
    assert (root / "suite.json").is_file()
    assert (out / "teacher" / "open_clip_model.safetensors").is_file()
    manifest = CacheManifest.read(out / "cache")
    assert manifest.views.count == 2 and manifest.teacher.arch == "distill-demo-rn"
    # the teacher pretrained on the recipes' pool only; the cache (students' rows) holds none of it
    pool = TeacherManifest.read(out / "teacher").dataset.pretrain
    assert pool.fraction == manifest.dataset.pretrain_fraction == load_recipe("erm").data.pretrain_fraction == 0.3
    assert pool.images == len(DomainFolder(root, pretrain_fraction=0.3).select(split="pretrain")) > 0
    for run in ("erm", "kd"):
        summary = RunSummary.read(out / "runs" / run)
        assert set(summary.test_acc) == {"mnist", "optdigits", "mnist_m", "mnist_c"}
        assert all(0.0 <= v <= 1.0 for v in summary.test_acc.values())  # fractions in the artifact
        assert (out / "runs" / run / "checkpoints" / "best" / "model.safetensors").is_file()
    # the demo trains the configs/ recipes: each run's saved config is its recipe file but for the named overrides
    overridden = ["data.root", "cache", "run.out", "run.progress", *QUICK_OPTIM, "robust"]
    for run in ("erm", DISTILLED, ADVERSARIAL):
        saved = load_train_config(out / "runs" / run / RUN_CONFIG).model_dump(mode="json")
        recipe = load_train_config(recipe_path(run)).model_dump(mode="json")
        assert _without(saved, overridden) == _without(recipe, overridden), run
    table = (out / DEMO_RESULTS).read_text()
    assert "teacher (zs)" in table and "erm" in table and "kd" in table

    # stage 5: adversarial views in the cache, an adv_cached run, robustness table vs kd
    assert (out / "cache" / "adversarial" / "build.json").is_file()
    adv = RunSummary.read(out / "runs" / "adv_cached")
    assert adv.strategy == "adv_cached" and set(adv.test_acc) == set(summary.test_acc)
    assert "pgd 8/255" in table and "adv_cached" in table
    # robustness is a fraction in robust.json / summary.json and a percent in the printed table
    assert RobustReport.read(out / "runs" / "adv_cached") == adv.robust
    for d, r in adv.robust.domains.items():
        assert all(0.0 <= v <= 1.0 for v in (r.clean, *r.pgd.values(), *r.corruptions.values()))
        d_row = next(ln.split("|") for ln in table.splitlines()
                     if ln.split("|")[0].strip() == "adv_cached" and ln.split("|")[1].strip().rstrip("*") == d)
        assert [c.strip() for c in d_row[2:]] == [pct(r.clean), pct(r.pgd["8/255"]), pct(r.corruption_mean)], d

    # stage 6: sfda adapted the erm student to the three target domains without source data
    sfda = RunSummary.read(out / "runs" / "sfda")
    assert set(sfda.test_acc) == {"optdigits", "mnist_m", "mnist_c"}
    assert "sfda (adapted)" in table

    # stage 7: fp32 + int8 exports of kd and sfda, ORT-CPU latency of each at batch 1 and 8, the report
    records = list(BenchRecord.read_lines(out / "bench.jsonl"))
    for run in ("kd", "sfda"):
        export = ExportReport.read(out / "export" / run)
        assert export.status == "ok"
        by_precision = {m.precision: m for m in export.models}
        assert set(by_precision) == {"fp32", "int8"} and by_precision["fp32"].parity["passed"]
        assert by_precision["int8"].model_extra["flavour"] == "ort-cpu"
        # calibrated where each model runs: kd on its source, the adapted model on its target domains
        want = ["mnist"] if run == "kd" else ["mnist_c", "mnist_m", "optdigits"]
        assert sorted(export.data["calib_domains"]) == want
        for m in export.models:
            path = str(out / "export" / run / m.file)
            benched = sorted(r.batch for r in records if r.model == path and r.runtime == "ort-cpu")
            assert benched == [1, 8], (path, benched)
    assert len(records) == 8 and all(r.model_extra["top_ops"] for r in records)  # profiled: the report's "top operators"
    html = (out / "report.html").read_text().replace("<wbr>", "")  # line-break hints in long names
    assert "<svg" in html and "model.int8-ort-cpu.onnx" in html
    assert "mobilenetv3_small_050 (kd)" in html and "mobilenetv3_small_050 (sfda)" in html
    # one teacher, named by arch and file (not raw JSON): its zero-shot row and the provenance line, nothing more
    assert html.count("distill-demo-rn · open_clip_model.safetensors") == 2 and "{&quot;arch" not in html
    assert (out / "report.md").is_file() and "## Per-run accuracy (%)" in (out / "report.md").read_text()
    assert "No profiled records" not in html
    assert (out / "report.md").is_file()
    assert f"report: {out / 'report.html'}" in printed
    for where in ("data", "teacher", "cache", "runs", "exports", "bench", "report"):  # where each artifact went
        assert f"  {where}" in printed

    # a rerun finds every stage complete and skips it
    t0 = time.time()
    assert cli(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "already trained" in printed and "already exported" in printed
    assert len((out / "bench.jsonl").read_text().splitlines()) == 8  # nothing benchmarked twice
    assert time.time() - t0 < 60
