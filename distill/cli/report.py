"""``distill report``: one self-contained HTML page (+ report.md) from runs, exports and bench files."""
from __future__ import annotations

import argparse
import sys

from distill.bench.edge_runner import check_out_path
from distill.errors import DistillError
from distill.outputs import report_files
from distill.records import REPORT_HTML


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="HTML + Markdown report: Pareto front, per-domain accuracy, latency, top ops, int8 decisions",
        description="PATHs are run folders (summary.json), export folders (export.json), `distill qad` folders "
        "(qad.json: PTQ vs QAD per domain), bench .jsonl files, or folders containing any of them (searched "
        "recursively). Writes one self-contained HTML file (no network needed) and the same name with .md beside it "
        "(report.html -> report.md).")
    p.add_argument("paths", nargs="+", metavar="PATH", help="run dirs, export dirs, qad dirs, bench .jsonl files, or parents")
    p.add_argument("--out", default=REPORT_HTML, help=f"HTML file to write (default: {REPORT_HTML}; a name without a suffix gets .html; "
                   f"an existing folder, or DIR/ (made if missing), gets {REPORT_HTML} inside it)")
    p.add_argument("--title", default="distill report", help="page title")
    p.set_defaults(func=run, _parser=p, interrupt_hint="rerun the same command (it starts over)")


def run(args: argparse.Namespace) -> int:
    from distill.report.write import write_report  # lazy: `distill --help` does not load the report's imports

    html, _ = report_files(args.out)  # an existing folder: report.html (and report.md) inside it
    try:
        check_out_path(html)  # before reading every input: one line, not a traceback after the work
    except ValueError as e:
        raise DistillError(str(e)) from None
    res = write_report(args.paths, args.out, args.title)
    for warning in res.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(res.summary())  # the result: stdout
    return 0
