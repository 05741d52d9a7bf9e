"""The report in a real headless Chromium (distill/report/browser.py): nothing overflows or overlaps."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from distill.report.browser import find_chromium, render


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


def test_missing_browser_is_one_error_line_not_a_traceback(tmp_path: Path) -> None:
    """QA K F5: `python -m distill.report.browser` without chromium printed a traceback ending in the DistillError.
    Now: one `error:` line naming what is missing and how to get it, exit status 1 (as the distill CLI)."""
    import subprocess
    import sys

    page = tmp_path / "report.html"
    page.write_text("<html><body></body></html>")
    env = {**os.environ, "PATH": str(tmp_path / "bin")}  # no browser on it
    r = subprocess.run([sys.executable, "-m", "distill.report.browser", str(page), "--shots", str(tmp_path / "s"),
                        "--widths", "1400,800"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.splitlines() == [
        "error: chromium not found: none of chromium, chromium-browser, google-chrome, google-chrome-stable is on "
        "PATH; install it (Debian/Ubuntu: apt-get install -y chromium) or name the browser's binary with --chrome PATH"]
    # a --chrome that is not there, and a report that is not there: one line each as well
    r = subprocess.run([sys.executable, "-m", "distill.report.browser", str(page), "--chrome", str(tmp_path / "nope")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1 and r.stderr.splitlines() == [f"error: --chrome {tmp_path / 'nope'}: not found or not "
                                                           "executable"]
    fake = tmp_path / "bin" / "chromium"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    r = subprocess.run([sys.executable, "-m", "distill.report.browser", str(tmp_path / "missing.html")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1 and r.stderr.splitlines() == [
        f"error: {tmp_path / 'missing.html'}: cannot read: No such file or directory"]
