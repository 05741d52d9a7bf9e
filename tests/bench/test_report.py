"""`distill report`: discovery, content, self-containedness, and a real headless-Chromium render."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from distill.bench.report import collect, discover, mark_pareto, Point, write_report
from distill.cli import main
from distill.errors import DistillError


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


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
        for o in others:  # dominated by someone on the front
            assert any(f.latency["p50"] <= o.latency["p50"] and f.score >= o.score for f in front)


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


def test_report_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DistillError, match="nothing to report"):
        write_report([tmp_path / "empty"], tmp_path / "r.html")


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (apt-get install -y chromium)")
def test_report_renders_in_chromium(report: Path, tmp_path: Path) -> None:
    chrome = _chromium()
    base = [chrome, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--window-size=1280,2400", "--enable-logging=stderr", "--v=0"]
    url = report.resolve().as_uri()
    dom = subprocess.run(base + [f"--user-data-dir={tmp_path / 'profile1'}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=90)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    assert 'data-report-ready="1"' in body, body  # the inline script ran to the end without throwing
    assert int(re.search(r'data-points="(\d+)"', body).group(1)) >= 5
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    shot = tmp_path / "report.png"
    r = subprocess.run(base + [f"--user-data-dir={tmp_path / 'profile2'}", f"--screenshot={shot}", url],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0 and shot.is_file() and shot.stat().st_size > 20_000, r.stderr[-2000:]
    print(f"screenshot: {shot}")
