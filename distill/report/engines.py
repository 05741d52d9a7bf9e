"""Which export a TensorRT engine's bench record belongs to, through export.json's ``tensorrt.engines``.

An engine carries no distill metadata (the edge runner records ``model_meta: {}``) and its sha256
is not among export.json's ``models`` (those are the ONNX files), so the plain join of
:mod:`distill.report.write` cannot place it. export.json lists each engine with the ONNX file it is
built from and its precision; the engine's accuracy is taken to be that ONNX file's.

The rule, safest first:

- an engine built by ``distill export`` itself has its sha256 in that list: a record carrying it is
  that engine, wherever it was timed (of copies of one export listing it, the copy nearest the bench file:
  :func:`distill.report.locate.nearest`; exports of those bytes with other results: none, said as ambiguous, as for
  an ONNX record); a record of a file at that engine's path with another sha256
  timed a rebuilt engine and is not joined;
- an engine built on the device by build_engine.sh has no sha256 there (nothing on the host ever saw
  it): a record joins by where it was timed: the engine's file in the export folder (the record's
  path is that file, found wherever the report runs: :mod:`distill.report.locate`), or, for a record
  timed on the device, its file name among the export's engines when the bench .jsonl lies in that
  export folder (the results copied back beside the export) and the record's ``model_relative`` (the path
  the edge runner recorded, relative to the .jsonl) is absent or that bare name: one that names another folder
  (``qad/model.int8.engine``, timed from the export folder) timed another file of that name, not the export's.
  Never by file name alone: every export names its engines alike;
- a record of an engine timed by the edge runner in a copy of its export folder carries ``engine_source``: the ONNX
  file (name, sha256) it was built from, as build_engine.sh recorded it at build time (``ENGINE.source.json``; else
  the file the export.json beside the engine names, hashed on the device, unless newer than the engine). It joins the
  export (of copies, the nearest; of exports with other results, none: ambiguous) that holds those bytes and lists
  an engine of its name built from them, wherever its .jsonl lies; none such: not joined (built from another export's
  bytes).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Collection, NamedTuple

from distill.records import QAD_ENGINE, BenchRecord, ExportedModel, ExportReport
from distill.report.locate import nearest_held

# build_engine.sh's names: model.fp32.engine, model.fp16.engine, model.int8.engine (from the tensorrt-flavour QDQ file),
# a QAD folder's model.int8-qad.engine; a .plan too (TensorRT's other usual suffix)
ENGINE_NAME = re.compile(r"\.(fp32|fp16|int8)(?:-[\w.-]+)?\.(?:engine|plan)$")


def recorded_precision(record: BenchRecord) -> str:
    """The precision a record says it timed, before any join: its model metadata's (``int8/FLAVOUR`` for int8), else a
    ``torch`` record's fp32 (the torch runner's default); for a TensorRT engine (which carries none), its
    build_engine.sh name's (``model.fp16.engine``: fp16; an int8 engine is built from the tensorrt-flavour file); else
    ``?``: never a guess of fp32 (QA H finding 4)."""
    meta = record.model_meta
    if meta.get("int8_flavour"):
        return f"int8/{meta['int8_flavour']}"
    if meta.get("precision"):
        return str(meta["precision"])
    if record.runtime == "torch":  # a checkpoint timed by distill bench: fp32 unless --precision said otherwise
        return "fp32"
    named = ENGINE_NAME.search(record.model_name) if record.runtime == "tensorrt" else None
    if named:
        return "int8/tensorrt" if named.group(1) == "int8" else named.group(1)
    return "?"


class EngineHit(NamedTuple):
    """An engine of an export, and the exported ONNX model it was built from."""

    export: ExportReport
    dir: str
    engine: dict[str, Any]  # export.json's tensorrt.engines entry
    source: ExportedModel

    @property
    def precision(self) -> str:
        flavour = self.source.int8_flavour
        return f"int8/{flavour}" if self.engine.get("precision") == "int8" and flavour else str(self.engine["precision"])

    def note(self, record: BenchRecord) -> str:
        """How the report names the engine ``record`` timed: the ONNX file its accuracy is taken from and, where the
        record says it was built from another (``engine_source``: TensorRT 10 builds fp16 from the fp32 file with
        ``--fp16``), that one too (review 3 finding 5)."""
        built = record.engine_source.onnx if record.engine_source is not None else self.source.file
        if built == self.source.file:
            return f"TensorRT engine of {built}"
        return f"TensorRT {self.engine.get('precision')} engine built from {built}; accuracy of {self.source.file}"


class EngineIndex(NamedTuple):
    by_sha: dict[str, dict[str, EngineHit]]  # sha256 -> {export folder: the engine} (a copied export: several)
    by_path: dict[str, EngineHit]  # realpath of the engine in its export folder
    # (sha256 of an ONNX file an engine is built from, the engine's name) -> {export folder: the engine}
    by_source: dict[tuple[str, str], dict[str, EngineHit]]


def engine_index(exports: list[tuple[str, ExportReport]]) -> EngineIndex:
    """Every engine export.json lists (folder, report pairs), by sha256 when it has one and by path."""
    by_sha: dict[str, dict[str, EngineHit]] = {}
    by_path: dict[str, EngineHit] = {}
    by_source: dict[tuple[str, str], dict[str, EngineHit]] = {}
    for folder, report in exports:
        models = {m.file: m for m in report.models}
        for e in (report.tensorrt or {}).get("engines") or []:
            if not isinstance(e, dict) or not e.get("engine"):
                continue
            # the file TensorRT 11 builds from carries the precision (model.fp16.onnx for fp16): its accuracy first
            source = models.get(e.get("onnx_strongly_typed", "")) or models.get(e.get("onnx", ""))
            if source is None:
                continue
            hit = EngineHit(report, folder, e, source)
            if e.get("sha256"):
                by_sha.setdefault(e["sha256"], {})[folder] = hit
            by_path[os.path.realpath(Path(folder) / e["engine"])] = hit
            for name in {e.get("onnx"), e.get("onnx_strongly_typed")}:  # either, by the device's TensorRT major
                if (built_from := models.get(str(name))) is not None and built_from.sha256:
                    by_source.setdefault((built_from.sha256, str(e["engine"])), {})[folder] = hit
    return EngineIndex(by_sha, by_path, by_source)


def engine_of(record: BenchRecord, bench_file: str, index: EngineIndex, at: EngineHit | None = None,
              by_path: bool = True, differ: list[str] | None = None) -> EngineHit | None:
    """The listed engine a record timed, by the rule in this module's docstring; None if none. ``at``: the engine
    at the record's path, found as :mod:`distill.report.locate` says (wherever the report runs). ``by_path``
    False: two places fit the record's path (ambiguous), so only its sha256 can join it. A join by sha256 finds
    copies of an export; exports of the same bytes with other results (one checkpoint exported twice, evaluated on
    other data) are not copies: None, and their folders added to ``differ`` for the caller's "ambiguous" warning,
    as an ONNX record of those bytes gets (review 3 finding 1)."""
    for held in (index.by_sha.get(record.model_sha256 or ""),
                 index.by_source.get((record.engine_source.sha256, record.model_name)) if record.engine_source else None):
        if held:  # its own sha256, else the ONNX bytes it was built from (hashed on the device): wherever it lies
            place, other = nearest_held(held, Path(bench_file).parent, lambda h: (h.source.accuracy, h.export.data))
            (differ if differ is not None else []).extend(other)
            return held[place] if place is not None else None
    if record.engine_source is not None:  # built from bytes no export given holds
        return None
    sha = record.model_sha256
    if not by_path:
        return None
    beside = index.by_path.get(os.path.realpath(Path(bench_file).parent / Path(record.model).name)) \
        if timed_beside(record, bench_file) else None
    for hit in (at, beside):
        if hit is None:
            continue
        listed = hit.engine.get("sha256")
        if listed and sha and listed != sha:  # the engine at that path was rebuilt since: not the one timed
            return None
        return hit
    return None


def unjoined_note(record: BenchRecord, listed: Collection[str] = ()) -> str:
    """The note of a record joined to nothing; a TensorRT engine's says how it would be, by case (README, "Timing a
    TensorRT engine"; review 3 finding 6). ``listed``: the file names of the engines the report's exports and qad
    folders list.

    - ``engine_source`` set: no export or qad folder given holds the bytes it was built from;
    - a qad engine (``model.int8-qad.engine``) without it: its qad folder joins it (the .jsonl put there, or timed
      by this runner beside qad.json), not an export.json;
    - a name no export or qad folder lists (renamed: it was timed beside export.json, which lists it by its
      build_engine.sh name): engines join only under that name;
    - ``engine_source`` written as null: this runner found no source (timed away from export.json, or a stale
      engine, :func:`distill.bench.edge_runner.engine_source`); absent: a record of an older runner, to re-time.
    """
    if record.runtime != "tensorrt":
        return "not joined to an export or run"
    if record.engine_source is not None:
        return f"not joined: built from a {record.engine_source.onnx} that no export or qad folder given holds"
    name = record.model_name
    if name == QAD_ENGINE:
        return ("not joined: a qad engine: give the report its qad folder and put the .jsonl in it, or time it with "
                "this edge_runner.py beside its qad.json")
    if name not in listed:
        return (f"not joined: no export or qad folder given lists an engine named {name} (renamed? engines join "
                "under build_engine.sh's names, model.fp32/fp16/int8.engine)")
    if "engine_source" in record.model_fields_set:  # this runner looked, and found no (fresh) source
        return ("not joined: timed away from its export.json, or a stale engine (rebuild: ./build_engine.sh): time "
                "it beside its export.json, or put the .jsonl in its export folder")
    return ("not joined: a record of an older edge_runner.py (no engine_source): re-time it with this edge_runner.py "
            "beside its export.json, or put the .jsonl in its export folder")


def timed_beside(record: BenchRecord, bench_file: str) -> bool:
    """Whether the file a record timed may be taken by its name in the bench .jsonl's folder: its ``model_relative``
    (relative to the .jsonl, as the edge runner laid it out) is absent (an older record) or names that same place
    (``model.int8.engine``; ``../exp/model.int8.engine`` for a .jsonl in ``exp``). A record of
    ``qad/model.int8.engine`` benched into the export folder's .jsonl timed QAD's engine, not the export's
    ``model.int8.engine`` (review 3 H1)."""
    rel, folder = record.model_relative, Path(bench_file).parent
    return not rel or os.path.realpath(folder / rel) == os.path.realpath(folder / Path(record.model).name)
