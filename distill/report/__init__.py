"""The report: runs, exports and benchmark records read through their records, joined, and rendered.

One self-contained HTML page (+ the same name in .md). :mod:`~distill.report.write` discovers and
joins; :mod:`~distill.report.runs` reads and groups runs; :mod:`~distill.report.data` holds what is
shown and the Pareto rule; :mod:`~distill.report.render_html` (with :mod:`~distill.report.charts`
and :mod:`~distill.report.export_sections`) and :mod:`~distill.report.render_md` render it.
:mod:`~distill.report.stats` (seed statistics) and :mod:`~distill.report.withheld` (accuracy on
withheld classes) serve the demo's and the benchmarks' tables.

>>> from distill.report import write_report
>>> write_report(["runs/kd", "exports/kd", "bench.jsonl"], "report.html")
"""
from __future__ import annotations

from distill.report.write import collect, discover, write_report

__all__ = ["collect", "discover", "write_report"]
