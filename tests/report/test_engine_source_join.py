"""An engine timed on the device joins its export by the ONNX bytes it was built from (``engine_source``), wherever
its .jsonl is put (QA H finding 3: it joined only when the .jsonl lay where the record's relative path resolved to
the export's engine); without one, the "not joined" note says what to do."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from distill.bench import edge_runner
from distill.records import BenchRecord
from distill.report.write import collect
from tests.report.test_engine_join import ACC, engine_record, write_export


def _line(record: BenchRecord, source: dict[str, str] | None, jsonl: Path, relative: str | None = None) -> Path:
    """``record`` as the edge runner writes it (a JSON line), with ``engine_source`` when given."""
    line = {**record.to_dict(), **({"engine_source": source} if source else {}),
            **({"model_relative": relative} if relative else {})}
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    with open(jsonl, "a") as f:
        f.write(json.dumps(line) + "\n")
    return jsonl


def _timed_in_home(record: BenchRecord, source: dict[str, str] | None, home: Path) -> Path:
    """The QA's workflow: ``cd ~ && edge_runner.py fmu/model.int8.engine --out bench.jsonl``, the .jsonl copied back
    into ``home`` (not the export folder)."""
    return _line(record, source, home / "bench.jsonl", f"fmu/{record.model_name}")


def test_an_engine_joins_the_export_holding_the_onnx_it_was_built_from_wherever_its_jsonl_lies(tmp_path: Path) -> None:
    ex = write_export(tmp_path / "export" / "fmu", "1")
    (ex / "model.int8-tensorrt.onnx").write_bytes(b"int8 qdq")  # the export's file, with its sha256 in export.json
    listed = json.loads((ex / "export.json").read_text())
    listed["models"][2]["sha256"] = hashlib.sha256(b"int8 qdq").hexdigest()
    (ex / "export.json").write_text(json.dumps(listed))
    source = {"onnx": "model.int8-tensorrt.onnx", "sha256": hashlib.sha256(b"int8 qdq").hexdigest()}
    data = collect([ex, _timed_in_home(engine_record("/home/nvidia/fmu/model.int8.engine"), source, tmp_path / "jet_home")])
    [p] = data.points
    assert (p.precision, p.accuracy, p.note) == ("int8/tensorrt", {d: a - 0.05 for d, a in ACC.items()},
                                                 "TensorRT engine of model.int8-tensorrt.onnx")
    assert data.unmatched == 0
    device = tmp_path / "device" / "fmu"  # the runner records it so: the export folder copied to the device
    device.mkdir(parents=True)
    for f in ("export.json", "model.int8-tensorrt.onnx"):
        (device / f).write_bytes((ex / f).read_bytes())
    assert edge_runner.engine_source(device / "model.int8.engine", 10) == source


def test_an_engine_built_from_other_bytes_is_not_joined_and_says_so(tmp_path: Path) -> None:
    ex = write_export(tmp_path / "export" / "fmu", "1")
    other = {"onnx": "model.int8-tensorrt.onnx", "sha256": "0f" * 32}  # a re-export's file, not this one's
    _line(engine_record(str(ex / "model.int8.engine")), other, ex / "bench.jsonl")  # even beside the export's engine
    data = collect([ex])
    [p] = data.points
    assert p.accuracy is None and p.note == "not joined: built from a model.int8-tensorrt.onnx that no export or qad folder given holds"


def test_an_unjoined_engine_s_note_says_where_to_time_it_or_put_its_jsonl(tmp_path: Path) -> None:
    ex = write_export(tmp_path / "export" / "fmu", "1")
    data = collect([ex, _timed_in_home(engine_record("/home/nvidia/fmu/model.int8.engine"), None, tmp_path / "jet_home")])
    [p] = data.points
    assert p.accuracy is None and "put the .jsonl in its export folder" in p.note


def _export_holding(folder: Path, tag: str, qdq: bytes, acc: dict[str, float]) -> Path:
    ex = write_export(folder, tag)
    (ex / "model.int8-tensorrt.onnx").write_bytes(qdq)
    listed = json.loads((ex / "export.json").read_text())
    listed["models"][2]["sha256"], listed["models"][2]["accuracy"] = hashlib.sha256(qdq).hexdigest(), acc
    (ex / "export.json").write_text(json.dumps(listed))
    return ex


def test_a_stale_engine_keeps_the_source_it_was_built_from_after_a_new_export_is_copied_over(tmp_path: Path) -> None:
    """Review 3 finding 2: built from v1's QDQ file, then v2's export copied over the device folder without a rebuild.
    The record names v1's bytes (the sidecar build_engine.sh wrote), so it joins v1's accuracy, never v2's."""
    v1 = _export_holding(tmp_path / "host_1" / "fmu", "1", b"qdq v1", {"clean": 0.9, "noisy": 0.6})
    v2 = _export_holding(tmp_path / "host_2" / "fmu", "2", b"qdq v2", {"clean": 0.4, "noisy": 0.2})
    dev = tmp_path / "device" / "fmu"
    dev.mkdir(parents=True)
    for f in ("export.json", "model.int8-tensorrt.onnx"):
        (dev / f).write_bytes((v1 / f).read_bytes())
    engine = dev / "model.int8.engine"
    engine.write_bytes(b"engine built from qdq v1")
    (dev / "model.int8.engine.source.json").write_text(json.dumps(  # as build_engine.sh's record_source writes it
        {"engine": engine.name, "engine_sha256": hashlib.sha256(engine.read_bytes()).hexdigest(),
         "onnx": "model.int8-tensorrt.onnx", "onnx_sha256": hashlib.sha256(b"qdq v1").hexdigest(), "trt_major": 10}))
    for f in ("export.json", "model.int8-tensorrt.onnx"):  # scp -r host_2/fmu jetson:~ (engines are not in an export)
        (dev / f).write_bytes((v2 / f).read_bytes())
    source = edge_runner.engine_source(engine, 10)
    assert source == {"onnx": "model.int8-tensorrt.onnx", "sha256": hashlib.sha256(b"qdq v1").hexdigest()}
    jsonl = _timed_in_home(engine_record("/home/nvidia/fmu/model.int8.engine"), source, tmp_path / "jet_home")
    [p] = collect([v1, v2, jsonl]).points
    assert p.accuracy == {"clean": 0.9, "noisy": 0.6}
    [p] = collect([v2, jsonl]).points
    assert p.accuracy is None


def _note_of(tmp_path: Path, engine: str, **keys: object) -> str:
    """The report's note on an engine record timed in ``~/fmu`` on the device, its .jsonl in ``jet_home``, next to an
    export listing build_engine.sh's engines; ``keys``: more keys on the line (``engine_source=None``: this runner
    wrote it as null)."""
    ex = write_export(tmp_path / "export" / "fmu", "1")
    jsonl = tmp_path / "jet_home" / "bench.jsonl"
    jsonl.parent.mkdir(parents=True)
    line = {**engine_record(f"/home/nvidia/fmu/{engine}").to_dict(), "model_relative": f"fmu/{engine}", **keys}
    line = {k: v for k, v in line.items() if k != "engine_source" or "engine_source" in keys}
    jsonl.write_text(json.dumps(line) + "\n")
    [p] = collect([ex, jsonl]).points
    assert p.accuracy is None
    return p.note


def test_the_not_joined_note_of_an_engine_gives_the_advice_that_fits_its_case(tmp_path: Path) -> None:
    """Review 3 finding 6: every engine without engine_source was told 'time it beside its export.json, or put the
    .jsonl in its export folder', wrong for a qad engine (a qad folder has qad.json), a renamed engine (it was timed
    beside export.json) and a record of an older runner (re-time it)."""
    qad = _note_of(tmp_path / "qad", "model.int8-qad.engine")
    assert "qad folder" in qad and "export" not in qad
    renamed = _note_of(tmp_path / "renamed", "student-int8.engine", engine_source=None)
    assert "no export or qad folder given lists an engine named student-int8.engine (renamed?" in renamed
    old = _note_of(tmp_path / "old", "model.int8.engine")
    assert "a record of an older edge_runner.py (no engine_source): re-time it" in old
    away = _note_of(tmp_path / "away", "model.int8.engine", engine_source=None)
    assert "timed away from its export.json, or a stale engine" in away
