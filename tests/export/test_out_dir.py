"""Exporting into a folder that holds an export (distill/export/out_dir.py): the old export.json and the files it
listed go before the new export writes (after its inputs are checked), nothing else does; bench checks the files an
export.json lists against their recorded sha256."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distill.bench.run import bench_model
from distill.cli import main
from distill.errors import DistillError
from distill.export import ExportConfig, export_checkpoint
from distill.export.pipeline import Exporter
from distill.records import ExportReport

USER_FILE = "notes.txt"  # something the user keeps in the export folder: never removed


def _used_folder(export_dir: Path, tmp_path: Path) -> Path:
    """A copy of the session's fp32 + fp16 + int8 (both flavours) export, with a file of the user's beside it."""
    folder = tmp_path / "exp"
    shutil.copytree(export_dir, folder)
    (folder / USER_FILE).write_text("mine")
    return folder


def test_a_re_export_with_fewer_precisions_leaves_none_of_the_old_files(export_dir: Path, run_ckpt: Path,
                                                                        tiny_root: Path, tmp_path: Path) -> None:
    folder = _used_folder(export_dir, tmp_path)
    old = ExportReport.read(folder)
    lines: list[str] = []
    report = export_checkpoint(run_ckpt, folder, ExportConfig(data_root=str(tiny_root), exporter="torchscript",
                                                              eval_count=4, build_engines=False), log=lines.append)
    assert sorted(p.name for p in folder.iterdir()) == sorted([*report.files, USER_FILE])
    gone = set(old.files) - set(report.files)
    assert {"model.fp16.onnx", "model.int8-ort-cpu.onnx", "model.int8-tensorrt.onnx"} <= gone
    said = next(line for line in lines if "held an earlier export" in line)  # the log says what was removed
    assert all(name in said for name in gone) and USER_FILE not in said


@pytest.mark.parametrize("stop", [KeyboardInterrupt, DistillError("fp16 failed")])
def test_an_interrupted_or_failed_re_export_puts_the_earlier_export_back(export_dir: Path, run_ckpt: Path,
                                                                       tiny_root: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture,
                                                                       monkeypatch: pytest.MonkeyPatch, stop) -> None:
    """Ctrl-C (or a failure) once model.fp32.onnx is rewritten: the old export.json must not describe the new
    file (bench and report would trust it), and the earlier export must not be lost either: its files come back,
    byte for byte, and the new ones of the same names go; the message says that a rerun starts over."""
    folder = _used_folder(export_dir, tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def stopped(self, reference) -> None:
        assert not ExportReport.exists_in(folder)  # while the new export runs, no record of other files
        raise stop

    monkeypatch.setattr(Exporter, "fp16", stopped)
    rc = main(["export", str(run_ckpt), "--out", str(folder), "--data", str(tiny_root), "--precision", "fp32,fp16",
               "--eval-count", "4", "--exporter", "torchscript", "--no-build-engine"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    if stop is KeyboardInterrupt:
        assert rc == 130 and "from the start" in err and "resume" not in err, err
    else:
        assert rc == 1 and err == "error: fp16 failed", err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no hidden folder left either
    bench_model(folder, warmup=0, iters=1)  # export.json and its files agree again


def test_an_export_refused_for_its_inputs_leaves_the_old_export_as_it_was(export_dir: Path, run_ckpt: Path,
                                                                          tiny_root: Path, tmp_path: Path) -> None:
    folder = _used_folder(export_dir, tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(DistillError, match="foggy"):
        export_checkpoint(run_ckpt, folder, ExportConfig(data_root=str(tiny_root), eval_domains=("clean", "foggy"),
                                                         exporter="torchscript"), log=lambda s: None)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_bench_checks_the_files_export_json_lists(export_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "exp"
    shutil.copytree(export_dir, folder)
    shutil.copyfile(folder / "model.fp32.onnx", folder / "model.fp16.onnx")  # another model under a listed name
    with pytest.raises(DistillError, match=r"model\.fp16\.onnx: not the file .*export\.json describes .*sha256"):
        bench_model(folder, warmup=0, iters=1)
    (folder / "model.fp16.onnx").unlink()
    with pytest.raises(DistillError, match=r"model\.fp16\.onnx: listed in .*export\.json but missing"):
        bench_model(folder, warmup=0, iters=1)


def test_restore_puts_back_a_listed_file_whose_folder_went(tmp_path: Path) -> None:
    """Review 3: a record naming `sub/a.onnx` (an older or hand-edited export.json) and its folder gone by the
    time of the failure: restore made no parent folder, stopped halfway with a raw error, and left export.json
    in the backup, which the next export then deleted."""
    import json

    from distill.export.out_dir import OutputFolder

    folder = tmp_path / "exp"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.onnx").write_bytes(b"old model")
    (folder / "export.json").write_text(json.dumps({"files": ["sub/a.onnx", "export.json"]}))
    out = OutputFolder(folder)
    said: list[str] = []
    assert out.clear_previous(said.append) == ["export.json", "sub/a.onnx"]
    (folder / "sub").rmdir()  # the new export left no such folder
    out.restore()
    assert (folder / "sub" / "a.onnx").read_bytes() == b"old model" and (folder / "export.json").is_file()
    assert [p.name for p in folder.iterdir() if p.name.startswith(".previous-export-")] == []


def test_checkpoint_folder_is_set_aside_only_when_it_is_an_exports(tmp_path: Path) -> None:
    """checkpoint/ (``--classes``' re-targeted student) goes with the earlier export when that export re-targeted
    (config.classes); a failure puts it back whole and takes this export's away. Otherwise it is a folder of the
    user's: left alone, and an export that would write one (``replaces``) is refused before it writes anything
    (review 25 L2: it was set aside, and deleted once the export succeeded)."""
    import json

    from distill.export.out_dir import OutputFolder

    def folder(name: str, classes: str | None) -> Path:
        f = tmp_path / name
        (f / "checkpoint").mkdir(parents=True)
        (f / "checkpoint" / "student.json").write_text("old")
        (f / "model.fp32.onnx").write_bytes(b"old model")
        (f / "export.json").write_text(json.dumps({"files": ["model.fp32.onnx", "export.json"],
                                                   "config": {"classes": classes}}))
        return f

    plain = OutputFolder(folder("plain", None))  # an export that re-targeted nothing, and a re-export that does not
    assert plain.clear_previous(lambda s: None) == ["export.json", "model.fp32.onnx"]
    plain.commit()
    assert (plain.path / "checkpoint" / "student.json").read_text() == "old"

    for replaces in ([], ["checkpoint"]):  # re-exported with and without --classes
        out = OutputFolder(folder(f"retargeted{len(replaces)}", "c.txt"))
        said: list[str] = []
        assert "checkpoint" in out.clear_previous(said.append, replaces=replaces) and "checkpoint/" in said[0]
        assert not (out.path / "checkpoint").exists()
        (out.path / "checkpoint").mkdir()  # the new export's student
        (out.path / "checkpoint" / "student.json").write_text("new")
        out.restore()
        assert (out.path / "checkpoint" / "student.json").read_text() == "old"
        assert sorted(p.name for p in out.path.iterdir()) == ["checkpoint", "export.json", "model.fp32.onnx"]

    bare = tmp_path / "bare"  # no earlier export, the user's checkpoint/ there
    (bare / "checkpoint").mkdir(parents=True)
    (bare / "checkpoint" / "student.json").write_text("mine")
    for f in (bare, folder("now", None)):  # and an earlier export that did not write it
        mine = (f / "checkpoint" / "student.json").read_text()
        before = sorted(p.name for p in f.iterdir())
        for refuse in (lambda out: out.check_writes(["checkpoint"]),
                       lambda out: out.clear_previous(lambda s: None, replaces=["checkpoint"])):
            out = OutputFolder(f)
            with pytest.raises(DistillError) as e:
                refuse(out)
            assert str(e.value) == (f"{f / 'checkpoint'}: --classes writes the re-targeted student into this folder, "
                                    "and no export.json here says an earlier export wrote it: move it away, or "
                                    "choose another --out")
            out.restore()
            out.commit()
            assert sorted(p.name for p in f.iterdir()) == before
            assert (f / "checkpoint" / "student.json").read_text() == mine


def test_a_failed_first_retargeting_export_leaves_no_checkpoint_its_retry_refuses(tmp_path: Path) -> None:
    """Review 25b M1: with no earlier export there is no backup, and restore() returned before removing the
    checkpoint/ this export wrote (``replaces``); the retry refused it as the user's."""
    from distill.export.out_dir import OutputFolder

    folder = tmp_path / "exp"
    out = OutputFolder(folder)
    out.make()
    assert out.clear_previous(lambda s: None, replaces=["checkpoint"]) == []
    (folder / "checkpoint").mkdir()
    (folder / "checkpoint" / "student.json").write_text("new")
    (folder / "model.fp32.onnx").write_bytes(b"half-written")
    out.restore()
    out.undo()
    assert not (folder / "checkpoint").exists()
    OutputFolder(folder).check_writes(["checkpoint"])  # the retry goes ahead


def test_a_checkpoint_a_killed_export_moved_in_is_told_from_the_users(tmp_path: Path) -> None:
    """place() marks the folder with the source checkpoint before moving it in; a kill before export.json lists it
    leaves it marked. The next export into the folder removes it, saying whose it was: one of the same checkpoint,
    of another checkpoint (review 1 L2: it was refused as "another checkpoint" when the same path's weights had
    changed), or one that writes no checkpoint/ (M3: it stayed, unlisted, beside that export's export.json);
    commit() takes the marker away once export.json lists the folder."""
    import json

    from distill.export.out_dir import OutputFolder

    folder, scratch = tmp_path / "exp", tmp_path / "work" / "checkpoint"

    def student() -> Path:
        scratch.mkdir(parents=True)
        (scratch / "student.json").write_text("new")
        return scratch

    source = {"checkpoint": "/runs/a/best", "checkpoint_sha256": "aaa"}

    def killed_export() -> None:
        killed = OutputFolder(folder)
        killed.make()
        killed.source = source
        killed.clear_previous(lambda s: None, replaces=["checkpoint"])
        killed.place(student(), "checkpoint")  # killed here: no export.json, no restore()
        assert json.loads((folder / "checkpoint" / ".distill-export.json").read_text())["checkpoint_sha256"] == "aaa"

    for other_source, replaces in (({"checkpoint": "/runs/b/best", "checkpoint_sha256": "bbb"}, ["checkpoint"]),
                                   (dict(source), [])):
        killed_export()
        other = OutputFolder(folder)
        other.source = other_source
        said: list[str] = []
        other.check_writes(replaces)
        assert other.clear_previous(said.append, replaces=replaces) == []
        assert not (folder / "checkpoint").exists(), (other_source, replaces)
        assert said == [f"{folder / 'checkpoint'}: the re-targeted student a killed export (of /runs/a/best) moved in "
                        "before writing export.json, which lists it nowhere; removed"]
    killed_export()
    retry = OutputFolder(folder)
    retry.source = dict(source)
    said: list[str] = []
    assert retry.clear_previous(said.append, replaces=["checkpoint"]) == []
    assert not (folder / "checkpoint").exists() and "removed" in said[0], said
    retry.place(student(), "checkpoint")
    (folder / "export.json").write_text(json.dumps({"files": ["export.json"], "config": {"classes": "c.txt"}}))
    retry.commit()
    assert sorted(p.name for p in (folder / "checkpoint").iterdir()) == ["student.json"]
    (folder / "checkpoint" / ".distill-export.json").write_text(json.dumps({"checkpoint_sha256": "aaa"}))
    (folder / "export.json").unlink()  # a marker distill did not write is not one: the folder is the user's
    with pytest.raises(DistillError, match="no export.json here says an earlier export wrote it"):
        retry.check_writes(["checkpoint"])


@pytest.mark.parametrize("into", ["checkpoint", "run"])
def test_an_export_into_a_checkpoint_or_run_folder_is_refused(run_ckpt: Path, tiny_root: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture, into: str) -> None:
    """QA session 26 F7: `distill export RUN/checkpoints/best --out RUN/checkpoints/best` (or `--out RUN`) wrote the
    ONNX files among the checkpoint's, and `distill bench` of the checkpoint then timed them instead of it."""
    run = tmp_path / "run"
    shutil.copytree(run_ckpt.parents[1], run)  # a copy: the session's run must stay as it is
    checkpoint = run / "checkpoints" / "best"
    out = checkpoint if into == "checkpoint" else run
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    rc = main(["export", str(checkpoint), "--out", str(out), "--data", str(tiny_root), "--precision", "fp32",
               "--eval-count", "4", "--exporter", "torchscript", "--no-build-engine"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    what = "a checkpoint folder (student.json)" if into == "checkpoint" else "a training run's folder"
    assert err[0].startswith(f"error: {out}: is {what}") and "e.g. exports/run" in err[0], err
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before  # nothing written


def test_bench_of_a_folder_holding_a_checkpoint_and_an_export_asks_which(export_dir: Path, run_ckpt: Path,
                                                                         tmp_path: Path) -> None:
    """Such a folder (written before the refusal above) was timed as the export, silently: now --runtime picks."""
    folder = tmp_path / "both"
    shutil.copytree(run_ckpt, folder)
    report = ExportReport.read(export_dir)
    shutil.copy(export_dir / "export.json", folder)
    for m in report.models:
        shutil.copy(export_dir / m.file, folder)
    with pytest.raises(DistillError, match=r"holds both a checkpoint \(student.json\) and an export \(export.json\): "
                                           r"pass runtime=torch .* or runtime=ort-cpu"):  # from Python: keywords
        bench_model(folder, warmup=0, iters=1)
    from distill.bench.run import resolve_models

    assert resolve_models(folder, "torch") == [(folder, "torch")]
    assert resolve_models(folder, "ort-cpu") == [(folder / m.file, "ort-cpu") for m in report.models]
    with pytest.raises(DistillError, match="runtime=torch cannot run an export folder's ONNX files"):
        resolve_models(export_dir, "torch")  # an export alone: as before
