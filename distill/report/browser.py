"""Render a report in headless Chromium: layout problems a person would see, and full-page screenshots.

Why a real browser: whether a label fits its box depends on fonts and table layout, which only a
layout engine knows. The check copies the report with one extra inline script that shows every
batch panel, measures every table cell, heading and chart label, and writes what it found into
``<body data-layout-problems="[...]">``; ``chromium --dump-dom`` hands that back. No driver, no
network, nothing beyond the ``chromium`` binary (Debian: ``apt-get install -y chromium``; one elsewhere than on
PATH: ``--chrome PATH``). Without one, the command says so in one ``error:`` line, exit status 1.

    python -m distill.report.browser report.html --shots docs/report   # docs/report-1400.png, -800.png
"""
from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from distill.errors import DistillError

WIDTHS = (1400, 800)

# Runs after the report's own script. Reports problems as short strings; an empty list is a pass.
CHECK_JS = r"""
(function(){
  var probs=[];
  document.body.setAttribute('data-page-height',String(Math.ceil(document.documentElement.scrollHeight)));
  function say(el){var c=(typeof el.className==='string'&&el.className)?'.'+el.className.trim().split(/\s+/).join('.'):'';
    return el.tagName.toLowerCase()+c+' "'+(el.textContent||'').trim().replace(/\s+/g,' ').slice(0,70)+'"';}
  document.querySelectorAll('[data-batch-panel]').forEach(function(el){el.style.display='';});
  var de=document.documentElement;
  if(de.scrollWidth>de.clientWidth+1){probs.push('page scrolls sideways: '+de.scrollWidth+' > '+de.clientWidth+' px');}
  document.querySelectorAll('section').forEach(function(s){
    if(s.scrollWidth>s.clientWidth+1){probs.push('section #'+s.id+' overflows its card: '+s.scrollWidth+' > '+s.clientWidth+' px');}});
  document.querySelectorAll('td,th,h1,h2,h3,p,summary,button,.pill,.legend span').forEach(function(el){
    if(el.scrollWidth>el.clientWidth+1){probs.push('text overflows '+say(el)+': '+el.scrollWidth+' > '+el.clientWidth+' px');}});
  document.querySelectorAll('td').forEach(function(td){  // a word of 8+ characters broken in a cell under 56 px
    var longest=Math.max.apply(null,(td.textContent||'').split(/\s+/).map(function(w){return w.length;}));
    if(longest>=8&&td.clientWidth<56){probs.push('cell squeezed to '+td.clientWidth+' px: '+say(td));}});
  document.querySelectorAll('svg').forEach(function(svg){
    var r=svg.getBoundingClientRect();
    if(r.width<40){return;}
    var boxes=[];
    svg.querySelectorAll('text').forEach(function(t){
      var b=t.getBoundingClientRect();
      if(b.left<r.left-1||b.right>r.right+1||b.top<r.top-1||b.bottom>r.bottom+1){
        probs.push('chart label outside its chart: '+say(t));}
      boxes.push([b,t]);});
    for(var i=0;i<boxes.length;i++){for(var j=i+1;j<boxes.length;j++){
      var a=boxes[i][0],b=boxes[j][0];
      var ox=Math.min(a.right,b.right)-Math.max(a.left,b.left),oy=Math.min(a.bottom,b.bottom)-Math.max(a.top,b.top);
      if(ox>2&&oy>2){probs.push('chart labels overlap: '+say(boxes[i][1])+' and '+say(boxes[j][1]));}}}
  });
  document.body.setAttribute('data-layout-problems',JSON.stringify(probs));
})();
"""


@dataclass
class Rendered:
    """What one width showed: layout problems, page height, and the report script's own markers."""

    width: int
    problems: list[str] = field(default_factory=list)
    height: int = 0
    ready: bool = False
    points: int = 0
    console: list[str] = field(default_factory=list)
    screenshot: Path | None = None


CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: what to do when none is found: the one line ``python -m distill.report.browser`` prints (CI installs it: .ci/run)
NO_CHROMIUM = (f"chromium not found: none of {', '.join(CHROMIUM_NAMES)} is on PATH; install it (Debian/Ubuntu: "
               "apt-get install -y chromium) or name the browser's binary with --chrome PATH")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _chrome(chrome: str, profile: Path, width: int, height: int) -> list[str]:
    return [chrome, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
            "--disable-dev-shm-usage", f"--window-size={width},{height}", "--enable-logging=stderr", "--v=0",
            f"--user-data-dir={profile}"]


def render(report: str | Path, width: int, screenshot: str | Path | None = None, chrome: str | None = None,
           timeout: float = 120) -> Rendered:
    """Lay ``report`` out at ``width`` px; check it; optionally save a full-page screenshot."""
    if chrome is not None and shutil.which(chrome) is None:
        raise DistillError(f"--chrome {chrome}: not found or not executable")
    chrome = chrome or find_chromium()
    if chrome is None:
        raise DistillError(NO_CHROMIUM)
    report = Path(report).resolve()
    try:
        text = report.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DistillError(f"{report}: cannot read: {e.strerror if isinstance(e, OSError) else 'not UTF-8 text'}") \
            from None
    if "</body>" not in text:
        raise DistillError(f"{report}: no </body>; not a distill report")
    out = Rendered(width)
    with tempfile.TemporaryDirectory(prefix="distill-report-") as tmp:
        check = Path(tmp) / report.name  # same name; the copy's folder is only for the browser
        check.write_text(text.replace("</body>", f"<script>{CHECK_JS}</script></body>", 1))
        dom = subprocess.run(_chrome(chrome, Path(tmp) / "p1", width, 900) + ["--dump-dom", check.as_uri()],
                             capture_output=True, text=True, timeout=timeout)
        if dom.returncode != 0:
            raise DistillError(f"chromium --dump-dom failed ({dom.returncode}): {dom.stderr[-500:]}")
        m = re.search(r"<body[^>]*>", dom.stdout)
        if not m:
            raise DistillError(f"chromium --dump-dom returned no <body>: {dom.stdout[:200]!r}")
        body = m.group(0)

        def attr(name: str) -> str | None:
            a = re.search(rf'{name}="([^"]*)"', body)
            return html.unescape(a.group(1)) if a else None

        out.ready = attr("data-report-ready") == "1"
        out.points = int(attr("data-points") or 0)
        out.height = int(attr("data-page-height") or 0)
        problems = attr("data-layout-problems")
        out.problems = json.loads(problems) if problems else ["the layout check did not run (script error?)"]
        out.console = [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
        if screenshot is not None:
            shot = Path(screenshot).resolve()
            shot.parent.mkdir(parents=True, exist_ok=True)
            r = subprocess.run(_chrome(chrome, Path(tmp) / "p2", width, max(out.height, 600))
                               + [f"--screenshot={shot}", report.as_uri()], capture_output=True, text=True,
                               timeout=timeout)
            if r.returncode != 0 or not shot.is_file():
                raise DistillError(f"chromium --screenshot failed ({r.returncode}): {r.stderr[-500:]}")
            out.screenshot = shot
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distill.report.browser", description=__doc__.split("\n\n")[0])
    p.add_argument("report", help="a report.html")
    p.add_argument("--shots", help="screenshot prefix: writes PREFIX-<width>.png")
    p.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="comma-separated widths in px")
    p.add_argument("--chrome", help=f"the browser's binary (default: the first of {', '.join(CHROMIUM_NAMES)} on PATH)")
    args = p.parse_args(argv)
    try:
        widths = [int(x) for x in args.widths.split(",")]
    except ValueError:
        p.error(f"--widths {args.widths}: give comma-separated widths in px (1400,800)")
    try:
        return _check(args.report, widths, args.shots, args.chrome)
    except DistillError as e:  # one line, as the distill CLI prints its errors
        print(f"error: {e}", file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired as e:
        print(f"error: chromium did not finish within {e.timeout:g} s", file=sys.stderr)
        return 1


def _check(report: str, widths: list[int], shots: str | None, chrome: str | None) -> int:
    """Render ``report`` at each width, print what it found; 1 if anything is wrong."""
    bad = 0
    for w in widths:
        r = render(report, w, f"{shots}-{w}.png" if shots else None, chrome=chrome)
        print(f"{w} px: {len(r.problems)} layout problem(s), page {r.height} px"
              + (f", screenshot {r.screenshot}" if r.screenshot else ""))
        for prob in r.problems:
            print(f"  {prob}")
        bad += len(r.problems) + (not r.ready)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
