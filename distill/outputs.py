"""Where a stage may write: one rule for every command that writes.

A stage's output is never another stage's folder or record, nor one of the command's own inputs; a refusal is one
line naming the path and what it is, given before anything is written. Each stage applies it where it writes:

- **Folders** (``distill export --out`` in either format, ``distill qad --out``, ``distill teacher bootstrap
  --out``): :func:`folder_kind` tells a stage's folder by the record it holds (a checkpoint's ``student.json``, a
  training run's ``config.yaml`` + ``checkpoints/`` (before its first checkpoint: ``data.json``) and its
  ``checkpoints/`` folder (``last.json``, or its name beside ``config.yaml``), a teacher cache's
  ``manifest.json``/``build.json``, a bootstrapped teacher's ``teacher.json``, a built-in data suite's
  ``suite.json``, a qad folder's ``qad.json``, an export's ``export.json``) and :func:`refuse_stage_folder` refuses
  every kind but the stage's own, so the same command rerun into its previous output still replaces it. (``distill
  train`` and ``distill cache build`` refuse any non-empty folder that is not their own kind already.) Its files
  would otherwise mix with the folder's own, replace some of them (``qad --out`` = ``--export``: the export's int8
  file), and ``distill bench`` of the folder would time the wrong files.
- **The report** (``distill report --out``, :func:`distill.report`; an existing folder, or a path ending in a
  separator, means ``report.html`` and ``report.md`` inside it: :func:`report_files`): :func:`check_report_out`
  refuses a record's name or suffix
  (``.json``, ``.jsonl``: the next report would read an HTML ``.jsonl`` as benchmarks) and an existing file, for the
  HTML and its ``.md``, unless it is a report this tool wrote (:data:`REPORT_MARK` at its end, or the fixed start of
  one written before the mark): so never one of its inputs.
- **Benchmarks** (``distill bench --out``): the rule lives in the standalone runner, which cannot import this
  package (:func:`distill.bench.edge_runner.check_bench_out`): a ``.jsonl`` file, and an existing one only when it
  holds bench records.
"""
from __future__ import annotations

import os
from pathlib import Path

from distill.errors import DistillError
from distill.records import (
    BENCH_RECORDS,
    CACHE_BUILD_PLAN,
    CACHE_MANIFEST,
    CHECKPOINT_POINTER,
    CHECKPOINTS_DIR,
    DATA_CLASS_MAP,
    EXPORT_REPORT,
    QAD_REPORT,
    REPORT_HTML,
    ROBUST_REPORT,
    RUN_CONFIG,
    RUN_DATA,
    RUN_FINISHED,
    RUN_METRICS,
    RUN_SUMMARY,
    STUDENT_SPEC,
    STUDENT_WEIGHTS,
    SUITE_INDEX,
    SUITE_INFO,
    TEACHER_CHECKPOINT,
    TEACHER_MANIFEST,
    TEXT_EMBEDDINGS,
    TIMM_CONFIG,
    TRAIN_STATE,
)

__all__ = ["REPORT_MARK", "check_report_out", "folder_kind", "refuse_stage_folder", "report_files"]

CHECKPOINT, RUN, CACHE, TEACHER, DATA, QAD, EXPORT = "checkpoint", "run", "cache", "teacher", "data", "qad", "export"
TIMM = "timm"  # `distill export --format timm`'s folder: no record tells it, so no folder of another stage is one
# what distill bench of a folder of each kind times, said when a stage's files would mix with them
_TIMES = {CHECKPOINT: "the checkpoint", RUN: "the checkpoint", QAD: "qad's int8 files", EXPORT: "the export's files"}
# every record file name a stage writes and another reads (report's output must not take one)
RECORD_FILES = frozenset({
    RUN_CONFIG, RUN_SUMMARY, RUN_FINISHED, RUN_METRICS, RUN_DATA, ROBUST_REPORT, CHECKPOINT_POINTER, TRAIN_STATE,
    STUDENT_SPEC, STUDENT_WEIGHTS, CACHE_MANIFEST, CACHE_BUILD_PLAN, TEXT_EMBEDDINGS, TEACHER_MANIFEST,
    TEACHER_CHECKPOINT, DATA_CLASS_MAP, SUITE_INFO, SUITE_INDEX, EXPORT_REPORT, QAD_REPORT, BENCH_RECORDS, TIMM_CONFIG})
REPORT_MARK = "<!-- written by distill report -->\n"  # the last line of its HTML and Markdown: a report to replace
_OLD_HTML = '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>'  # a report's start before the mark


def folder_kind(path: Path) -> tuple[str, str] | None:
    """``(kind, what it is, in words naming the record)`` of a stage's folder, or None (missing, or no stage's)."""
    def has(name: str) -> bool:
        return (path / name).is_file()

    if not path.is_dir():
        return None
    if has(STUDENT_SPEC):
        return CHECKPOINT, f"a checkpoint folder ({STUDENT_SPEC})"
    if has(RUN_CONFIG) and ((path / CHECKPOINTS_DIR).is_dir() or has(RUN_DATA) or has(RUN_SUMMARY)):  # or unsaved
        return RUN, f"a training run's folder ({RUN_CONFIG}, {CHECKPOINTS_DIR}/)"
    if has(CHECKPOINT_POINTER) or (path.name == CHECKPOINTS_DIR and (path.parent / RUN_CONFIG).is_file()):
        return RUN, f"a training run's {CHECKPOINTS_DIR} folder"
    for name, kind, what in ((CACHE_MANIFEST, CACHE, "a teacher cache"), (CACHE_BUILD_PLAN, CACHE, "a teacher cache"),
                             (TEACHER_MANIFEST, TEACHER, "a teacher folder"), (SUITE_INFO, DATA, "a data root"),
                             (QAD_REPORT, QAD, "a distill qad folder"), (EXPORT_REPORT, EXPORT, "an export folder")):
        if has(name):
            return kind, f"{what} ({name})"
    return None


def refuse_stage_folder(path: Path, writer: str, suggest: str, own: str) -> None:
    """``path`` as the ``--out`` folder of ``writer`` (``the export``, ``distill qad``), whose own folders are of kind
    ``own`` (:data:`EXPORT`, :data:`QAD`: rerunning into its own is fine), is one line naming it and what it is when it
    is another stage's folder (:func:`folder_kind`), with an ``--out`` to give instead (under ``suggest``)."""
    found = folder_kind(path)
    if found is None or found[0] == own:
        return
    kind, what = found
    resolved = path.resolve()
    name = resolved.parents[1].name if kind == CHECKPOINT and resolved.parent.name == CHECKPOINTS_DIR else resolved.name
    times = f" (and distill bench of it would time them, not {_TIMES[kind]})" if kind in _TIMES else ""
    raise DistillError(f"{path}: is {what}; {writer}'s files would mix with its own{times}: give --out a folder of "
                       f"its own, e.g. {suggest}/{name}")


def report_files(out: str | Path) -> tuple[Path, Path]:
    """The HTML and Markdown files ``distill report --out OUT`` writes: in a folder ``OUT/report.html`` and
    ``OUT/report.md`` (an existing one, or one that ``OUT`` ending in a separator asks for: ``site/``, made when
    written); else ``OUT`` (``OUT.html`` when it has no suffix) and the same name with ``.md`` beside it."""
    raw = os.fspath(out)
    out = Path(out)
    if out.is_dir() or raw.endswith(("/", os.sep)):  # Path drops the trailing separator: read it from the text
        html = out / REPORT_HTML
    else:
        html = out.with_name(out.name + ".html") if not out.suffix else out
    return html, html.with_suffix(".md")


def check_report_out(out: str | Path) -> None:
    """Refuse, in one line, an ``out`` of ``distill report`` whose files (:func:`report_files`: its HTML, and the
    ``.md`` beside it) take a record's name or suffix, or are an existing file (or folder) other than a report this
    tool wrote."""
    html, md = report_files(out)
    if md == html:
        raise DistillError(f"--out {html}: the HTML file must not end in .md (the Markdown summary goes to {md})")
    for path in (html, md):
        if path.suffix in (".json", ".jsonl") or path.name in RECORD_FILES:
            what = f"name ({path.name})" if path.name in RECORD_FILES else f"suffix ({path.suffix})"
            raise DistillError(f"{path}: a record's {what}; the report's output is an .html file (and its .md): "
                               "give --out e.g. report.html")
        if path.is_dir():
            raise DistillError(f"{path}: is a folder; the report writes {html.name} and {md.name}: give another --out")
        if path.exists() and not path.is_dir() and not _is_report(path):
            raise DistillError(f"{path}: exists and is not a report distill report wrote; the report would replace "
                               "it: give another --out (or move the file away)")


def _is_report(path: Path) -> bool:
    """A file this tool's report wrote: :data:`REPORT_MARK` at its end, or (written before the mark) the fixed start
    of its HTML or of its Markdown (``# TITLE``, a blank line, ``Generated ... from N run(s), ...``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16).decode("utf-8", "replace")
            f.seek(max(0, f.seek(0, 2) - len(REPORT_MARK) - 2))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return False
    if REPORT_MARK.strip() in tail:
        return True
    if path.suffix == ".md":
        lines = head.split("\n", 3)
        return len(lines) > 2 and lines[0].startswith("# ") and lines[2].startswith("Generated ") \
            and " run(s), " in lines[2]
    return head.startswith(_OLD_HTML) and '<body data-report-ready="0">' in head
