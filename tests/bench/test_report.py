"""`distill report`: discovery, content, grouping, self-containedness, and a real headless-Chromium render."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from distill.bench.report import collect, discover, write_report
from distill.bench.report_browser import find_chromium, render
from distill.bench.report_data import Point, binomial_se, dominates, mark_pareto
from distill.bench.report_runs import read_run
from distill.cli import main
from distill.errors import DistillError

from .conftest import write_run


@pytest.fixture(scope="module")
def report(report_inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("html") / "report.html"
    assert main(["report", str(report_inputs), "--out", str(out), "--title", "test report"]) == 0
    return out


def test_discovery_rule(report_inputs: Path) -> None:
    runs, exports, benches = discover([report_inputs])
    assert [p.name for p in runs] == ["run"] and [p.name for p in exports] == ["export"]
    assert [p.name for p in benches] == ["bench.jsonl"]
    # explicit files work too, and duplicates collapse
    runs2, exports2, benches2 = discover([report_inputs / "export" / "export.json", benches[0], report_inputs / "run"])
    assert len(runs2) == 1 and len(exports2) == 1 and len(benches2) == 1
    with pytest.raises(DistillError):
        discover([report_inputs / "nope"])


def test_joining_and_pareto(report_inputs: Path) -> None:
    data = collect([report_inputs])
    assert data.unmatched == 0  # every record found its accuracy (onnx by sha256, torch by checkpoint sha256)
    kinds = {(p.precision, p.runtime) for p in data.points}
    assert {("fp32", "ort-cpu"), ("fp16", "ort-cpu"), ("int8/ort-cpu", "ort-cpu"), ("int8/tensorrt", "ort-cpu"),
            ("fp32", "torch")} <= kinds
    assert data.common_domains == ["clean", "dark", "noisy"]
    for b in (1, 4):
        front = [p for p in data.points if p.batch == b and p.pareto]
        others = [p for p in data.points if p.batch == b and not p.pareto]
        assert front
        for o in others:  # off the front: some point is as fast and not significantly less accurate
            assert any(dominates(q, o) for q in data.points if q.batch == b and q is not o)
        for f in front:
            assert not any(dominates(q, f) for q in data.points if q.batch == b and q is not f)


def test_pareto_rule() -> None:
    def pt(lat: float, acc: float) -> Point:
        return Point("s", "fp32", "ort-cpu", 1, {"p50": lat, "p90": lat, "p99": lat}, {"d": acc}, "", "", score=acc)

    pts = [pt(1, 0.5), pt(2, 0.9), pt(3, 0.8), pt(4, 0.95), pt(0.5, 0.4)]
    mark_pareto(pts)
    assert [p.pareto for p in pts] == [True, True, False, True, True]


def test_report_content_is_self_contained(report: Path) -> None:
    text = report.read_text()
    assert "<script src" not in text and "<link" not in text and "@import" not in text
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", text))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls  # the SVG namespace is a name, never fetched
    for needle in ("Pareto front", "Per-domain accuracy", "Latency distributions", "Top operators", "INT8 decisions",
                   "Provenance", "clean", "noisy", "int8/tensorrt", "QLinearConv", "data-point="):
        assert needle in text, needle
    md = (report.parent / "report.md").read_text()
    assert md.startswith("# test report") and "## Pareto front" in md and "## INT8 decisions" in md
    assert "## Per-run accuracy (%)" in md
    assert "| test_resnet (erm) | 1 | 60.0 | 90.0 (s) | 80.0 (s) | 60.0 |" in md  # the run, in percent, sources marked


def test_report_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DistillError, match="nothing to report"):
        write_report([tmp_path / "empty"], tmp_path / "r.html")


def test_markdown_is_named_after_the_html(report_inputs: Path, tmp_path: Path) -> None:
    assert main(["report", str(report_inputs / "run"), "--out", str(tmp_path / "reportA.html")]) == 0
    assert (tmp_path / "reportA.md").is_file() and not (tmp_path / "report.md").exists()
    with pytest.raises(DistillError, match=r"--out .*x\.md: the HTML file must not end in \.md"):
        write_report([report_inputs / "run"], tmp_path / "x.md")


def test_summary_accuracy_is_a_fraction_even_when_tiny(tmp_path: Path) -> None:
    """summary.json holds fractions: a model under 1 % stays under 1 % (no unit guessed from the values)."""
    run = write_run(tmp_path / "r", strategy="erm", acc={"clean": 0.009, "dark": 0.005, "noisy": 0.004}, seed=3)
    r = read_run(run)
    assert r.accuracy == {"clean": 0.009, "dark": 0.005, "noisy": 0.004}
    assert r.seed == 3 and not r.adapted and r.teacher == "ViT-test · open_clip_model.safetensors"
    write_report([run], tmp_path / "r.html")
    assert "| test_resnet (erm) | 1 | 0.4 | 0.9 (s) | 0.5 (s) | 0.4 |" in (tmp_path / "r.md").read_text()


def test_a_summary_that_does_not_match_its_record_is_named(tmp_path: Path) -> None:
    run = write_run(tmp_path / "r", strategy="erm", acc={"clean": 0.9, "dark": 0.5, "noisy": 0.25}, seed=0)
    text = (run / "summary.json").read_text().replace('"best_epoch"', '"best_epoch_typo"')
    (run / "summary.json").write_text(text)
    with pytest.raises(DistillError, match=r"summary\.json: best_epoch: Field required"):
        collect([run])


def test_runs_grouped_labelled_and_separated(grouped_runs: Path) -> None:
    data = collect([grouped_runs])
    by_label = {g.label: g for g in data.groups}
    assert set(by_label) == {"test_resnet (kd; temperature=4)", "test_resnet (kd; temperature=2)",
                             "test_resnet (erm)", "test_resnet (sfda)"}
    kd4 = by_label["test_resnet (kd; temperature=4)"]
    assert kd4.n == 3 and kd4.seeds == [0, 1, 2] and not kd4.adapted
    assert kd4.mean["noisy"] == pytest.approx(0.62) and kd4.std["noisy"] == pytest.approx(0.02)
    assert kd4.target_mean == pytest.approx(0.62) and kd4.target_std == pytest.approx(0.02)
    assert by_label["test_resnet (erm)"].n == 2 and by_label["test_resnet (erm)"].std["clean"] == 0.0
    assert "noisy" not in by_label["test_resnet (kd; temperature=2)"].std  # one seed: no spread
    sfda = by_label["test_resnet (sfda)"]
    assert sfda.adapted and sfda.n == 1
    # source-trained first, best target mean first within each kind
    assert [g.label for g in data.groups] == ["test_resnet (kd; temperature=2)", "test_resnet (kd; temperature=4)",
                                              "test_resnet (erm)", "test_resnet (sfda)"]
    # one teacher, its zero-shot merged over the runs (the adapted run's partial dict adds no second row)
    assert data.teachers == {"ViT-test · open_clip_model.safetensors": pytest.approx(
        {"clean": 0.5, "dark": 0.4, "noisy": 0.3})}


def test_grouped_html_and_markdown(grouped_runs: Path, tmp_path: Path) -> None:
    res = write_report([grouped_runs], tmp_path / "g.html", "g")
    text = (tmp_path / "g.html").read_text().replace("<wbr>", "")  # line-break hints in long names
    assert "{&quot;arch" not in text and text.count("ViT-test · open_clip_model.safetensors") == 2  # table + provenance
    assert text.count('<tr class="grp">') == 3  # teacher, source-trained, source-free
    assert "Adapted to the target domains without source data (source-free)" in text
    assert '<td class="num tm" data-v="0.62">62.0<span class="sd"> ±\u00a02.0</span></td>' in text
    assert '<td class="num src" data-v="0.91">91.0<span class="sd"> ±\u00a01.0</span></td>' in text
    md = Path(res["markdown"]).read_text()
    assert "| test_resnet (kd; temperature=4) | 3 | 62.0 ± 2.0 | 91.0 ± 1.0 (s) | 81.0 ± 1.0 (s) | 62.0 ± 2.0 |" in md
    assert md.index("### Trained on the source domains") < md.index("### Adapted to the target domains") \
        < md.index("test_resnet (sfda)")


def _pt(lat: float, acc: float, n: int | None = None) -> Point:
    p = Point("s", "fp32", "ort-cpu", 1, {"p50": lat, "p90": lat, "p99": lat}, {"d": acc}, "", "", score=acc,
              count={"d": n} if n else None)
    p.score_se = binomial_se(p.accuracy, p.count, ["d"])
    return p


def test_pareto_ignores_differences_within_the_test_set_noise() -> None:
    # 36.5 % vs 38 % on 400 images: 6 images apart, SE ~2.4 points: the slower int8 model is not better
    fast, slow = _pt(1.0, 0.365, 400), _pt(2.0, 0.38, 400)
    mark_pareto([fast, slow])
    assert fast.pareto and not slow.pareto
    # the same difference on 100000 images is real
    fast, slow = _pt(1.0, 0.365, 100_000), _pt(2.0, 0.38, 100_000)
    mark_pareto([fast, slow])
    assert fast.pareto and slow.pareto
    # as fast and significantly more accurate: the other is dominated
    a, b = _pt(1.0, 0.9, 1000), _pt(1.0, 0.5, 1000)
    mark_pareto([a, b])
    assert a.pareto and not b.pareto
    # mean over two domains of 96 images at 50 %: p~ = 50/100, var = 2 * 0.25 / 100, SE = sqrt(var) / 2
    assert binomial_se({"a": 0.5, "b": 0.5}, {"a": 96, "b": 96}, ["a", "b"]) == pytest.approx(0.0353553, rel=1e-5)
    # 0 of 46 right: p~ = 2/50, SE = sqrt(0.04 * 0.96 / 50), not zero
    assert binomial_se({"a": 0.0}, {"a": 46}, ["a"]) == pytest.approx(0.0277128, rel=1e-5)
    assert binomial_se({"a": 0.5}, None, ["a"]) is None


def test_points_carry_test_set_size(report_inputs: Path) -> None:
    data = collect([report_inputs])
    onnx = [p for p in data.points if p.runtime == "ort-cpu"]
    assert onnx and all(p.count == {"clean": 10, "dark": 10, "noisy": 10} and p.score_se for p in onnx)


def require_chromium() -> str:
    """The browser; under CI=true its absence fails the run (.ci/run installs it), elsewhere it skips."""
    path = find_chromium()
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but no chromium: the report's browser test must run in CI (.ci/run installs it)")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    return path


@pytest.fixture(scope="module")
def chromium() -> str:
    return require_chromium()


def test_missing_browser_fails_under_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no browser on it
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true but no chromium"):
        require_chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        require_chromium()


@pytest.fixture(scope="module")
def full_report(report_inputs: Path, grouped_runs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Everything at once: a real run + export + bench records, and grouped seeds / options / an adapted run."""
    out = tmp_path_factory.mktemp("full") / "report.html"
    write_report([report_inputs, grouped_runs], out, "full report")
    return out


@pytest.fixture(scope="module")
def stress_report(stress_inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stress_html") / "report.html"
    write_report([stress_inputs], out, "six long-named domains")
    return out


def test_stress_inputs_read_as_meant(stress_report: Path, stress_inputs: Path) -> None:
    data = collect([stress_inputs])
    assert len(data.groups) == 3 and all(g.n == 2 for g in data.groups)
    assert {g.label for g in data.groups} == {
        "mobilenetv3_small_050 (custom_feature_kd; alpha=0.9; feature_weight=0; temperature=4)",
        "mobilenetv3_small_050 (custom_feature_kd; alpha=0.5; feature_weight=1; temperature=2)",
        "mobilenetv3_small_050 (custom_feature_kd; alpha=0.9; feature_weight=0.25; temperature=8)"}
    assert len(data.points) == 18 and all(p.count and p.score_se for p in data.points)


@pytest.mark.parametrize("width", [1400, 800])
@pytest.mark.parametrize("which", ["full", "stress"])
def test_report_renders_in_chromium(chromium: str, full_report: Path, stress_report: Path, which: str, width: int,
                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    shots = Path(os.environ.get("DISTILL_REPORT_SHOTS") or tmp_path_factory.mktemp("shots"))
    report = full_report if which == "full" else stress_report
    r = render(report, width, shots / f"{which}-{width}.png", chrome=chromium)
    assert r.ready, "the report's inline script did not run to the end"
    assert r.points >= (5 if which == "full" else 18) and not r.console, r.console
    assert r.problems == [], "\n".join(r.problems)  # nothing overflows its box, no chart label outside or overlapping
    assert r.screenshot and r.screenshot.stat().st_size > 20_000 and r.height > 1000
    print(f"screenshot: {r.screenshot}")


def test_layout_check_sees_an_overflow(chromium: str, tmp_path: Path) -> None:
    """The check can fail: a cell too narrow for its word, a chart label past the SVG's edge."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body data-report-ready="1"><section id="s" style="width:300px">'
                    '<table style="table-layout:fixed;width:40px"><tr><td style="overflow:hidden">'
                    'averyveryverylongword</td></tr></table></section>'
                    '<svg viewBox="0 0 100 50" width="100" height="50"><text x="60" y="20">clipped label</text></svg>'
                    "</body></html>")
    r = render(page, 800, chrome=chromium)
    assert any(p.startswith("text overflows td") for p in r.problems), r.problems
    assert any(p.startswith("chart label outside its chart") for p in r.problems), r.problems


def test_labels_say_adapted_only_where_needed(tmp_path: Path) -> None:
    write_run(tmp_path / "a", strategy="shot", acc={"noisy": 0.70}, seed=0, adapted_from="erm/checkpoints/best")
    write_run(tmp_path / "b", strategy="shot", acc={"clean": 0.90, "dark": 0.80, "noisy": 0.60}, seed=0)
    write_run(tmp_path / "c", strategy="erm", acc={"clean": 0.90, "dark": 0.80, "noisy": 0.50}, seed=0,
              source=("clean",), target=("dark", "noisy"))
    write_run(tmp_path / "d", strategy="erm", acc={"clean": 0.90, "dark": 0.80, "noisy": 0.55}, seed=0)
    labels = {Path(r.dir).name: r.label for r in collect([tmp_path]).runs}
    assert labels == {"a": "test_resnet (shot, adapted)", "b": "test_resnet (shot, source-trained)",
                      "c": "test_resnet (erm; src clean; tgt dark+noisy)",
                      "d": "test_resnet (erm; src clean+dark; tgt noisy)"}


def test_int8_section_shows_the_label_free_criterion(stress_report: Path) -> None:
    """The fallback decides on disagreement with fp32 (not the test drop): the INT8 table shows that
    number against the budget, and the test drop apart."""
    html = stress_report.read_text()
    section = html[html.index('<section id="int8">'):]
    section = section[:section.index("</section>")]
    assert "worst disagreement, %: before → after" in section and "worst test drop, pts" in section
    assert "2.73 → 0.60" in section  # the decision's own numbers (before: fallback, after: the shipped file)
    assert "/backbone/blocks/blocks.0/blocks.0.0/se/conv_expand/Conv" in section
