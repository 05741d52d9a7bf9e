"""`distill demo --quick --adversarial`: the main job end to end at test size, and its idempotent rerun.

The demo tells issue 12's story in one table: the honest teacher's zero-shot accuracy, erm on the same
augmented views, function matching from source images only, the same with unlabeled target images,
sfda, and an open-vocabulary student re-targeted to classes (7/8/9) no student label ever named.
"""
from __future__ import annotations

import time

import pytest

from distill.cli import main as cli
from distill.config import load_train_config
from distill.data import DomainFolder
from distill.data.split import SPLIT_KEYS, SplitRule
from distill.demo import (
    ADVERSARIAL,
    CACHE_VIEWS,
    DISTILLED,
    OPENVOCAB,
    QUICK_OPTIM,
    SHIP,
    STUDENTS,
    WITHHELD_TAG,
)
from distill.demo_ship import ship_decision
from distill.recipes import recipe_path
from distill.records import (
    DEMO_RESULTS,
    RUN_CONFIG,
    BenchRecord,
    CacheManifest,
    ExportReport,
    QADRecord,
    RobustReport,
    RunSummary,
    TeacherManifest,
    pct,
)
from distill.report.write import collect

DOMAINS = {"mnist", "optdigits", "mnist_m", "mnist_c"}


def _without(cfg: dict, dotted_keys) -> dict:
    for key in dotted_keys:
        *path, last = key.split(".")
        section = cfg
        for part in path:
            section = section[part]
        section.pop(last, None)
    return cfg


def _row(table: str, name: str) -> list[str]:
    """The cells of the table row called ``name`` (after the name)."""
    return next([c.strip() for c in ln.split("|")[1:]] for ln in table.splitlines() if ln.split("|")[0].strip() == name)


@pytest.mark.slow
def test_quick_demo_end_to_end_and_rerun(quick_demo, capsys):
    out, printed = quick_demo  # the session's one quick demo (tests/conftest.py)
    root = out / "data" / "digits-quick-seed0"
    assert (root / "suite.json").is_file()
    assert (out / "teacher" / "open_clip_model.safetensors").is_file()
    # one policy cache: 8 views per image under the function-matching policy, honest split, pixels stored
    manifest = CacheManifest.read(out / "cache")
    assert manifest.views.count == CACHE_VIEWS == 8 and manifest.teacher.arch == "distill-demo-rn"
    assert manifest.views.policy
    # the teacher pretrained on its pool only; the cache (students' rows) holds none of it, and the runs took its rule
    pool = TeacherManifest.read(out / "teacher").dataset.pretrain
    erm = load_train_config(out / "runs" / "erm" / RUN_CONFIG)
    assert pool.fraction == manifest.dataset.pretrain_fraction == erm.data.pretrain_fraction == 0.3
    assert pool.images == len(DomainFolder(root, pretrain_fraction=0.3).select(split="pretrain")) > 0
    assert list(out.glob("cache/pixels-32x32-*")), "no pixel store"
    for run in STUDENTS:
        summary = RunSummary.read(out / "runs" / run)
        assert set(summary.test_acc) == DOMAINS, run
        assert all(0.0 <= v <= 1.0 for v in summary.test_acc.values())  # fractions in the artifact
        assert (out / "runs" / run / "checkpoints" / "best" / "model.safetensors").is_file()
    # the demo trains the configs/ recipes: each run's saved config is its recipe file but for the named overrides
    # and the split keys a recipe leaves unset, which a run takes from its cache (so saved: the cache's rule)
    overridden = ["data.root", "cache", "run.out", "run.progress", *QUICK_OPTIM, "robust"]
    cache_rule = SplitRule.from_cache(manifest.dataset)
    for run in (*STUDENTS, ADVERSARIAL):
        saved = load_train_config(out / "runs" / run / RUN_CONFIG).model_dump(mode="json")
        recipe = load_train_config(recipe_path(run)).model_dump(mode="json")
        unset = [k for k in SPLIT_KEYS if recipe["data"][k] is None]
        assert {k: saved["data"][k] for k in unset} == {k: SplitRule.of(**cache_rule).model_dump()[k] for k in unset}, run
        skip = [*overridden, *(f"data.{k}" for k in unset)]
        assert _without(saved, skip) == _without(recipe, skip), run

    # the story's table: every row, fractions printed as percents
    table = (out / DEMO_RESULTS).read_text()
    for name, label in STUDENTS.items():
        if name != OPENVOCAB:
            summary = RunSummary.read(out / "runs" / name)
            assert _row(table, label)[0] == pct(summary.test_acc["mnist"]), label
    sfda = RunSummary.read(out / "runs" / "sfda")
    assert set(sfda.test_acc) == {"optdigits", "mnist_m", "mnist_c"}  # adapted to the three targets, source-free
    assert _row(table, "sfda")[0] == "-" and _row(table, "sfda")[3] == pct(sfda.test_acc["optdigits"])
    zs, openvocab = _row(table, f"teacher (zs) -> {WITHHELD_TAG}"), _row(table, f"open-vocab -> {WITHHELD_TAG}")
    assert len(zs) == len(openvocab) == 5  # four domains + target mean, next to each other
    assert _row(table, "teacher (zs)")

    # --adversarial: adversarial views in the cache, an adv_cached run, robustness table vs fm
    assert (out / "cache" / "adversarial" / "build.json").is_file()
    adv = RunSummary.read(out / "runs" / "adv_cached")
    assert adv.strategy == "adv_cached" and set(adv.test_acc) == DOMAINS
    assert "pgd 8/255" in table and "adv_cached" in table and DISTILLED in table
    # robustness is a fraction in robust.json / summary.json and a percent in the printed table
    assert RobustReport.read(out / "runs" / "adv_cached") == adv.robust
    for d, r in adv.robust.domains.items():
        assert all(0.0 <= v <= 1.0 for v in (r.clean, *r.pgd.values(), *r.corruptions.values()))
        d_row = next(ln.split("|") for ln in table.splitlines()
                     if ln.split("|")[0].strip() == "adv_cached" and ln.split("|")[1].strip().rstrip("*") == d)
        assert [c.strip() for c in d_row[2:]] == [pct(r.clean), pct(r.pgd["8/255"]), pct(r.corruption_mean)], d

    # ship: fm_unlabeled fp32 + int8, the re-targeted open-vocab student fp32; QAD of fm_unlabeled and the int8 file
    # the no-harm rule picks; ORT-CPU latency at batch 1 of the fp32 files and that int8 file; the report
    records = list(BenchRecord.read_lines(out / "bench.jsonl"))
    want_precisions = {SHIP: {"fp32", "int8"}, OPENVOCAB: {"fp32"}}
    for run, precisions in want_precisions.items():
        export = ExportReport.read(out / "export" / run)
        assert export.status == "ok"
        by_precision = {m.precision: m for m in export.models}
        assert set(by_precision) == precisions and by_precision["fp32"].parity["passed"]
        for m in export.models:  # the export's own int8 is not the int8 candidate: not benchmarked
            path = str(out / "export" / run / m.file)
            benched = sorted(r.batch for r in records if r.model == path and r.runtime == "ort-cpu")
            assert benched == ([1] if m.precision == "fp32" else []), (path, benched)
    qad = QADRecord.read(out / "export" / SHIP / "qad")
    assert qad.ship in ("qad", "ptq") and qad.flavour == "ort-cpu" and qad.holdout_images > 0
    assert set(qad.qad.holdout) == DOMAINS  # calibrated (and decided) on every domain fm_unlabeled trained on
    shipped = out / "export" / SHIP / "qad" / qad.ship_file
    assert sorted(r.batch for r in records if r.model == str(shipped)) == [1]
    # one decision, in the console's and the report's words: the export's precision, the rule's int8 file
    decision = ship_decision(out, ExportReport.read(out / "export" / SHIP), qad)
    assert f"  {SHIP}: {decision.text()}" in printed and f": {decision.text()}\n" in (out / "report.md").read_text()
    assert decision.int8 is not None and decision.int8.path == f"qad/{qad.ship_file}"
    assert f" ships {qad.ship_file}" not in printed and "ships QAD int8" not in printed  # QAD's own log names the
    assert "ships PTQ int8" not in printed and "int8 file: " in printed  # int8 file; only the decision says "ship"
    (point,) = [p for p in collect([out / "runs", out / "export", out / "bench.jsonl"]).points
                if p.model == str(shipped)]  # the report finds the QAD record under OUT/export and joins it
    assert point.precision == f"int8/ort-cpu ({qad.ship.upper()})" and point.accuracy
    assert {m.model_extra["flavour"] for m in ExportReport.read(out / "export" / SHIP).models
            if m.precision == "int8"} == {"ort-cpu"}
    # the export's int8 (the no-harm rule's PTQ arm) calibrates where QAD does: source and target domains
    (int8,) = [m for m in ExportReport.read(out / "export" / SHIP).models if m.precision == "int8"]
    calib = (int8.model_extra or {})["quantization"]["calibration"]
    assert set(calib["domains"]) | set(calib["target_domains"]) == DOMAINS, calib
    assert len(records) == 3 and all(r.model_extra["top_ops"] for r in records)  # profiled: "top operators"
    html = (out / "report.html").read_text().replace("<wbr>", "")  # line-break hints in long names
    assert "<svg" in html and "model.int8-ort-cpu.onnx" in html
    assert f"No-harm rule: int8 file: {qad.ship_arm}&#x27;s" in html and "No-harm rule: ships" not in html
    assert "mobilenetv3_small_050 (sfda)" in html and "unlabeled optdigits+mnist_m+mnist_c" in html
    # one teacher, named by arch and file (not raw JSON): its zero-shot row and the provenance line, nothing more
    assert html.count("distill-demo-rn · open_clip_model.safetensors") == 2 and "{&quot;arch" not in html
    assert (out / "report.md").is_file() and "## Per-run accuracy (%)" in (out / "report.md").read_text()
    assert "No profiled records" not in html
    assert f"report: {out / 'report.html'}" in printed
    assert "demo finished in" in printed and "students " in printed  # the per-stage time line
    for where in ("data", "teacher", "cache", "runs", "exports", "shipped", "int8", "bench", "report"):  # each artifact
        assert f"  {where}" in printed

    # a rerun finds every stage complete and skips it
    t0 = time.time()
    assert cli(["demo", "--quick", "--adversarial", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "already trained" in printed and "already exported" in printed and "already distilled (QAD)" in printed
    assert len((out / "bench.jsonl").read_text().splitlines()) == 3  # nothing benchmarked twice
    assert time.time() - t0 < 60


def test_the_demo_words_what_ships_as_the_report_does(tmp_path):
    """The console line of the ship stage is the report's "Recommended to ship" item: fp32 recommended, the QAD file
    the no-harm rule picked named as the int8 (before: "fm_unlabeled ships model.int8-ort-cpu.onnx (QAD int8)")."""
    from distill.errors import DistillError
    from distill.report.write import write_report

    from .report.test_ship_decision import FP32, FP32_REASON, PLAIN, QAD_WINS, _export, _qad

    export_dir = tmp_path / "export" / SHIP
    checkpoint = tmp_path / "runs" / SHIP / "checkpoints" / "best"
    _export(export_dir, checkpoint, FP32)
    qad = _qad(export_dir / "qad", checkpoint, "qad")
    decision = ship_decision(tmp_path, ExportReport.read(export_dir), qad)
    assert decision.text() == (f"ship fp32 — {FP32_REASON}; if int8 is needed anyway (another runtime), ship "
                               f"qad/model.int8-ort-cpu.onnx (QAD int8; {PLAIN}no-harm rule: {QAD_WINS})")
    md = write_report([tmp_path / "export"], tmp_path / "report.html").markdown
    assert f": {decision.text()}\n" in open(md).read()
    assert decision.shipped_file(ExportReport.read(export_dir)) == "model.fp32.onnx"
    raw = ExportReport.read(export_dir).to_dict()
    raw.pop("recommendation")  # an export.json from before recommendations
    ExportReport.from_dict(raw).write(export_dir)
    with pytest.raises(DistillError, match=r"export\.json: no recommendation"):
        ship_decision(tmp_path, ExportReport.read(export_dir), qad)
