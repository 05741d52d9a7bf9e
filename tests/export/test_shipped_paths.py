"""The ONNX files a user ships to a device carry no path of the machine that exported them (``distill.provenance``
names the run, the checkpoint relative to it and its sha256; the dynamo exporter's stack traces are dropped), while
export.json and qad.json, which stay on that machine, keep the absolute paths the report reads."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

import distill
from distill.export.onnx import read_metadata
from distill.export.qad import qad
from distill.export.qad_config import QADConfig, QADRecord
from distill.records import ExportReport

#: the folders of this machine an ONNX file could name: pytest's temporary tree (run, checkpoint, data, export),
#: the distill source and the Python environment (the dynamo exporter's stack traces)
_SOURCES = {f(Path(m.__file__)).parents[1] for m in (distill, torch) for f in (Path.absolute, Path.resolve)}
STACK_TRACE = "pkg.torch.onnx.stack_trace"  # distill.export.onnx.STACK_TRACE, spelled out: the dynamo exporter's key


def _machine_paths(path: Path, base: Path) -> list[str]:
    """Each metadata value (the model's and its nodes') of the ONNX file at ``path`` that names ``base`` or a source
    folder, and whether the file's bytes name any of them at all."""
    model = onnx.load(str(path), load_external_data=False)
    needles = [str(base), str(base.resolve()), *map(str, _SOURCES)]
    props = [*model.metadata_props, *(p for n in model.graph.node for p in n.metadata_props)]
    found = [f"{path.name}: {p.key} = {p.value[:120]}" for p in props if any(s in p.value for s in needles)]
    raw = path.read_bytes()
    found += [f"{path.name}: the bytes name {s}" for s in needles if s.encode() in raw]
    return found


def test_exported_files_name_no_path_of_the_machine(export_dir: Path, run_ckpt: Path,
                                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    files = sorted(export_dir.glob("*.onnx"))
    assert {f.name for f in files} == {"model.fp32.onnx", "model.fp16.onnx", "model.int8-ort-cpu.onnx",
                                       "model.int8-tensorrt.onnx"}
    assert [line for f in files for line in _machine_paths(f, tmp_path_factory.getbasetemp())] == []
    report = ExportReport.read(export_dir)
    for f in files:  # what identifies the source instead: names and the weights' sha256
        prov = read_metadata(f)["provenance"]
        assert prov == {"teacher": {"arch": "none (test)"}, "strategy": "erm", "run": run_ckpt.parents[1].name,
                        "checkpoint": "checkpoints/best",
                        "checkpoint_sha256": report.provenance["checkpoint_sha256"]}
    # export.json stays on the machine: the absolute paths the report joins by are there
    assert report.checkpoint == str(run_ckpt.resolve()) == report.provenance["checkpoint"]
    assert report.provenance["run"] == str(run_ckpt.parents[1].resolve())


def test_qad_files_name_no_path_of_the_machine(run_ckpt: Path, tmp_path: Path,
                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    out = tmp_path / "q"
    record = qad(QADConfig(checkpoint=str(run_ckpt), out_dir=str(out), epochs=1, calib_domains="clean",
                           calib_count=32, eval_count=4, holdout_count=8), log=lambda s: None)
    files = sorted(out.glob("*.onnx"))
    assert out / record.qad_file in files  # and the PTQ file, where the no-harm rule ships it
    assert [line for f in files for line in _machine_paths(f, tmp_path_factory.getbasetemp())] == []
    for f in files:
        prov = read_metadata(f)["provenance"]
        assert (prov["run"], prov["checkpoint"], prov["checkpoint_sha256"]) == (
            run_ckpt.parents[1].name, "checkpoints/best", record.checkpoint_sha256)
    assert QADRecord.read(out).checkpoint == str(run_ckpt.resolve())  # qad.json keeps it


def test_stack_traces_are_dropped_name_scopes_kept(export_dir: Path) -> None:
    """The dynamo exporter's node metadata: its stack traces (source paths) are gone, its name scopes (which the
    int8 fallback reads, distill/export/kept_float.py) stay."""
    keys = {p.key for n in onnx.load(str(export_dir / "model.fp32.onnx")).graph.node for p in n.metadata_props}
    assert STACK_TRACE not in keys and "pkg.torch.onnx.name_scopes" in keys


@pytest.mark.parametrize("prov,shipped", [
    # a checkpoint in its run folder
    ({"run": "/home/alice/runs/kd", "checkpoint": "/home/alice/runs/kd/checkpoints/best", "checkpoint_sha256": "ab",
      "cache": ["/home/alice/cache"], "teacher": {"arch": "ViT-B-32", "pretrained": "/home/alice/w/open_clip.bin"}},
     {"run": "kd", "checkpoint": "checkpoints/best", "checkpoint_sha256": "ab",
      "teacher": {"arch": "ViT-B-32", "pretrained": "open_clip.bin"}}),
    # moved out of its run (student.json's run, as typed where it trained), on another machine's drive
    ({"run": "runs/kd/", "checkpoint": "/home/alice/best", "strategy": "kd"},
     {"run": "kd", "checkpoint": "best", "strategy": "kd"}),
    ({"run": "C:\\Users\\alice\\runs\\kd", "checkpoint": "/home/alice/runs/kd/checkpoints/best"},
     {"run": "kd", "checkpoint": "best"}),
    ({"teacher": {"arch": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"}},
     {"teacher": {"arch": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"}}),
])
def test_shipped_provenance_keeps_names(prov: dict, shipped: dict) -> None:
    from distill.export.training_run import shipped_provenance  # in here: the file's other tests run on older code

    assert shipped_provenance(prov) == shipped


def test_a_file_written_before_still_reads(export_dir: Path, tmp_path: Path) -> None:
    """A file an earlier distill wrote (absolute paths in its provenance, the stack traces in its nodes) reads as
    before: read_metadata and the edge runner's record (distill bench) take its provenance as it is."""
    import json

    from distill.bench.run import bench_model
    from distill.export.onnx import set_metadata

    old = {"teacher": {"arch": "none (test)"}, "strategy": "erm", "run": "/home/alice/runs/erm",
           "checkpoint": "/home/alice/runs/erm/checkpoints/best", "checkpoint_sha256": "ab" * 32}
    model = onnx.load(str(export_dir / "model.int8-ort-cpu.onnx"))
    model.graph.node[0].metadata_props.add(key=STACK_TRACE, value='File "/home/alice/distill/export/onnx.py", line 77')
    path = tmp_path / "model.int8-ort-cpu.onnx"
    onnx.save(set_metadata(model, {"distill.provenance": json.dumps(old)}), str(path))
    assert read_metadata(path)["provenance"] == old
    (record,) = bench_model(path, "ort-cpu", (1,), threads=1, warmup=1, iters=2)
    meta = record["model_meta"]
    assert meta["provenance"] == old and (meta["precision"], meta["int8_flavour"]) == ("int8", "ort-cpu")


def _spec_paths(checkpoint: Path, base: Path, keep: tuple[str, ...] = ()) -> list[str]:
    """Each value of ``checkpoint/student.json`` (provenance keys in ``keep`` left out) that names ``base``."""
    import json

    spec = json.loads((checkpoint / "student.json").read_text())
    prov = {k: v for k, v in spec.pop("provenance").items() if k not in keep}
    needles = [str(base), str(base.resolve())]
    return [f"{key}: {json.dumps(value)[:160]}" for key, value in [*spec.items(), *prov.items()]
            if any(s in json.dumps(value) for s in needles)]


def test_a_qad_checkpoint_names_no_path_of_the_machine_and_an_export_of_it_still_names_its_run(
        run_ckpt: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """``distill qad``'s checkpoint/ (a folder users ship) carried its run and the checkpoint it was tuned from as
    absolute paths (``provenance.run``, ``provenance.qad.from``). It names them as the ONNX files do, the run also
    relative to the checkpoint, which an export of that checkpoint reads back: its export.json names the run, and the
    report joins the two, as before; moved whole, it names the run where it is now."""
    import json
    import shutil

    from distill.config import TrainConfig
    from distill.export import ExportConfig, export_checkpoint
    from distill.report.write import collect

    run = tmp_path / "tree" / "runs" / "kd"
    shutil.copytree(run_ckpt.parents[1], run)
    spec_file = run / "checkpoints" / "best" / "student.json"
    spec = json.loads(spec_file.read_text())
    spec["provenance"]["run"] = str(run)  # as distill train writes it (distill/train/build.py): absolute
    spec_file.write_text(json.dumps(spec))
    config = json.loads((run / "config.yaml").read_text())  # the whole config, as a run writes it (the report reads it)
    (run / "config.yaml").write_text(json.dumps(TrainConfig.model_validate({
        "data": config["data"], "strategy": {"name": "erm"}, "run": {"out": str(run), "seed": 0}}).model_dump(mode="json")))
    out = tmp_path / "tree" / "export" / "kd" / "qad"
    record = qad(QADConfig(checkpoint=str(run / "checkpoints" / "best"), out_dir=str(out), epochs=1,
                           calib_domains="clean", calib_count=32, eval_count=4, holdout_count=8), log=lambda s: None)
    tuned = out / record.tuned_checkpoint
    assert _spec_paths(tuned, tmp_path_factory.getbasetemp()) == []
    prov = json.loads((tuned / "student.json").read_text())["provenance"]
    assert (prov["run"], prov["relative"]) == ("kd", {"run": "../../../../runs/kd"})
    assert {k: prov["qad"][k] for k in ("from", "from_sha256")} == {"from": "checkpoints/best",
                                                                    "from_sha256": record.checkpoint_sha256}

    shutil.move(tmp_path / "tree", tmp_path / "moved")  # a tree moved whole: the relative path still holds
    moved = tmp_path / "moved"
    exp = moved / "export" / "kd" / "re"
    report = export_checkpoint(moved / "export" / "kd" / "qad" / "checkpoint", exp,
                               ExportConfig(precisions=("fp32",), exporter="torchscript"), log=lambda s: None)
    assert report.provenance["run"] == str((moved / "runs" / "kd").resolve())
    data = collect([moved / "runs", exp])
    (entry,) = data.exports
    joined = data.run_of(entry)
    assert joined is not None and Path(joined.dir).resolve() == (moved / "runs" / "kd").resolve()


def test_a_retargeted_checkpoint_names_no_path_of_the_machine_but_its_teacher_weights(
        tiny_root: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """``distill export --classes``' checkpoint/: the weights a re-targeting used are named by their name; its
    ``teacher_pretrained`` stays the path, which re-targeting it again loads (no --teacher-pretrained)."""
    from distill.export import ExportConfig, export_checkpoint
    from distill.student.model import load_student

    from .synthetic import text_student

    teacher_file, student = text_student(tmp_path)
    (tmp_path / "classes.txt").write_text("checker\nvstripes\n")
    out = tmp_path / "exp"
    export_checkpoint(student, out, ExportConfig(classes=str(tmp_path / "classes.txt"), data_root=str(tiny_root),
                                                 precisions=("fp32",), exporter="torchscript", eval_count=2),
                      log=lambda s: None)
    assert _spec_paths(out / "checkpoint", tmp_path_factory.getbasetemp(), keep=("teacher_pretrained",)) == []
    prov = load_student(out / "checkpoint").spec.provenance
    assert prov["teacher_pretrained"] == str(teacher_file) and prov["templates"] == ["a photo of a {}."]
    assert prov["retargeted"]["teacher"]["pretrained"] == teacher_file.name
    assert prov["retargeted"]["from_classes"] == ["checker", "hstripes", "square"]
    (tmp_path / "again.txt").write_text("square\n")  # re-targeted again from it: the teacher found as recorded
    export_checkpoint(out / "checkpoint", tmp_path / "again", ExportConfig(
        classes=str(tmp_path / "again.txt"), data_root=str(tiny_root), precisions=("fp32",), exporter="torchscript",
        eval_count=2), log=lambda s: None)
    assert load_student(tmp_path / "again" / "checkpoint").spec.class_names == ["square"]


@pytest.mark.parametrize("own,run,written", [
    # the run's absolute path: its name, and the path from the checkpoint folder
    ({"run": "/home/alice/runs/kd", "teacher_pretrained": "/home/alice/w/open_clip.bin"}, "/home/alice/runs/kd",
     {"run": "kd", "relative": {"run": "../../runs/kd"}, "teacher_pretrained": "/home/alice/w/open_clip.bin"}),
    # an older run's, as typed where it trained (no path of the machine): kept
    ({"run": "runs/kd"}, "runs/kd", {"run": "runs/kd"}),
    # another machine's: its name only
    ({"run": "C:\\Users\\alice\\runs\\kd"}, "C:\\Users\\alice\\runs\\kd", {"run": "kd"}),
    # a copy of a copy: the earlier relative path goes, the new one is written
    ({"run": "kd", "relative": {"run": "../../../x/kd"}}, "/home/alice/runs/kd",
     {"run": "kd", "relative": {"run": "../../runs/kd"}}),
    # no run known
    ({"strategy": "erm"}, None, {"strategy": "erm"}),
])
def test_checkpoint_provenance_names_the_run(own: dict, run: str | None, written: dict) -> None:
    from distill.export.training_run import checkpoint_provenance  # in here: the file's other tests run on older code

    prov = {"run": run} if run is not None else {}
    assert checkpoint_provenance(own, prov, Path("/home/alice/export/kd")) == written
