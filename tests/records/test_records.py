"""distill.records: typed artifacts round-trip, and a file that does not match is one line naming it."""
from __future__ import annotations

import json

import pytest

from distill.errors import DistillError
from distill.records import BenchRecord, RunSummary, SkippedImage, pct, percent, same_checkpoint
from distill.utils.io import read_json

SUMMARY = {
    "strategy": "kd", "student": "resnet18", "source_domains": ["a"], "target_domains": ["b"],
    "trained_on": ["a"], "best_epoch": 2, "selected_on": "source validation accuracy",
    "test_acc": {"a": 0.9, "b": 0.25}, "source_acc": 0.9, "target_acc": 0.25, "params": 10,
    "checkpoint": "runs/x/checkpoints/best", "train_seconds_this_session": 1.5,
    "teacher": {"arch": "ViT-B-32", "pretrained": "openai", "some_future_key": 1},
}


def test_run_summary_round_trips_through_its_file(tmp_path):
    s = RunSummary.from_dict(SUMMARY)
    path = s.write(tmp_path)
    assert path.name == "summary.json"
    back = RunSummary.read(tmp_path)
    here = s.model_copy(update={"checkpoint": str(tmp_path / "checkpoints" / "best")})  # read in its folder
    assert back == here and back.test_acc["b"] == 0.25 and back.teacher.arch == "ViT-B-32"
    assert RunSummary.read(path) == here  # the file itself works too


def test_a_wrong_value_is_one_line_naming_file_and_key(tmp_path):
    bad = dict(SUMMARY, test_acc={"a": "high"})
    (tmp_path / "summary.json").write_text(json.dumps(bad))
    with pytest.raises(DistillError) as e:
        RunSummary.read(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "summary.json" in msg and "test_acc.a" in msg


def test_an_unknown_top_level_key_is_refused():
    with pytest.raises(DistillError, match="accuracy_pct"):
        RunSummary.from_dict(dict(SUMMARY, accuracy_pct=90))


def test_bench_lines_name_the_line_at_fault(tmp_path):
    good = {"schema": "distill.bench/1", "model": "m.onnx", "model_name": "m.onnx", "runtime": "ort-cpu",
            "batch": 1, "input_shape": [1, 3, 8, 8], "warmup": 1, "iters": 2, "throughput_ips": 5.0,
            "timestamp": "t", "latency_ms": {k: 1.0 for k in ("mean", "std", "min", "p50", "p90", "p99", "max")},
            "compile_s": 3.0}
    rec = BenchRecord.from_dict(good)
    f = tmp_path / "bench.jsonl"
    rec.append_to(f)
    f.write_text(f.read_text() + "\n" + json.dumps(dict(good, batch="one")) + "\n")
    with pytest.raises(DistillError, match=r"bench.jsonl:3: batch"):
        list(BenchRecord.read_lines(f))
    first = next(BenchRecord.read_lines(f))
    assert first.schema_ == "distill.bench/1" and first.to_dict()["compile_s"] == 3.0  # runner extras kept


@pytest.mark.parametrize("value,text", [(0.4035, "40.4"), (0.005, "0.5"), (None, "n/a"), (float("nan"), "n/a")])
def test_pct_prints_fractions_as_percent(value, text):
    assert pct(value) == text


@pytest.mark.parametrize("correct, total, text", [(23, 80, "28.8"), (1, 3, "33.3"), (7, 7, "100.0"), (0, 7, "0.0")])
def test_percent_rounds_first_so_exact_halves_print_as_measured(correct, total, text):
    """100 * (23/80) is 28.749999...; the percent the run measured is 28.75 and printed 28.8."""
    assert f"{100.0 * (correct / total):.1f}" != text or correct != 23, "the case this guards against"
    assert percent(correct / total) == round(100.0 * correct / total, 4)
    assert pct(correct / total) == text and pct(correct / total, 2) == f"{percent(correct / total):.2f}"


def test_a_run_summary_keeps_its_robust_report_typed_and_as_written(tmp_path):
    robust = {"checkpoint": "runs/x/checkpoints/best", "settings": {"pgd_eps": ["2/255"]},
              "domains": {"b": {"n": 80, "clean": 0.75, "pgd": {"2/255": 0.5}, "corruptions": {}, "corruption_mean": None}}}
    RunSummary.from_dict(dict(SUMMARY, robust=robust)).write(tmp_path)
    written = json.loads((tmp_path / "summary.json").read_text())["robust"]
    assert written == robust, "a training run's report has no data/split/skipped_images keys"
    back = RunSummary.read(tmp_path).robust
    assert back.domains["b"].pgd["2/255"] == 0.5 and back.data is None
    with pytest.raises(DistillError, match="robust.domains.b.n"):
        RunSummary.from_dict(dict(SUMMARY, robust=dict(robust, domains={"b": {"clean": 0.75}})))


def test_a_skipped_image_without_sample_index_is_written_as_path_and_reason(tmp_path):
    s = RunSummary.from_dict(dict(SUMMARY, skipped_images=[{"path": "a/0/x.png", "reason": "truncated"}]))
    written = json.loads(s.write(tmp_path).read_text())
    assert written["skipped_images"] == [{"path": "a/0/x.png", "reason": "truncated"}]
    m = SkippedImage.model_validate({"path": "p", "sample_index": 3, "reason": "r"}).model_dump(mode="json")
    assert list(m) == ["path", "sample_index", "reason"]  # the cache manifest's order, index kept when known


def test_same_checkpoint_by_weights_then_by_folder(tmp_path, monkeypatch):
    """One rule for export.json, qad.json and a folder at hand (QAD's --export, the report's pairing): the weights'
    sha256s decide when both are known; else the resolved folders, a model.safetensors standing for its folder."""
    best = tmp_path / "run" / "checkpoints" / "best"
    best.mkdir(parents=True)
    (best / "model.safetensors").write_bytes(b"w")
    monkeypatch.chdir(tmp_path / "run")
    assert same_checkpoint("somewhere/else", "a" * 64, best, "a" * 64)  # typed from other folders: same weights
    assert not same_checkpoint(best, "a" * 64, best, "b" * 64)  # retrained in place: not the same
    assert same_checkpoint("checkpoints/best", None, best, "b" * 64)  # an older record: by path, from the cwd
    assert same_checkpoint(best / "model.safetensors", "a" * 64, best, None)
    assert not same_checkpoint(tmp_path / "other", None, best, None)


def test_a_half_written_file_or_line_is_one_complete_line(tmp_path):
    """QA K F9: a manifest.json cut at 500 bytes said `invalid JSON at line 19: Unterminated string starting at`,
    its position missing. Now the line and column, the message whole, and that the text ends early."""
    from distill.records import CacheManifest

    text = json.dumps({"format": "distill.teacher_cache/1", "teacher": {"arch": "distill-demo-rn",
                       "pretrained": "/data/teacher/open_clip_model.safetensors"}, "data": {"root": "/data/shapes",
                       "fingerprint": "cd" * 32}}, indent=2)
    cut = text[:text.index("cdcd") + 20]
    (tmp_path / "manifest.json").write_text(cut)
    with pytest.raises(DistillError) as e:
        CacheManifest.read(tmp_path)
    assert str(e.value) == (f"{tmp_path / 'manifest.json'}: invalid JSON at line 9, column 20: Unterminated string "
                            "starting there; the text ends before it is complete (cut off, as by an interrupted write?)")
    # a bench line cut by a killed `distill bench`: the column, whole
    f = tmp_path / "bench.jsonl"
    f.write_text('{"schema": "distill.bench/1", "model": "m.on\n')
    with pytest.raises(DistillError) as e:
        list(BenchRecord.read_lines(f))
    assert str(e.value) == (f"{f}:1: invalid JSON at column 40: Unterminated string starting there; the text ends "
                            "before it is complete (cut off, as by an interrupted write?)")
    # a mistake inside the text is not called a cut-off
    (tmp_path / "manifest.json").write_text('{"format" 1}')
    with pytest.raises(DistillError) as e:
        CacheManifest.read(tmp_path)
    assert str(e.value) == f"{tmp_path / 'manifest.json'}: invalid JSON at line 1, column 11: Expecting ':' delimiter"


@pytest.mark.parametrize("text, cut", [('{"a": tru', True), ('{"a": -', True), ('{"a": 1.', True), ('[1, 2e', True),
                                       ('[nul\n', True), ('{"a": trux}', False), ('{"a": 1x}', False),
                                       ('{"a": 1}\n12', False)])
def test_text_cut_off_inside_a_literal_or_number_says_so(tmp_path, text, cut):
    """Review 3 L5: `{"a": tru` (a file cut inside `true`) gave `Expecting value` with no cut-off hint, because the
    rest of the text was not blank; a typo inside the text still gets none."""
    (tmp_path / "x.json").write_text(text)
    with pytest.raises(DistillError) as e:
        read_json(tmp_path / "x.json")
    assert ("the text ends before it is complete (cut off" in str(e.value)) is cut, str(e.value)


def test_an_empty_file_is_called_empty_not_cut_off(tmp_path):
    """Review 3 L5: an empty file read `Expecting value; the text ends before it is complete (cut off ...)`."""
    for text in ("", "\n  \n"):
        (tmp_path / "x.json").write_text(text)
        with pytest.raises(DistillError) as e:
            read_json(tmp_path / "x.json")
        assert str(e.value).endswith(": the file is empty") and "cut off" not in str(e.value), str(e.value)


def test_an_export_embeds_the_run_summary_without_its_finish_time():
    """summary.json's finished_at (review 3 M2) stays out of export.json's run_summary: the release before reads that
    block as its RunSummary, which forbids unknown keys."""
    from distill.records import ExportReport

    summary = RunSummary(strategy="erm", student="s", source_domains=["a"], target_domains=["b"], trained_on=["a"],
                         best_epoch=1, selected_on="source_val", test_acc={"a": 0.5}, params=1, checkpoint="c",
                         train_seconds_this_session=1.0, finished_at="2026-12-06T01:02:03+00:00")
    assert summary.to_dict()["finished_at"] == "2026-12-06T01:02:03+00:00"
    export = ExportReport(format="distill.export/1", created="now", status="ok", checkpoint="c", student="s",
                          class_names=["x"], input={}, preprocess={}, run_summary=summary)
    assert "finished_at" not in export.to_dict()["run_summary"]
    assert ExportReport.from_dict(export.to_dict(), "export.json").run_summary.finished_at is None


def test_a_summary_written_now_reads_in_the_release_before_and_keeps_its_finish_time(tmp_path):
    """Review 4 M1: summary.json validates as the previous release's RunSummary (it forbids unknown keys: every new run
    was unreadable to its `distill report`); finished_at lives in finished_at.json beside it, and this version reads it
    from there or, for a summary written with it inside (2026-12-06), from summary.json."""
    from distill.records import RUN_SUMMARY

    from .old_release import OldRunSummary

    at = "2026-12-06T01:02:03+00:00"
    summary = RunSummary(strategy="erm", student="s", source_domains=["a"], target_domains=["b"], trained_on=["a"],
                         best_epoch=1, selected_on="source_val", test_acc={"a": 0.5}, params=1, checkpoint="c",
                         train_seconds_this_session=1.0, finished_at=at)
    (tmp_path / "new").mkdir()
    summary.write(tmp_path / "new")
    OldRunSummary.model_validate(read_json(tmp_path / "new" / RUN_SUMMARY))
    assert RunSummary.read(tmp_path / "new").finished_at == at
    assert RunSummary.read(tmp_path / "new" / RUN_SUMMARY).finished_at == at
    (tmp_path / "today").mkdir()
    (tmp_path / "today" / RUN_SUMMARY).write_text(json.dumps(summary.to_dict()))
    assert RunSummary.read(tmp_path / "today").finished_at == at
    (tmp_path / "older").mkdir()
    summary.model_copy(update={"finished_at": None}).write(tmp_path / "older")
    assert RunSummary.read(tmp_path / "older").finished_at is None
