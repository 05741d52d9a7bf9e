"""The files of ``distill qad`` folders a bench record can have timed: its int8 files and its TensorRT engine.

A qad folder holds QAD's int8 file (accuracy ``accuracy.qad``) and, when the no-harm rule picked it, the PTQ arm's
copy (plain PTQ, or the export's int8 file with ``--export``; accuracy ``accuracy.ptq``). A tensorrt-flavour folder
also has ``build_engine.sh``, which builds ``model.int8-qad.engine`` from the file the rule picked on the device;
qad.json records that engine (``config["tensorrt"]``), and its accuracy is taken to be that file's, as an export's
engine takes its ONNX file's (:mod:`distill.report.engines`).

A record joins a qad file by its path (:mod:`distill.report.locate`, wherever the report runs). An engine timed on
the device also joins by file name when the bench .jsonl lies in the qad folder (the results copied back beside the
engine's script), as an export's engine does; the name differs from the export's ``model.int8.engine``, so a record
of the one never takes the other's accuracy. A folder written before qad.json recorded its engine (no
``config["tensorrt"]``) has a ``build_engine.sh`` that built ``model.int8.engine`` from the file the rule picked:
that engine is taken as this folder's. Neither joins by name a record whose ``model_relative`` names another folder
(:func:`distill.report.engines.timed_beside`). An engine timed by the edge runner in a copy of the qad folder carries
``engine_source`` (the ONNX file it was built from: build_engine.sh's ``.source.json``, else qad.json's): it joins the qad folder (of
copies, the nearest) holding those bytes and listing an engine of its name, wherever its .jsonl lies, as an export's
engine does; with ``engine_source``, a record is never joined to a qad engine built from other bytes (the folder's
file rewritten since), even by its path (:func:`other_bytes`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from distill.records import BenchRecord
from distill.report.data import ReportData
from distill.report.engines import timed_beside
from distill.report.locate import nearest
from distill.report.runs import finite

# a tensorrt-flavour qad folder written before qad.json recorded its engine (config["tensorrt"]): its build_engine.sh
# built this engine, by the export's own name, from the int8 file the rule picked (qad.json's ship file)
OLD_SCRIPT, OLD_ENGINE = "build_engine.sh", "model.int8.engine"


class QADFile(NamedTuple):
    """What the report says of a timed qad file."""

    student: str
    precision: str  # int8/FLAVOUR (QAD) or (PTQ): whose int8 file it is, or the engine is built from
    accuracy: dict[str, float] | None  # test accuracy per domain (fractions)
    images: dict[str, int] | None  # test images per domain
    note: str = ""  # an engine: the file it is built from
    engine: bool = False
    built_from: str = ""  # an engine: the path of the ONNX file it is built from


def qad_files(data: ReportData) -> dict[str, QADFile]:
    """realpath of each int8 file and each recorded TensorRT engine of the report's ``distill qad`` folders -> what
    it is (module docstring)."""
    out: dict[str, QADFile] = {}
    for entry in data.qad:
        r, acc = entry.record, entry.record.accuracy
        arms = {name: (how, accuracy) for name, how, accuracy in (
            (r.qad_file, "QAD", acc.qad if acc else None), (r.ptq_file, "PTQ", acc.ptq if acc else None)) if name}
        count = dict(acc.count) if acc else None

        def file(name: str, how: str, accuracy: dict[str, float] | None, **engine: Any) -> QADFile:
            return QADFile(data.qad_label(r), f"int8/{r.flavour} ({how})", finite(accuracy) or None, count, **engine)

        for name, (how, accuracy) in arms.items():
            out[os.path.realpath(Path(entry.dir) / name)] = file(name, how, accuracy)
        for e in r.tensorrt.engines if r.tensorrt else []:
            if e.onnx in arms:  # built from a file of this folder: its accuracy
                out.setdefault(os.path.realpath(Path(entry.dir) / e.engine), file(
                    e.onnx, *arms[e.onnx], note=f"TensorRT engine of {e.onnx}", engine=True,
                    built_from=os.path.join(entry.dir, e.onnx)))
        if r.tensorrt is None and r.flavour == "tensorrt" and r.ship_file in arms and (
                Path(entry.dir) / OLD_SCRIPT).is_file():  # written before qad.json named its engine
            out.setdefault(os.path.realpath(Path(entry.dir) / OLD_ENGINE), file(
                r.ship_file, *arms[r.ship_file], note=f"TensorRT engine of {r.ship_file}", engine=True,
                built_from=os.path.join(entry.dir, r.ship_file)))
    return out


def engine_beside(record: BenchRecord, bench_file: str, files: Mapping[str, Any]) -> list[str]:
    """``[path]`` of the qad engine of the record's file name in the bench .jsonl's folder (an engine timed on the
    device, its results copied back into the qad folder); [] for none. ``files``: real path -> ``_File`` of
    :mod:`distill.report.write`, whose ``what`` is a :class:`QADFile` for a qad file."""
    if record.runtime != "tensorrt" or not timed_beside(record, bench_file):  # its recorded path names another folder's file
        return []
    path = os.path.realpath(Path(bench_file).parent / Path(record.model).name)
    what = getattr(files.get(path), "what", None)
    return [path] if isinstance(what, QADFile) and what.engine else []


def engine_by_source(record: BenchRecord, bench_file: str, data: ReportData, files: Mapping[str, Any]) -> list[str]:
    """``[path]`` of the qad engine of the record's name built from the ONNX bytes its ``engine_source`` names (of
    qad folders holding them, the one nearest the bench file); [] for none (module docstring)."""
    source = record.engine_source
    if record.runtime != "tensorrt" or source is None:
        return []
    held = {os.path.dirname(path): path for path, f in files.items() if Path(path).name == record.model_name
            and isinstance(f.what, QADFile) and f.what.engine and data.file_sha(f.what.built_from) == source.sha256}
    return [held[nearest(held, Path(bench_file).parent)[0]]] if held else []


def other_bytes(record: BenchRecord, found: list[str], data: ReportData, files: Mapping[str, Any]) -> list[str]:
    """``found`` (the places a record's file may be) less the qad engines built from other ONNX bytes than the
    record's ``engine_source`` (the qad folder's file was rewritten since: a rerun of ``distill qad``); a record
    without one keeps them all, as before."""
    source = record.engine_source
    if source is None:
        return found
    return [path for path in found if not (isinstance(what := getattr(files.get(path), "what", None), QADFile)
                                           and what.engine and data.file_sha(what.built_from) != source.sha256)]


def join_candidates(record: BenchRecord, bench_file: str, by_path: list[str], data: ReportData,
                    files: Mapping[str, Any]) -> list[str]:
    """The places a record's file may be: its by-path hits, else the qad engine beside the bench file, each less the
    qad engines built from other bytes (:func:`other_bytes`), else the qad engine built from its ``engine_source``
    (:func:`engine_by_source`); a by-path hit dropped for its bytes (a rerun of ``distill qad`` since) is so looked up
    by source, e.g. in the copy of the qad folder brought back from the device (review 4 finding 5)."""
    return (other_bytes(record, by_path, data, files) or other_bytes(record, engine_beside(record, bench_file, files),
                                                                       data, files)
            or engine_by_source(record, bench_file, data, files))
